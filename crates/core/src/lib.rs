//! banger-core: the domain (VMs, images, specs, states and their allowed
//! transitions), the lifecycle flows, and the traits those flows act
//! through (`Store`, `ImageResolver`, `Clock`). No HTTP, no SQL, no
//! processes: those live in `bangerd`, `banger-store` and `banger-host`.

pub mod addr;
pub mod agent;
pub mod capability;
pub mod catalog;
pub mod clock;
pub mod doctor;
pub mod events;
pub mod image;
pub mod image_dirs;
pub mod image_maker;
pub mod images;
pub mod locks;
pub mod memory_store;
pub mod mounts;
pub mod names;
pub mod operation;
pub mod ports;
pub mod progress;
pub mod resolve;
pub mod service;
pub mod size;
pub mod snapshot;
pub mod spec;
pub mod store;
pub mod tree_removal;
pub mod vm;
pub mod vmm;

pub use service::{Banger, ServiceError, Settings};
