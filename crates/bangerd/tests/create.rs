//! Create through the API on a real SQLite store: names, addresses and
//! CIDs under concurrency, and bad input that changes nothing.

use banger_testkit as support;

use std::collections::HashSet;
use std::sync::Arc;

use support::TestDaemon;

#[tokio::test]
async fn one_name_twice_at_once_has_exactly_one_winner() {
    let daemon = Arc::new(TestDaemon::start().await);
    let body = r#"{"name":"dup","no_start":true}"#;
    let (a, b) = tokio::join!(
        daemon.call("POST", "/v1/vms", Some(body)),
        daemon.call("POST", "/v1/vms", Some(body))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let loser = if a.0 == 409 { a.1 } else { b.1 };
    assert_eq!(loser["error"]["message"], "vm name already exists: dup");
    let (_, list) = daemon.call("GET", "/v1/vms", None).await;
    assert_eq!(list["vms"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn fifty_creates_at_once_get_distinct_names_addresses_and_cids() {
    let daemon = Arc::new(TestDaemon::start().await);
    let mut tasks = vec![];
    for _ in 0..50 {
        let daemon = daemon.clone();
        tasks.push(tokio::spawn(async move {
            daemon
                .call("POST", "/v1/vms", Some(r#"{"no_start":true}"#))
                .await
        }));
    }
    let (mut names, mut ips, mut cids) = (HashSet::new(), HashSet::new(), HashSet::new());
    for task in tasks {
        let (status, vm) = task.await.unwrap();
        assert_eq!(status, 201, "{vm}");
        names.insert(vm["name"].as_str().unwrap().to_string());
        ips.insert(vm["guest_ip"].as_str().unwrap().to_string());
        cids.insert(vm["vsock_cid"].as_u64().unwrap());
    }
    assert_eq!((names.len(), ips.len(), cids.len()), (50, 50, 50));
    assert!(
        !ips.contains("172.29.0.0") && !ips.contains("172.29.0.1") && !ips.contains("172.29.0.255")
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let daemon = TestDaemon::start().await;
    let (status, _) = daemon
        .call(
            "POST",
            "/v1/vms",
            Some(r#"{"name":"keep","no_start":true}"#),
        )
        .await;
    assert_eq!(status, 201);
    let bad = [
        (r#"{"name":"Not_Valid","no_start":true}"#, 400),
        (r#"{"name":"a1","vcpus":0,"no_start":true}"#, 400),
        (r#"{"name":"a2","vcpus":4096,"no_start":true}"#, 400),
        (r#"{"name":"a3","memory_mib":32,"no_start":true}"#, 400),
        (r#"{"name":"a4","work_disk_bytes":1,"no_start":true}"#, 400),
        (r#"{"name":"","no_start":true}"#, 400),
        (r#"[null, null]"#, 400),
        (r#"{"name":"a6","vcpus":2.5,"no_start":true}"#, 400),
        (
            r#"{"name":"a5","image":"no-such-image","no_start":true}"#,
            404,
        ),
        (
            r#"{"name":"a7","guest_ip":"10.0.0.5","no_start":true}"#,
            422,
        ),
        (r#"{"name":"keep","no_start":true}"#, 409),
    ];
    for (body, expected) in bad {
        let (status, value) = daemon.call("POST", "/v1/vms", Some(body)).await;
        assert_eq!(status, expected, "{body}: {value}");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains('\n') && !message.ends_with('.'),
            "{message}"
        );
        assert!(value["error"]["hint"].is_string(), "{body} has no hint");
    }
    let (_, list) = daemon.call("GET", "/v1/vms", None).await;
    assert_eq!(list["vms"].as_array().unwrap().len(), 1);
}
