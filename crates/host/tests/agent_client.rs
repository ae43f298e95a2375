//! The host's agent client against the real agent handler of
//! banger-guest, over an in-memory stream pair (what a VM's serial port
//! or vsock stream would carry).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use banger_guest::agent::{serve, AgentContext};
use banger_host::agent::client::{AgentClient, AgentError, ExecEvent, Replies};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(10);

fn context(dir: &std::path::Path, powered_off: Arc<AtomicBool>) -> AgentContext {
    AgentContext {
        boot_times: dir.join("boot-times.json"),
        power_off: Arc::new(move |_| powered_off.store(true, Ordering::SeqCst)),
        identity: banger_guest::identity::Target {
            root: dir.join("root"),
            live: false,
        },
    }
}

/// A client wired to a real agent handler.
fn pair(dir: &std::path::Path, powered_off: Arc<AtomicBool>) -> AgentClient {
    let (host, guest) = tokio::io::duplex(64 * 1024);
    let (guest_r, guest_w) = tokio::io::split(guest);
    tokio::spawn(serve(guest_r, guest_w, context(dir, powered_off)));
    let (host_r, host_w) = tokio::io::split(host);
    AgentClient::new(host_r, host_w)
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test]
async fn hello_reports_the_boot_timings_init_left() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boot-times.json"),
        r#"{"init_start_ms":800,"modules_ms":1000,"mounted_ms":1100,"switch_root_ms":1150}"#,
    )
    .unwrap();
    let client = pair(dir.path(), Arc::default());
    let hello = client.hello(WAIT).await.unwrap();
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.boot.unwrap().switch_root_ms, 1150);
    assert!(hello.uptime_ms > 0);
}

#[tokio::test]
async fn exec_streams_both_outputs_and_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let out = client
        .exec_collect(argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]), WAIT)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.code, Some(3));

    let mut replies = client.exec(argv(&["cat"]), Some(b"from stdin")).unwrap();
    let mut got = Vec::new();
    loop {
        match replies.next_event().await.unwrap() {
            ExecEvent::Stdout(bytes) => got.extend(bytes),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exit { code, .. } => {
                assert_eq!(code, Some(0));
                break;
            }
        }
    }
    assert_eq!(got, b"from stdin");

    // A command that is not there, or cannot be run, ends as in a shell:
    // the reason on stderr, 127 or 126.
    let missing = client
        .exec_collect(argv(&["/nonexistent/tool"]), WAIT)
        .await
        .unwrap();
    assert_eq!(missing.code, Some(127));
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.starts_with("cannot run /nonexistent/tool: "), "{said}");
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "echo no\n").unwrap();
    let denied = client
        .exec_collect(argv(&[plain.to_str().unwrap()]), WAIT)
        .await
        .unwrap();
    assert_eq!(
        denied.code,
        Some(126),
        "{:?}",
        String::from_utf8_lossy(&denied.stderr)
    );
}

#[tokio::test]
async fn concurrent_execs_do_not_mix_and_big_output_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let client = Arc::new(pair(dir.path(), Arc::default()));
    let mut tasks = Vec::new();
    for letter in ["a", "b", "c"] {
        let client = client.clone();
        let script = format!("for i in $(seq 1 2000); do echo {letter}; done");
        tasks.push(tokio::spawn(async move {
            (
                letter,
                client
                    .exec_collect(argv(&["sh", "-c", &script]), WAIT)
                    .await
                    .unwrap(),
            )
        }));
    }
    for task in tasks {
        let (letter, out) = task.await.unwrap();
        let expected = format!("{letter}\n").repeat(2000);
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }
    let big = client
        .exec_collect(argv(&["head", "-c", "1048576", "/dev/zero"]), WAIT)
        .await
        .unwrap();
    assert_eq!(big.stdout.len(), 1 << 20);
    assert!(big.stdout.iter().all(|b| *b == 0));
}

#[tokio::test]
async fn shutdown_replies_then_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    let off = Arc::new(AtomicBool::new(false));
    let client = pair(dir.path(), off.clone());
    client.shutdown(false, WAIT).await.unwrap();
    for _ in 0..100 {
        if off.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the agent did not power off");
}

#[tokio::test]
async fn a_silent_peer_times_out_and_a_closed_one_is_reported() {
    let (host, guest) = tokio::io::duplex(1024);
    let (r, w) = tokio::io::split(host);
    let client = AgentClient::new(r, w);
    let err = client.hello(Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(err, AgentError::Timeout(Duration::from_millis(200)));
    drop(guest);
    let err = client.hello(WAIT).await.unwrap_err();
    assert_eq!(err, AgentError::Closed);
}

/// The handler's answers to what the client never sends.
#[tokio::test]
async fn unknown_ops_bad_lines_and_wrong_versions_get_error_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guest) = tokio::io::duplex(64 * 1024);
    let (guest_r, guest_w) = tokio::io::split(guest);
    tokio::spawn(serve(guest_r, guest_w, context(dir.path(), Arc::default())));
    let (host_r, mut host_w) = tokio::io::split(host);
    let mut lines = BufReader::new(host_r).lines();
    host_w
        .write_all(b"{\"id\":5,\"op\":\"frobnicate\"}\nnot json\n{\"id\":6,\"op\":\"hello\",\"version\":99}\n")
        .await
        .unwrap();
    // A line a host broke off mid-character: not UTF-8, answered, and the
    // stream goes on.
    host_w.write_all(b"{\"id\":7,\"x\":\"\xc3\n").await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..4 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        replies.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    replies.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(replies[0]["id"], 0);
    assert_eq!(replies[0]["type"], "error");
    assert_eq!(replies[1]["id"], 0, "the broken line");
    assert_eq!(replies[1]["type"], "error");
    replies.remove(1);
    assert_eq!(replies[1]["id"], 5);
    assert!(replies[1]["message"]
        .as_str()
        .unwrap()
        .starts_with("bad request"));
    assert_eq!(replies[2]["id"], 6);
    assert_eq!(
        replies[2]["message"],
        "protocol version 99 is not spoken here: this agent speaks 1"
    );
}

#[tokio::test]
async fn a_terminal_takes_keystrokes_and_sizes_and_gives_the_exit_status() {
    use banger_proto::agent::Op;
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let mut replies = client
        .send(Op::Pty {
            argv: argv(&[
                "sh",
                "-c",
                "tty; stty size; read x; echo got:$x; stty size; exit 3",
            ]),
            env: Default::default(),
            cwd: None,
            user: None,
            rows: 30,
            cols: 100,
        })
        .unwrap();
    let target = replies.id();
    let mut shown = String::new();
    let mut typed = false;
    let code = loop {
        match tokio::time::timeout(WAIT, replies.next_event())
            .await
            .expect("the terminal answers")
            .unwrap()
        {
            ExecEvent::Stdout(bytes) => shown.push_str(&String::from_utf8_lossy(&bytes)),
            ExecEvent::Stderr(_) => panic!("a terminal has one output"),
            ExecEvent::Exit { code, .. } => break code,
        }
        if !typed && shown.contains("30 100") {
            typed = true;
            let b64 = base64::engine::general_purpose::STANDARD;
            client
                .send(Op::Resize {
                    target,
                    rows: 40,
                    cols: 120,
                })
                .unwrap();
            client
                .send(Op::Input {
                    target,
                    data: b64.encode("hi\r"),
                })
                .unwrap();
        }
    };
    assert_eq!(code, Some(3), "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown}");
    // The terminal echoes the keystrokes and turns \r into \n, as a local one.
    assert!(
        shown.contains("got:hi") && shown.contains("40 120"),
        "{shown}"
    );
    // Input for a terminal that is gone is refused.
    let mut late = client
        .send(Op::Input {
            target,
            data: String::new(),
        })
        .unwrap();
    assert!(matches!(
        late.next_event().await,
        Err(AgentError::Refused(_))
    ));
}

/// Starts `words` on a 24 x 80 terminal.
fn on_terminal(client: &AgentClient, words: &[&str]) -> Replies {
    client
        .send(banger_proto::agent::Op::Pty {
            argv: argv(words),
            env: Default::default(),
            cwd: None,
            user: None,
            rows: 24,
            cols: 80,
        })
        .unwrap()
}

/// What a terminal showed until its command ended, and its exit code.
async fn shown_until_exit(replies: &mut Replies) -> (Option<i32>, String) {
    let mut shown = String::new();
    loop {
        match tokio::time::timeout(WAIT, replies.next_event())
            .await
            .expect("the terminal answers")
            .unwrap()
        {
            ExecEvent::Stdout(bytes) => shown.push_str(&String::from_utf8_lossy(&bytes)),
            ExecEvent::Stderr(_) => panic!("a terminal has one output"),
            ExecEvent::Exit { code, .. } => return (code, shown),
        }
    }
}

// Two workers, as in the guest: the input's request is handled while the
// terminal's is still starting its command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystrokes_sent_right_behind_a_terminal_request_reach_its_command() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let mut replies = on_terminal(&client, &["sh", "-c", "read x; echo got:$x; exit 4"]);
    // Typed before the command (or even its terminal) exists: typeahead.
    let early = client
        .send(banger_proto::agent::Op::Input {
            target: replies.id(),
            data: base64::engine::general_purpose::STANDARD.encode("early\r"),
        })
        .unwrap();
    let (code, shown) = shown_until_exit(&mut replies).await;
    assert_eq!(code, Some(4), "{shown}");
    assert!(shown.contains("got:early"), "{shown}");
    drop(early);
}

#[tokio::test]
async fn a_terminal_whose_command_is_not_there_ends_with_127() {
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let mut replies = on_terminal(&client, &["/nonexistent/shell"]);
    let (code, shown) = shown_until_exit(&mut replies).await;
    assert_eq!(code, Some(127), "{shown}");
    assert!(
        shown.starts_with("cannot run /nonexistent/shell: "),
        "{shown}"
    );
    // Ended as a terminal ends a line: the host's terminal is in raw mode.
    assert!(shown.ends_with("\r\n"), "{shown:?}");
}

#[tokio::test]
async fn exec_runs_as_the_user_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let context = banger_core::agent::ExecContext {
        env: [("GREETING".to_string(), "hi".to_string())].into(),
        cwd: Some("/tmp".into()),
        user: Some("nobody".into()),
    };
    let mut replies = client
        .exec_as(
            argv(&["sh", "-c", "id -u; pwd; echo $GREETING"]),
            &context,
            None,
        )
        .unwrap();
    let mut out = Vec::new();
    loop {
        match replies.next_event().await.unwrap() {
            ExecEvent::Stdout(b) => out.extend(b),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exit { code, .. } => {
                assert_eq!(code, Some(0));
                break;
            }
        }
    }
    assert_eq!(String::from_utf8_lossy(&out), "65534\n/tmp\nhi\n");
    let bad = banger_core::agent::ExecContext {
        user: Some("no-such-user".into()),
        ..Default::default()
    };
    let mut replies = client.exec_as(argv(&["true"]), &bad, None).unwrap();
    assert!(
        matches!(replies.next_event().await, Err(AgentError::Refused(m)) if m.contains("no user"))
    );
}

#[tokio::test]
async fn a_guest_flooding_without_newlines_is_skipped_not_held() {
    use banger_host::agent::client::{next_line, MAX_REPLY_LINE};
    // The reader: a line too long is skipped whole, the next one is read.
    let text = b"short\nxxxxxxxxxxxxxxxxxxxx\nafter\nunfinished";
    let mut reader = tokio::io::BufReader::with_capacity(4, &text[..]);
    let mut line = Vec::new();
    let mut got = Vec::new();
    while let Some(whole) = next_line(&mut reader, &mut line, 8).await.unwrap() {
        got.push((whole, String::from_utf8_lossy(&line).into_owned()));
        assert!(line.len() <= 8);
    }
    assert_eq!(
        got,
        [
            (true, "short".to_string()),
            (false, String::new()),
            (true, "after".to_string())
        ]
    );

    // A hostile guest: megabytes without a newline, then a real reply.
    let (host, guest) = tokio::io::duplex(64 * 1024);
    let (guest_r, mut guest_w) = tokio::io::split(guest);
    let (host_r, host_w) = tokio::io::split(host);
    let client = AgentClient::new(host_r, host_w);
    tokio::spawn(async move {
        let mut requests = BufReader::new(guest_r).lines();
        let request = requests.next_line().await.unwrap().unwrap();
        let id = serde_json::from_str::<serde_json::Value>(&request).unwrap()["id"]
            .as_u64()
            .unwrap();
        let flood = vec![b'x'; 3 * MAX_REPLY_LINE];
        guest_w.write_all(&flood).await.unwrap();
        guest_w.write_all(b"\n").await.unwrap();
        let reply = format!(
            r#"{{"id":{id},"type":"hello","version":1,"agent_version":"x","hostname":"h","uptime_ms":1}}"#
        );
        guest_w.write_all(reply.as_bytes()).await.unwrap();
        guest_w.write_all(b"\n").await.unwrap();
        // Keep the stream open.
        tokio::time::sleep(WAIT).await;
    });
    let hello = client.hello(WAIT).await.unwrap();
    assert_eq!(hello.hostname, "h");
}

#[tokio::test]
async fn an_identity_is_written_into_the_guest_and_a_bad_one_refused() {
    use banger_proto::agent::{Identity, IdentityFile};
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let mut identity = Identity {
        time_ms: 1_800_000_000_000,
        entropy: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        machine_id: "00112233445566778899aabbccddeeff".into(),
        cmdline: "banger.hostname=copy".into(),
        mac: None,
        files: vec![IdentityFile {
            path: "/etc/hostname".into(),
            contents: "copy\n".into(),
            mode: 0o644,
        }],
    };
    client.identity(identity.clone(), WAIT).await.unwrap();
    let root = dir.path().join("root");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "copy\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
        "00112233445566778899aabbccddeeff\n"
    );
    identity.machine_id = "short".into();
    let err = client.identity(identity, WAIT).await.unwrap_err();
    assert!(err.to_string().contains("machine-id"), "{err}");
}

/// Sends `bytes` in pieces of `piece` on a channel, as the daemon does.
fn feed(bytes: Vec<u8>, piece: usize) -> tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for part in bytes.chunks(piece) {
            if tx.send(Ok(part.to_vec())).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn a_tree_copies_in_and_out_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    // Asked after every millisecond of silence: a copy still served is
    // never taken for lost.
    let client = pair(dir.path(), Arc::default()).probe_after(Duration::from_millis(1));
    let src = dir.path().join("src/tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    // Bigger than a chunk window: the window turns over many times.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("sub/big"), &big).unwrap();
    std::os::unix::fs::symlink("sub/big", src.join("link")).unwrap();
    let archive = banger_copy::pack(&src, Vec::new()).unwrap();
    let guest_dir = dir.path().join("guest");
    std::fs::create_dir(&guest_dir).unwrap();
    let target = guest_dir.display().to_string();
    client
        .copy_in(target.clone(), false, None, feed(archive, 100_000))
        .await
        .unwrap();
    assert_eq!(std::fs::read(guest_dir.join("tree/sub/big")).unwrap(), big);
    assert_eq!(
        std::fs::read_link(guest_dir.join("tree/link")).unwrap(),
        std::path::Path::new("sub/big")
    );
    // And back out, as the CLI would unpack it.
    let mut replies = client.copy_out(format!("{target}/tree")).unwrap();
    let mut back = Vec::new();
    loop {
        match client.next_event(&mut replies).await.unwrap() {
            ExecEvent::Stdout(bytes) => back.extend(bytes),
            ExecEvent::Exit { code, .. } => {
                assert_eq!(code, Some(0));
                break;
            }
            ExecEvent::Stderr(_) => {}
        }
    }
    let host_dir = dir.path().join("back");
    let owner = banger_copy::UnpackOptions {
        owner: banger_copy::Owner::Unpacker,
        top: None,
    };
    banger_copy::unpack(&back[..], &host_dir, owner).unwrap();
    assert_eq!(std::fs::read(host_dir.join("sub/big")).unwrap(), big);
}

#[tokio::test]
async fn copy_failures_name_their_kind_and_a_broken_archive_is_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let missing = dir.path().join("nope").display().to_string();
    let err = client
        .copy_out(missing.clone())
        .unwrap()
        .next_event()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::CopyFailed { kind, path: Some(p), .. } if kind == "not_found" && *p == missing),
        "{err:?}"
    );
    let into_missing = format!("{missing}/x");
    let err = client
        .copy_in(
            into_missing,
            false,
            None,
            feed(b"not a tar at all".repeat(64), 512),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::CopyFailed { kind, .. } if kind == "not_found"),
        "{err:?}"
    );
    // An archive that breaks off midway: the guest's unpacker fails.
    std::fs::write(dir.path().join("f"), vec![1u8; 600_000]).unwrap();
    let archive = banger_copy::pack(&dir.path().join("f"), Vec::new()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Ok(archive[..200_000].to_vec())).await.unwrap();
    tx.send(Err("the client went away".to_string()))
        .await
        .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = client
        .copy_in(out.display().to_string(), false, None, rx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broke off"), "{err}");
    // The agent serves on.
    client.hello(WAIT).await.unwrap();
}

#[tokio::test]
async fn a_copy_dropped_midway_is_abandoned_in_the_guest() {
    use banger_proto::agent::Op;
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    std::fs::write(dir.path().join("f"), vec![7u8; 600_000]).unwrap();
    let archive = banger_copy::pack(&dir.path().join("f"), Vec::new()).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Ids are handed out in order: the copy's is the one after this.
    let before = client
        .send(Op::Hello {
            version: banger_proto::agent::PROTOCOL_VERSION,
        })
        .unwrap()
        .id();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Ok(archive[..100_000].to_vec())).await.unwrap();
    let copy = client.copy_in(out.display().to_string(), false, None, rx);
    // The client goes away while the copy waits for more.
    assert!(tokio::time::timeout(Duration::from_millis(500), copy)
        .await
        .is_err());
    let mut probe = client
        .send(Op::Chunk {
            target: before + 1,
            data: "AAAA".into(),
        })
        .unwrap();
    let answer = tokio::time::timeout(WAIT, probe.next_event())
        .await
        .unwrap();
    assert!(
        matches!(&answer, Err(AgentError::Refused(message)) if message.contains("no open copy")),
        "{answer:?}"
    );
    drop(tx);
}

/// A command quieter than the probe's silence runs to its end: asked
/// after it, the agent says it still runs.
#[tokio::test]
async fn a_quiet_command_is_asked_after_and_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default()).probe_after(Duration::from_millis(50));
    let mut replies = client
        .exec(argv(&["sh", "-c", "sleep 0.6; echo late"]), None)
        .unwrap();
    let mut events = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, client.next_event(&mut replies))
            .await
            .unwrap()
            .unwrap();
        let end = matches!(event, ExecEvent::Exit { .. });
        events.push(event);
        if end {
            break;
        }
    }
    assert_eq!(
        events,
        [
            ExecEvent::Stdout(b"late\n".to_vec()),
            ExecEvent::Exit {
                code: Some(0),
                signal: None
            }
        ]
    );
}

/// A client wired to a real agent handler that never gets the first
/// request line (thrown away with a port that closed, or gone with an
/// agent that restarted), asking after 50 ms of silence.
fn losing_the_first_request(dir: &std::path::Path) -> AgentClient {
    let (host, guest) = tokio::io::duplex(64 * 1024);
    let (guest_r, guest_w) = tokio::io::split(guest);
    let ctx = context(dir, Arc::default());
    tokio::spawn(async move {
        let mut reader = BufReader::new(guest_r);
        let mut lost = Vec::new();
        reader.read_until(b'\n', &mut lost).await.unwrap();
        serve(reader, guest_w, ctx).await
    });
    let (host_r, host_w) = tokio::io::split(host);
    AgentClient::new(host_r, host_w).probe_after(Duration::from_millis(50))
}

/// A command, a copy in or a copy out the agent never got ends once the
/// agent, asked after a silence, does not know it; none waits for ever,
/// and the agent serves on.
#[tokio::test]
async fn a_request_the_agent_never_got_ends_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let client = losing_the_first_request(dir.path());
    let mut lost = client.exec(argv(&["true"]), None).unwrap();
    let ended = tokio::time::timeout(WAIT, client.next_event(&mut lost)).await;
    assert_eq!(ended.unwrap(), Err(AgentError::Lost));
    let out = client
        .exec_collect(argv(&["echo", "next"]), WAIT)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"next\n", "the agent serves on");

    let client = losing_the_first_request(dir.path());
    let mut lost = client.copy_out(dir.path().display().to_string()).unwrap();
    let ended = tokio::time::timeout(WAIT, client.next_event(&mut lost)).await;
    assert_eq!(ended.unwrap(), Err(AgentError::Lost));

    // More than a window of chunks, each refused by an agent that knows
    // no such copy; then its end is waited for, and asked after.
    let client = losing_the_first_request(dir.path());
    std::fs::write(dir.path().join("f"), vec![3u8; 4_000_000]).unwrap();
    let archive = banger_copy::pack(&dir.path().join("f"), Vec::new()).unwrap();
    let into = dir.path().join("in");
    std::fs::create_dir(&into).unwrap();
    let copied = client.copy_in(
        into.display().to_string(),
        false,
        None,
        feed(archive, 200_000),
    );
    let ended = tokio::time::timeout(WAIT, copied).await;
    assert_eq!(ended.unwrap(), Err(AgentError::Lost));
    client.hello(WAIT).await.unwrap();
}

/// A copy is served from its request until its last reply is on the
/// stream: asked in between, the agent says so; asked after, it does not.
#[tokio::test]
async fn a_copy_is_served_until_its_last_reply() {
    use banger_proto::agent::{Op, ReplyBody};
    let dir = tempfile::tempdir().unwrap();
    let client = pair(dir.path(), Arc::default());
    let client = &client;
    let status = |target| async move {
        let mut asked = client.send(Op::Status { target }).unwrap();
        tokio::time::timeout(WAIT, client.next_watched(&mut asked))
            .await
            .unwrap()
            .unwrap()
    };
    let into = dir.path().display().to_string();
    let mut copy = client
        .send(Op::CopyIn {
            path: into,
            keep_owners: false,
            user: None,
        })
        .unwrap();
    let target = copy.id();
    assert_eq!(status(target).await, ReplyBody::Status { running: true });
    // An empty chunk ends the archive (an empty one: refused).
    let _end = client
        .send(Op::Chunk {
            target,
            data: String::new(),
        })
        .unwrap();
    let last = tokio::time::timeout(WAIT, client.next_watched(&mut copy))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(last, ReplyBody::CopyFailed { .. } | ReplyBody::Ok),
        "{last:?}"
    );
    assert_eq!(status(target).await, ReplyBody::Status { running: false });

    std::fs::write(dir.path().join("f"), vec![9u8; 3_000_000]).unwrap();
    let mut out = client
        .send(Op::CopyOut {
            path: dir.path().join("f").display().to_string(),
        })
        .unwrap();
    let target = out.id();
    // Asked at once: still served, or its last reply came first (then it
    // is here already, without waiting).
    let answer = status(target).await;
    let wait = if answer == (ReplyBody::Status { running: true }) {
        WAIT
    } else {
        Duration::ZERO
    };
    let mut ended = false;
    while let Ok(Ok(reply)) = tokio::time::timeout(wait, client.next_watched(&mut out)).await {
        if matches!(reply, ReplyBody::Exit { .. }) {
            ended = true;
            break;
        }
    }
    assert!(ended, "the copy out's end (status answered {answer:?})");
    assert_eq!(status(target).await, ReplyBody::Status { running: false });
}
