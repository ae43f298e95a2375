//! Per-VM disks. `work`: the `/root` disk, cloned from the image's work
//! seed or made fresh.

pub mod work;
