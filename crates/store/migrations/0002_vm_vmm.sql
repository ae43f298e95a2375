-- The VMM each VM runs under (`qemu` or `firecracker`), fixed at create.
ALTER TABLE vms ADD COLUMN vmm TEXT NOT NULL DEFAULT 'qemu';
