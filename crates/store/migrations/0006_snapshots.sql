-- Snapshots: a VM's saved machine and disks, new VMs start from. The
-- image it needs stays while it exists; the rest of the record is JSON.
CREATE TABLE snapshots (
    id       TEXT PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    record   TEXT NOT NULL
);
