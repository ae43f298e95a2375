//! banger-guest: the guest side of banger, one static binary.
//!
//! - `init` (`banger-init`): PID 1 of the initramfs. Loads the modules the
//!   initramfs lists, mounts the image's rootfs read-only under an overlay
//!   whose upper layer is the VM's system disk, mounts the work disk on
//!   `/root`, configures `eth0`, and switches root to the image's init.
//! - `minit`: banger's small init, PID 1 of a userland without an init
//!   system (mounts, reaping, power-off).
//! - `early`: the services banger-init starts right after switching root
//!   (the agent, sshd), which their systemd units adopt by pid file.
//! - `agent` (`banger-agent`): started by banger-init (or its systemd
//!   unit in images that list no early services); answers the host over vsock or a virtio-serial port
//!   (`banger_proto::agent`): hello with boot timings, exec with streamed
//!   output, signals, shutdown, and a restored guest's new identity
//!   (`identity`).
//! - `port`: the agent's virtio-serial port, open for the agent's life.

pub mod agent;
pub mod channel;
pub mod cmdline;
pub mod copy;
pub mod early;
pub mod identity;
pub mod init;
pub mod minit;
pub mod netconfig;
pub mod port;
pub mod terminal;
pub mod user;
