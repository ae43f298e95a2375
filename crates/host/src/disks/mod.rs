//! Per-VM disks, each a capability of the VM lifecycle. `system`: the
//! overlay's upper layer with the guest config (`/dev/vdb`); `work`: the
//! `/root` disk, cloned from the image's work seed or made fresh
//! (`/dev/vdc`). Their order here is their device order. Both are copied
//! into a snapshot while its VM is paused, and a VM from a snapshot
//! starts with copies of those (`copy`: sparse, reflinked where the
//! filesystem can).

pub mod copy;
pub mod system;
pub mod work;
