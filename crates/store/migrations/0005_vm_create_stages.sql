-- Stage timings of the VM's create, kept apart from `stages` (the last
-- create or start), which every start overwrites.
ALTER TABLE vms ADD COLUMN create_stages TEXT NOT NULL DEFAULT '';
