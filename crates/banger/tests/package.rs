//! The Debian package as an admin meets it. `scripts/package` builds it
//! from this test build's own `banger` and `bangerd` (dev profile, so no
//! release build; `BANGER_PACKAGE_BIN_DIR`) and the guest binary of
//! `scripts/build-guest` (`BANGER_GUEST_BINARY`, as `scripts/test` sets
//! it). Its contents are checked, then it is installed on this machine
//! with `dpkg -i`: the group, `/usr/bin/banger`, the completions, a man
//! page, the unit (`systemd-analyze verify`, which needs no running
//! systemd), and a bangerd started from `/usr/bin` under a temporary root
//! that finds `/usr/lib/banger/banger-guest`. `dpkg -r` keeps the state
//! and the conffile, `dpkg --purge` removes them, and afterwards no file
//! the package had is left and nothing else under /etc, /usr and /var/lib
//! changed.
//!
//! Needs root, dpkg and the package's dependencies (scripts/install-deps);
//! without them it says why, and fails under CI=true. What it finds at
//! the package's paths before (an earlier bangerd's /var/lib/banger, a
//! hand-copied /usr/bin/banger) is moved aside and put back at the end.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Says why the test cannot run: a failure under CI, a note otherwise.
fn unavailable(why: &str) {
    banger_testkit::require(false, &format!("package test cannot run: {why}"));
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn guest_binary() -> PathBuf {
    std::env::var_os("BANGER_GUEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace().join("target/guest/x86_64-unknown-linux-gnu/release/banger-guest")
        })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// What keeps the test from running here, if anything.
fn missing_prerequisite() -> Option<String> {
    if run("id", &["-u"]).stdout != b"0\n" {
        return Some("not root (dpkg -i needs it)".into());
    }
    for tool in [
        "dpkg",
        "dpkg-deb",
        "systemd-analyze",
        "man",
        "getent",
        "groupdel",
        "readelf",
    ] {
        if !on_path(tool) {
            return Some(format!(
                "{tool} not found (apt-get install dpkg systemd man-db passwd binutils)"
            ));
        }
    }
    let bangerd = Path::new(env!("CARGO_BIN_EXE_banger")).with_file_name("bangerd");
    if !bangerd.exists() {
        return Some(format!(
            "no bangerd at {}: run `cargo test --workspace`",
            bangerd.display()
        ));
    }
    if !guest_binary().is_file() {
        return Some(format!(
            "no guest binary at {}: run scripts/build-guest or set BANGER_GUEST_BINARY",
            guest_binary().display()
        ));
    }
    let status = run("dpkg-query", &["-W", "-f=${Status}", "banger"]);
    if status.status.success() {
        return Some(format!(
            "the banger package is already on this machine ({}): the test installs and purges its own; dpkg --purge banger first",
            String::from_utf8_lossy(&status.stdout)
        ));
    }
    None
}

/// Paths under these roots with, for all but directories, their kind,
/// size, mode and modification time: what the package may touch.
fn snapshot() -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, into: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if SKIPPED.iter().any(|s| path == Path::new(s)) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                into.insert(path.clone(), "dir".into());
                walk(&path, into);
            } else {
                let kind = if meta.is_symlink() {
                    format!("link {:?}", std::fs::read_link(&path).ok())
                } else {
                    "file".into()
                };
                let seen = format!(
                    "{kind} {} {:o} {}.{}",
                    meta.len(),
                    meta.mode(),
                    meta.mtime(),
                    meta.mtime_nsec()
                );
                into.insert(path, seen);
            }
        }
    }
    let mut seen = BTreeMap::new();
    for root in ["/etc", "/usr/bin", "/usr/lib", "/usr/share", "/var/lib"] {
        walk(Path::new(root), &mut seen);
    }
    seen
}

/// Left out of the snapshot: dpkg's own records (checked through
/// dpkg-query) and the group files (the group is checked by name).
const SKIPPED: &[&str] = &[
    "/var/lib/dpkg",
    "/etc/group",
    "/etc/group-",
    "/etc/gshadow",
    "/etc/gshadow-",
];

/// Paths of the package that were on the machine before it; moved aside
/// for the test and put back when it ends, however it ends.
struct Aside(Vec<(PathBuf, PathBuf)>);

impl Aside {
    fn take(paths: &[PathBuf]) -> Aside {
        let mut moved = Vec::new();
        for path in paths {
            if std::fs::symlink_metadata(path).is_ok() {
                let to = PathBuf::from(format!(
                    "{}.before-package-test-{}",
                    path.display(),
                    std::process::id()
                ));
                std::fs::rename(path, &to).unwrap();
                eprintln!("moved {} aside to {}", path.display(), to.display());
                moved.push((path.clone(), to));
            }
        }
        Aside(moved)
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        for (path, to) in self.0.iter().rev() {
            if let Err(err) = std::fs::rename(to, path) {
                eprintln!(
                    "cannot put {} back from {}: {err}",
                    path.display(),
                    to.display()
                );
            }
        }
    }
}

/// Purges the package and stops the test's daemon if the test ends early.
struct Installed {
    daemon_root: PathBuf,
    done: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        // The lock names the last daemon's pid: killed only while that
        // pid is still a bangerd.
        let lock = self.daemon_root.join("var/lib/banger/bangerd.lock");
        if let Ok(pid) = std::fs::read_to_string(lock) {
            let exe = std::fs::read_link(format!("/proc/{}/exe", pid.trim()));
            if exe.is_ok_and(|exe| exe.to_string_lossy().contains("bangerd")) {
                let _ = run("kill", &[pid.trim()]);
            }
        }
        if !self.done {
            let _ = run("dpkg", &["--purge", "banger"]);
        }
    }
}

#[test]
fn the_debian_package_installs_works_and_purges_clean() {
    if let Some(why) = missing_prerequisite() {
        return unavailable(&why);
    }
    let out_dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_banger")).parent().unwrap();
    let built = Command::new(workspace().join("scripts/package"))
        .env("BANGER_PACKAGE_BIN_DIR", bin_dir)
        .env("BANGER_GUEST_BINARY", guest_binary())
        .env("BANGER_PACKAGE_OUT", out_dir.path())
        .env("BANGER_PACKAGE_COMPRESSION", "none")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "scripts/package: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_string();
    let version = env!("CARGO_PKG_VERSION");
    let arch = ok("dpkg", &["--print-architecture"]);
    assert!(
        deb.ends_with(&format!("/banger_{version}-1_{}.deb", arch.trim())),
        "{deb}"
    );

    // Contents.
    let listing = ok("dpkg-deb", &["-c", &deb]);
    let files: Vec<PathBuf> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let path = l.split_whitespace().nth(5).unwrap();
            PathBuf::from(path.trim_start_matches('.'))
        })
        .collect();
    for wanted in [
        "/usr/bin/banger",
        "/usr/bin/bangerd",
        "/usr/lib/banger/banger-guest",
        "/lib/systemd/system/bangerd.service",
        "/etc/banger/config.toml",
        "/usr/share/bash-completion/completions/banger",
        "/usr/share/zsh/vendor-completions/_banger",
        "/usr/share/fish/vendor_completions.d/banger.fish",
        "/usr/share/man/man1/banger.1.gz",
        "/usr/share/man/man1/banger-vm-create.1.gz",
        "/usr/share/man/man1/banger-completions.1.gz",
        "/usr/share/man/man8/bangerd.8.gz",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(wanted)),
            "{wanted} in {listing}"
        );
    }
    assert!(!listing.contains("banger-man.1"), "{listing}");
    let info = ok("dpkg-deb", &["-I", &deb]);
    for wanted in [
        "Package: banger",
        &format!("Version: {version}-1"),
        "qemu-system-x86",
        "nftables",
        " postinst ",
        " prerm ",
        " postrm ",
        " conffiles ",
    ] {
        assert!(info.contains(wanted), "{wanted} in {info}");
    }
    let depends = ok("dpkg-deb", &["-f", &deb, "Depends"]);
    for dep in depends.trim().split(", ") {
        let status = run("dpkg-query", &["-W", "-f=${Status}", dep]);
        if !String::from_utf8_lossy(&status.stdout).contains("install ok installed") {
            return unavailable(&format!(
                "the package's dependency {dep} is not installed: run scripts/install-deps"
            ));
        }
    }
    let extracted = tempfile::tempdir().unwrap();
    ok(
        "dpkg-deb",
        &["--control", &deb, &extracted.path().display().to_string()],
    );
    let conffiles = std::fs::read_to_string(extracted.path().join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/banger/config.toml\n");

    // Install onto this machine, after moving aside what is at its paths.
    let group_before = run("getent", &["group", "banger"]).status.success();
    let mut paths = files.clone();
    paths.extend(
        [
            "/var/lib/banger",
            "/run/banger",
            "/etc/banger",
            "/usr/lib/banger",
        ]
        .map(PathBuf::from),
    );
    let _aside = Aside::take(&paths);
    let before = snapshot();
    assert!(before.len() > 1000, "a snapshot of {} paths", before.len());
    let daemon_root = tempfile::tempdir().unwrap();
    let mut installed = Installed {
        daemon_root: daemon_root.path().to_path_buf(),
        done: false,
    };
    ok("dpkg", &["-i", &deb]);
    assert!(
        run("getent", &["group", "banger"]).status.success(),
        "postinst made no group banger"
    );
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/bangerd.service");
    assert_eq!(
        std::fs::read_link(wants).ok(),
        Some(PathBuf::from("/lib/systemd/system/bangerd.service")),
        "postinst did not enable bangerd.service"
    );
    // Stripped, as Debian installs binaries: no symbol table, no debug info.
    for binary in [
        "/usr/bin/banger",
        "/usr/bin/bangerd",
        "/usr/lib/banger/banger-guest",
    ] {
        let sections = ok("readelf", &["-S", "-W", binary]);
        assert!(
            !sections.contains(".symtab") && !sections.contains(".debug_info"),
            "{binary} is not stripped"
        );
    }
    let shown = ok("/usr/bin/banger", &["--version"]);
    assert_eq!(shown.trim(), format!("banger {version}"));
    ok(
        "bash",
        &["-n", "/usr/share/bash-completion/completions/banger"],
    );
    let complete = ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/banger && complete -p banger",
        ],
    );
    assert!(complete.contains("banger"), "{complete}");
    let page = Command::new("man")
        .args(["--pager=cat", "8", "bangerd"])
        .env("MANWIDTH", "80")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let page_text = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.status.success() && page_text.contains("--root"),
        "{page:?}"
    );
    let page = ok(
        "man",
        &[
            "--pager=cat",
            "-l",
            "/usr/share/man/man1/banger-vm-create.1.gz",
        ],
    );
    assert!(page.contains("--memory"), "{page}");
    let verify = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/bangerd.service"],
    );
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // bangerd from /usr/bin, under a temporary root with the installed
    // config (so it must parse) and no host network, finds the guest
    // binary where the package put it.
    let config = std::fs::read_to_string("/etc/banger/config.toml").unwrap();
    std::fs::create_dir_all(daemon_root.path().join("etc/banger")).unwrap();
    std::fs::write(
        daemon_root.path().join("etc/banger/config.toml"),
        format!("{config}\n[network]\nenabled = false\n"),
    )
    .unwrap();
    let root = daemon_root.path().display().to_string();
    ok("/usr/bin/banger", &["--root", &root, "daemon", "start"]);
    let doctor = run("/usr/bin/banger", &["--root", &root, "doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {doctor:?}"));
    let guest = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "guest binary")
        .unwrap_or_else(|| panic!("no guest binary check: {report}"));
    assert_eq!(guest["status"], "pass", "{guest}");
    assert_eq!(guest["detail"], "/usr/lib/banger/banger-guest", "{guest}");
    ok("/usr/bin/banger", &["--root", &root, "daemon", "stop"]);
    assert!(
        !Path::new("/run/banger").exists(),
        "the test's daemon used /run/banger"
    );

    // Remove keeps the state and the conffile; purge takes them.
    std::fs::create_dir_all("/var/lib/banger").unwrap();
    std::fs::write("/var/lib/banger/users-vm", "kept").unwrap();
    ok("dpkg", &["-r", "banger"]);
    assert!(
        Path::new("/var/lib/banger/users-vm").exists(),
        "remove took the state"
    );
    assert!(
        Path::new("/etc/banger/config.toml").exists(),
        "remove took the conffile"
    );
    assert!(
        !Path::new("/usr/bin/banger").exists(),
        "remove left /usr/bin/banger"
    );
    ok("dpkg", &["--purge", "banger"]);
    installed.done = true;
    drop(installed);
    assert!(!run("dpkg-query", &["-W", "banger"]).status.success());
    for dir in [
        "/var/lib/banger",
        "/run/banger",
        "/etc/banger",
        "/usr/lib/banger",
    ] {
        assert!(!Path::new(dir).exists(), "{dir} is left after purge");
    }
    for file in &files {
        assert!(
            std::fs::symlink_metadata(file).is_err(),
            "{} is left after purge",
            file.display()
        );
    }
    // Debian leaves system groups on purge (files may carry their id);
    // the test removes the one it made.
    assert!(run("getent", &["group", "banger"]).status.success());
    if !group_before {
        ok("groupdel", &["banger"]);
    }
    let after = snapshot();
    let changed: Vec<String> = before
        .iter()
        .filter(|(path, seen)| after.get(*path) != Some(seen))
        .map(|(path, seen)| format!("{} was {seen}, now {:?}", path.display(), after.get(path)))
        .chain(
            after
                .keys()
                .filter(|path| !before.contains_key(*path))
                .map(|path| format!("{} is new", path.display())),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "install and purge changed: {changed:#?}"
    );
}
