//! Making and checking image artifacts on the host: kernels (format,
//! vmlinux extraction), ext4 images, the guest binary's fitness, the
//! initramfs, the Debian build pipeline, a userland made bootable
//! (`userland`, `lean`), a VM's disks
//! made a layered image (`promote`), digests, bundles and downloads. The image flows in
//! `banger_core::images` call these through the `ImageMaker` trait.

pub mod build;
pub mod bundle;
pub mod digest;
pub mod download;
pub mod ext4;
pub mod guest_binary;
pub mod initramfs;
pub mod kernel;
pub mod lean;
pub mod maker;
pub mod modules;
pub mod promote;
pub mod userland;
