-- Shared folders of a VM: a JSON array of {host_dir, guest_dir,
-- read_only, uid, gid}; served while the VM runs.
ALTER TABLE vms ADD COLUMN mounts TEXT NOT NULL DEFAULT '[]';
