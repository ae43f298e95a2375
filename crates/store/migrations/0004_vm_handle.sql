-- The running VMM of a VM, so a restarted daemon finds it again: its pid,
-- the pid's start time (so a recycled pid is not mistaken for it), and its
-- control and agent sockets. NULL while no VMM runs.
ALTER TABLE vms ADD COLUMN vmm_pid INTEGER;
ALTER TABLE vms ADD COLUMN vmm_start_ticks INTEGER;
ALTER TABLE vms ADD COLUMN control_socket TEXT;
ALTER TABLE vms ADD COLUMN agent_socket TEXT;
