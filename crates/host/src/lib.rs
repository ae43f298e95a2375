//! banger-host: everything that looks at or changes the host. Today:
//! KVM detection and accelerator choice, finding host tools, and the
//! doctor checks built on those facts; the Firecracker request plan.

pub mod accel;
pub mod agent;
pub mod caller;
pub mod console;
pub mod disks;
pub mod doctor;
pub mod durable;
pub mod firecracker;
pub mod image;
pub mod log_tail;
pub mod net;
pub mod ports;
pub mod process;
pub mod qemu;
pub mod sandbox;
pub mod shares;
pub mod ssh;
pub mod stats;
pub mod tools;
pub mod vmm_select;
