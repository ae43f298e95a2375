-- Images keep their ELF kernel (when made) and the manifest.json they were
-- made with (sizes, digests, kernel version, origin) as JSON.
ALTER TABLE images ADD COLUMN vmlinux_path TEXT;
ALTER TABLE images ADD COLUMN manifest TEXT;
