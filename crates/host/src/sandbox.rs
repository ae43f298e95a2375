//! Starting a helper that must not have the daemon's reach: set up in the
//! child between fork and exec, with only async-signal-safe calls, so
//! nothing runs in the helper before it is confined. It starts in a
//! directory held open (its path is not looked up again), with
//! no_new_privs (set-id programs gain nothing), and under the seccomp
//! programs given (which set no_new_privs themselves). The user it runs
//! as is the `Command`'s (`uid`/`gid`, which also drops root's groups).

use std::os::fd::RawFd;

use seccompiler::BpfProgram;

/// How a helper is confined.
#[derive(Debug, Default)]
pub struct Confinement {
    /// Start in this open directory.
    pub dir: Option<RawFd>,
    /// System call filters, installed in order.
    pub programs: Vec<BpfProgram>,
}

/// Makes `command` start confined.
pub fn confine(command: &mut std::process::Command, confinement: Confinement) {
    use std::os::unix::process::CommandExt;
    let Confinement { dir, programs } = confinement;
    let run = move || -> std::io::Result<()> {
        if let Some(fd) = dir {
            nix::unistd::fchdir(fd)?;
        }
        nix::sys::prctl::set_no_new_privs()?;
        for program in &programs {
            seccompiler::apply_filter(program)
                .map_err(|_| std::io::Error::from_raw_os_error(nix::libc::EPERM))?;
        }
        Ok(())
    };
    // SAFETY: `run` executes in the forked child before exec and only
    // makes async-signal-safe system calls (fchdir, prctl, seccomp) over
    // values made before the fork; it allocates nothing on success and
    // takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(run);
    }
}
