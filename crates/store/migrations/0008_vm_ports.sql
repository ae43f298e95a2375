-- Published ports of a VM: a JSON array of {host_ip, host_port,
-- guest_port, protocol}; forwarded while the VM runs.
ALTER TABLE vms ADD COLUMN ports TEXT NOT NULL DEFAULT '[]';
