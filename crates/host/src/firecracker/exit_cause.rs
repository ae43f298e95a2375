//! Why a Firecracker process ended, in its own words and then in one
//! readable line. Firecracker v1.16.1 says it three ways: a start from
//! `--config-file` that fails ends the process with an `Error: ...` line
//! of its own (no log level: `main`'s error in Rust's debug form), the
//! logger writes `[ID:THREAD:ERROR:...]` lines, and a thread that panics
//! writes `thread '...' panicked at ...`. The last of these, in that
//! order of preference, is the cause; known causes (a busy or missing
//! TAP, no KVM, a kernel it cannot load, a drive it cannot open) are
//! named with a hint.

/// A cause, readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCause {
    /// One line: what went wrong.
    pub summary: String,
    /// What to do, when the cause is known.
    pub hint: Option<String>,
}

impl std::fmt::Display for ExitCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.hint {
            Some(hint) => write!(f, "{} ({hint})", self.summary),
            None => write!(f, "{}", self.summary),
        }
    }
}

/// How strongly a line says why the process ended.
fn rank(line: &str) -> Option<u8> {
    if line.starts_with("Error: ") {
        Some(3)
    } else if line.contains(":ERROR") && line.contains('[') {
        Some(2)
    } else if line.contains("panicked") {
        Some(1)
    } else {
        None
    }
}

/// Keeps the line that best says why the process ended, as lines come.
#[derive(Debug, Default, Clone)]
pub struct CauseFinder {
    best: Option<(u8, String)>,
}

impl CauseFinder {
    pub fn line(&mut self, line: &str) {
        if let Some(rank) = rank(line) {
            if self.best.as_ref().is_none_or(|(best, _)| rank >= *best) {
                self.best = Some((rank, line.chars().take(2000).collect()));
            }
        }
    }

    /// The cause, readable, if a line gave one.
    pub fn cause(&self) -> Option<ExitCause> {
        self.best.as_ref().map(|(_, line)| explain(line))
    }
}

/// `Os { code: N, kind: K, message: "M" }` in a debug-printed error: the
/// message, and the first quoted string after it (what it was about).
fn os_error(text: &str) -> Option<(String, Option<String>)> {
    let at = text.find("Os { code: ")?;
    let rest = &text[at..];
    let message = rest
        .split("message: \"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    let after = &rest[rest.find('}')? + 1..];
    let about = after
        .strip_prefix(", \"")
        .and_then(|a| a.split('"').next())
        .map(str::to_string);
    Some((message, about))
}

/// The first quoted string in `text`.
fn quoted(text: &str) -> Option<String> {
    text.split('"').nth(1).map(str::to_string)
}

/// A cause line made readable.
pub fn explain(line: &str) -> ExitCause {
    let raw = line.strip_prefix("Error: ").unwrap_or(line).trim();
    let known = |summary: String, hint: &str| ExitCause {
        summary,
        hint: Some(hint.to_string()),
    };
    if raw.contains("TapOpen(") {
        let (message, tap) = os_error(raw).unwrap_or_default();
        let tap = tap.or_else(|| quoted(raw)).unwrap_or_else(|| "?".into());
        if raw.contains("ResourceBusy") || raw.contains("code: 16,") {
            return known(
                format!("tap {tap} is busy: another process holds it"),
                "a vmm that has not fully exited may still hold it; see `banger verify` and stop that process",
            );
        }
        return known(
            format!("cannot open tap {tap}: {}", message.to_lowercase()),
            "check the tap device exists (`ip link show`)",
        );
    }
    if raw.contains("/dev/kvm") || raw.contains("Kvm(") || raw.contains("KvmContext") {
        let detail = os_error(raw)
            .map(|(m, _)| m.to_lowercase())
            .unwrap_or_default();
        return known(
            format!("kvm is not usable: {detail}")
                .trim_end_matches(": ")
                .to_string(),
            "firecracker needs a usable /dev/kvm; run `banger doctor`, or use vmm = \"qemu\"",
        );
    }
    if raw.contains("KernelLoader")
        || raw.contains("Kernel Loader")
        || raw.contains("InvalidElfMagicNumber")
    {
        return known(
            "firecracker cannot load the kernel".into(),
            "firecracker boots an uncompressed ELF vmlinux; check the image's vmlinux_path",
        );
    }
    if raw.contains("BackingFile(") || raw.contains("CreateBlockDevice(") {
        let (message, path) = os_error(raw).unwrap_or_default();
        let path = path.or_else(|| quoted(raw)).unwrap_or_else(|| "?".into());
        return known(
            format!("cannot open drive {path}: {}", message.to_lowercase()),
            "check the drive's path and its permissions",
        );
    }
    ExitCause {
        summary: raw.chars().take(400).collect(),
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As v1.16.1 ended a config-file start on a busy TAP (copied as it
    /// came from a real binary).
    const BUSY_TAP: &str = r#"Error: RunWithApi(BuildFromJson(ParseFromJson(NetDevice(CreateNetworkDevice(TapOpen(IfreqExecuteError(Os { code: 16, kind: ResourceBusy, message: "Device or resource busy" }, "bgfc-check0"))))))))"#;

    #[test]
    fn a_busy_tap_is_named_with_a_hint() {
        let mut finder = CauseFinder::default();
        for line in [
            "2026-11-30T10:00:00.000000000 [vm1:main:INFO:src/firecracker/src/main.rs:100] Running Firecracker v1.16.1",
            BUSY_TAP,
        ] {
            finder.line(line);
        }
        let cause = finder.cause().unwrap();
        assert_eq!(
            cause.summary,
            "tap bgfc-check0 is busy: another process holds it"
        );
        assert!(cause.hint.unwrap().contains("banger verify"));
    }

    #[test]
    fn the_error_line_wins_over_log_errors_and_panics() {
        let mut finder = CauseFinder::default();
        finder.line("thread 'fc_vcpu 0' panicked at src/vmm/src/vstate/vcpu.rs:1: boom");
        finder.line("2026-11-30T10:00:00.000000000 [vm1:main:ERROR:src/vmm/src/lib.rs:1] Failed to write metrics");
        assert!(finder.cause().unwrap().summary.contains(":ERROR"));
        finder.line(r#"Error: RunWithApi(BuildFromJson(ParseFromJson(BlockDevice(CreateBlockDevice(BackingFile(Os { code: 2, kind: NotFound, message: "No such file or directory" }, "/rootfs.disk"))))))"#);
        assert_eq!(
            finder.cause().unwrap().summary,
            "cannot open drive /rootfs.disk: no such file or directory"
        );
        // A later log line does not take over from the process's error.
        finder.line("2026-11-30T10:00:01.000000000 [vm1:main:ERROR:src/vmm/src/lib.rs:2] other");
        assert!(finder
            .cause()
            .unwrap()
            .summary
            .starts_with("cannot open drive"));
    }

    #[test]
    fn unknown_causes_are_shown_as_they_came() {
        let cause = explain("Error: RunWithApi(Something(New))");
        assert_eq!(
            (cause.summary.as_str(), cause.hint),
            ("RunWithApi(Something(New))", None)
        );
        let kvm = explain(
            r#"Error: RunWithApi(BuildFromJson(StartMicrovm(Kvm(OpenDevice(Os { code: 2, kind: NotFound, message: "No such file or directory" })))))"#,
        );
        assert_eq!(kvm.summary, "kvm is not usable: no such file or directory");
    }
}
