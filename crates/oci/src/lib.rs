//! OCI images from registries, made into root filesystem trees.
//!
//! - `reference`: image references as users write them (Docker's
//!   short-name rules), the default image name, plain-HTTP registries;
//! - `auth`: credentials from the usual `auth.json` / `config.json` files;
//! - `registry`: manifests (bounded, digest-checked, one platform picked
//!   from an index) and the image config, through `oci-client`;
//! - `cache`: verified blobs by digest under the state directory, shared
//!   between images, pinned while a pull uses them, pruned when no image
//!   references them;
//! - `layer`: one layer applied to a tree: whiteouts, opaque directories,
//!   owners, modes, xattrs, hard links; nothing written outside the tree;
//! - `pull`: the whole pull, from a reference to a tree and its config.

pub mod auth;
pub mod cache;
pub mod error;
pub mod layer;
pub mod pull;
pub mod reference;
pub mod registry;

pub use error::OciError;
pub use pull::{pull, PullOptions, Pulled};
pub use reference::ImageRef;
