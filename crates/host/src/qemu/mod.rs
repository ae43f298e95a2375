//! The QEMU VMM (`-M microvm`): `plan` builds the command line as a pure
//! function; the driver that runs it comes with the boot flow.

pub mod plan;
