-- A promoted image stands on its parent: its own layer over the parent's
-- rootfs and layers. `layers` is a JSON array of paths, bottom first;
-- `parent_id` keeps the parent from going while a child needs it.
ALTER TABLE images ADD COLUMN parent_id TEXT REFERENCES images(id) ON DELETE RESTRICT;
ALTER TABLE images ADD COLUMN layers TEXT NOT NULL DEFAULT '[]';
