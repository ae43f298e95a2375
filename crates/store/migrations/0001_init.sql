-- banger state: images and VMs. Names, guest addresses and vsock CIDs are
-- unique here as well as in code.
CREATE TABLE images (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    source         TEXT NOT NULL,
    kernel_path    TEXT NOT NULL,
    initrd_path    TEXT,
    rootfs_path    TEXT NOT NULL,
    work_seed_path TEXT,
    created_at_ms  INTEGER NOT NULL
);

CREATE TABLE vms (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    image_id          TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    image_name        TEXT NOT NULL,
    state             TEXT NOT NULL,
    vcpus             INTEGER NOT NULL,
    memory_mib        INTEGER NOT NULL,
    work_disk_bytes   INTEGER NOT NULL,
    system_disk_bytes INTEGER NOT NULL,
    nat               INTEGER NOT NULL,
    guest_ip          TEXT NOT NULL UNIQUE,
    vsock_cid         INTEGER NOT NULL UNIQUE,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    last_error        TEXT,
    stages            TEXT NOT NULL DEFAULT ''
);

CREATE INDEX vms_image_id ON vms(image_id);
