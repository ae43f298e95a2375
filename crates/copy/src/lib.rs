//! `vm cp` moves files as a tar stream whose entries all sit under one
//! top-level name: the source's own name. The side that reads files packs
//! (`pack`), the side that writes unpacks (`unpack`) after deciding where
//! the top-level name lands (`Landing`), as `docker cp` does: into an
//! existing directory, or as the destination's name in its parent.
//!
//! The same code runs in the guest agent (copies in) and in the CLI as
//! its caller (copies out). An archive from the other side is not trusted:
//! every entry must stay under the top-level name, no entry is written
//! through a symbolic link, hard links and devices are refused.

mod error;
mod landing;
mod pack;
mod unpack;

pub use error::CopyError;
pub use landing::Landing;
pub use pack::{pack, top_name};
pub use unpack::{unpack, Owner, UnpackOptions};
