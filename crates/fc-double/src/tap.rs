//! The TAP a double's machine holds, as Firecracker's does: opened at
//! start (`/dev/net/tun`, `TUNSETIFF`), so a TAP another process still
//! holds is busy here too (`EBUSY`), and held until the process's last
//! thread has gone. A guest that is slow to leave (`slow-to-leave`) lets
//! the main thread exit first while a thread keeps the TAP a moment, as a
//! vCPU thread still inside the kernel does.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: nix::libc::c_ulong = 0x4004_54ca;
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;

/// Attaches to TAP `name` through `tun` (`/dev/net/tun`, or the jail's).
pub fn open(tun: &std::path::Path, name: &str) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tun)?;
    // struct ifreq: the name (16 bytes, NUL-ended), then the flags.
    let mut request = [0u8; 40];
    let bytes = name.as_bytes();
    if bytes.len() >= 16 {
        return Err(std::io::Error::other("a tap name has at most 15 bytes"));
    }
    request[..bytes.len()].copy_from_slice(bytes);
    request[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    // SAFETY: `request` is a live 40-byte buffer, as large as the kernel's
    // `struct ifreq`, and TUNSETIFF reads and writes only within it.
    #[allow(unsafe_code)]
    let done = unsafe { nix::libc::ioctl(file.as_raw_fd(), TUNSETIFF, request.as_mut_ptr()) };
    if done < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file.into())
}

/// Ends the process the way a slow vCPU thread does: the main thread
/// exits at once, another keeps `held` for `linger`, then the process
/// ends.
pub fn leave_slowly(held: Vec<OwnedFd>, linger: Duration) -> ! {
    std::thread::spawn(move || {
        std::thread::sleep(linger);
        drop(held);
        std::process::exit(0);
    });
    // The raw exit(2) ends only the calling (main) thread, without the
    // unwinding pthread_exit would force through Rust frames.
    // SAFETY: nothing of this thread runs after the call, and its stack is
    // not used by the thread above, which ends the process.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::syscall(nix::libc::SYS_exit, 0);
    }
    unreachable!("exit(2) returned")
}
