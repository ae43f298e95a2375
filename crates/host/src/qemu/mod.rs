//! The QEMU VMM (`-M microvm`): `plan` builds the command line as a pure
//! function, `qmp` speaks QEMU's control protocol, `driver` implements
//! the `Vmm` trait over them.

pub mod driver;
pub mod plan;
pub mod qmp;
