//! `GET /v1/events` against a real daemon: a subscriber sees VMs and
//! images come and go as they do, in order, nothing for a refused
//! request, and the stream ends when the daemon shuts down (an open
//! stream does not hold the shutdown).

use banger_testkit as support;

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::TestDaemon;
use tokio::net::UnixStream;

#[tokio::test]
async fn a_subscriber_sees_what_happens_and_the_stream_ends_with_the_daemon() {
    let daemon = TestDaemon::start().await;
    let stream = UnixStream::connect(daemon.socket()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("http://bangerd/v1/events")
        .header("host", "bangerd")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();

    let (status, _) = daemon
        .call("POST", "/v1/vms", Some(r#"{"name":"a","no_start":true}"#))
        .await;
    assert_eq!(status, 201);
    let (status, _) = daemon
        .call("POST", "/v1/vms", Some(r#"{"name":"a","no_start":true}"#))
        .await;
    assert_eq!(status, 409, "a taken name: no event");
    let (status, _) = daemon.call("DELETE", "/v1/vms/a", None).await;
    assert_eq!(status, 200);
    let (status, _) = daemon.call("DELETE", "/v1/images/base", None).await;
    assert_eq!(status, 200);

    let mut text = String::new();
    let mut events: Vec<Value> = Vec::new();
    while events.len() < 4 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
        while let Some(end) = text.find('\n') {
            let line: String = text.drain(..=end).collect();
            events.push(serde_json::from_str(&line).unwrap());
        }
    }
    let seen: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["object"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let event = |o: &str, a: &str, n: &str| (o.to_string(), a.to_string(), n.to_string());
    assert_eq!(
        seen,
        vec![
            event("vm", "created", "a"),
            event("vm", "stopped", "a"),
            event("vm", "removed", "a"),
            event("image", "removed", "base"),
        ]
    );
    assert!(
        events[0]["at"].as_str().unwrap().ends_with('Z'),
        "{}",
        events[0]
    );
    assert_eq!(events[0]["id"], events[2]["id"]);

    // The daemon stops although a subscriber is still reading.
    tokio::time::timeout(Duration::from_secs(20), daemon.stop())
        .await
        .expect("an open event stream does not hold the shutdown");
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the stream ends with the daemon");
    if let Ok(rest) = rest {
        assert!(rest.to_bytes().is_empty(), "nothing after the end");
    }
}
