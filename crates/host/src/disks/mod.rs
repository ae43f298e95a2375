//! Per-VM disks, each a capability of the VM lifecycle. `system`: the
//! overlay's upper layer with the guest config (`/dev/vdb`); `work`: the
//! `/root` disk, cloned from the image's work seed or made fresh
//! (`/dev/vdc`). Their order here is their device order.

pub mod system;
pub mod work;
