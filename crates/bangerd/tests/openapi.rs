//! The committed OpenAPI document matches the server, and every route it
//! lists answers with the statuses and bodies it documents (bodies are
//! validated against its schemas, with unknown fields rejected).

use banger_testkit as support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};
use support::TestDaemon;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../api/openapi.json")
}

#[test]
fn committed_document_is_current() {
    let generated = bangerd::api::openapi_json();
    if std::env::var_os("BANGER_UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap();
    assert!(
        committed == generated,
        "api/openapi.json is stale: regenerate it with BANGER_UPDATE_OPENAPI=1 cargo test -p bangerd --test openapi"
    );
}

fn doc() -> Value {
    serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap()).unwrap()
}

/// Every operation of the document: (method, route, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(route, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .filter(|(method, _)| *method != "parameters")
                .map(move |(method, op)| (method.clone(), route.clone(), op.clone()))
        })
        .collect()
}

/// Every object schema refuses properties it does not list.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Checks that `status` is documented for the route and `body` fits its schema.
fn assert_documented(doc: &Value, method: &str, route: &str, status: u16, body: &Value) {
    assert_fits(doc, method, route, status, "application/json", body);
}

/// Checks that `status` is documented for the route and `body` (a JSON
/// answer, or one line of a stream) fits the schema of `media_type`.
fn assert_fits(
    doc: &Value,
    method: &str,
    route: &str,
    status: u16,
    media_type: &str,
    body: &Value,
) {
    let responses = &doc["paths"][route][method]["responses"];
    let response = &responses[status.to_string()];
    assert!(
        response.is_object(),
        "{method} {route} answered {status}, which is not documented"
    );
    let Some(schema) = response["content"].get(media_type).map(|c| &c["schema"]) else {
        // Text and streams: the status is documented, the body is not JSON.
        return;
    };
    let mut root = json!({ "components": doc["components"].clone() });
    close_objects(&mut root);
    root.as_object_mut()
        .unwrap()
        .insert("$ref".into(), schema["$ref"].clone());
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {route} {status}: {errors:?}\nbody: {body}"
    );
}

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let doc = doc();
    let daemon = TestDaemon::start().await;
    let mut seen = BTreeSet::new();
    // The event stream, open through every case below: it ends with the
    // shutdown at the end, and each event it carried must fit its schema.
    let events = support::get_stream(&daemon.socket(), "/v1/events").await;
    let create =
        r#"{"name":"web","no_start":true,"vcpus":1,"memory_mib":256,"work_disk_bytes":1073741824}"#;
    let cases: Vec<(&str, &str, String, Option<&str>, u16)> = vec![
        ("get", "/v1/health", "/v1/health".into(), None, 200),
        ("get", "/v1/doctor", "/v1/doctor".into(), None, 200),
        ("get", "/v1/images", "/v1/images".into(), None, 200),
        (
            "get",
            "/v1/images/{image}",
            "/v1/images/base".into(),
            None,
            200,
        ),
        (
            "get",
            "/v1/images/{image}",
            "/v1/images/nope".into(),
            None,
            404,
        ),
        ("post", "/v1/vms", "/v1/vms".into(), Some(create), 201),
        ("post", "/v1/vms", "/v1/vms".into(), Some(create), 409),
        (
            "post",
            "/v1/vms",
            "/v1/vms".into(),
            Some(r#"{"name":"x","vcpus":0,"no_start":true}"#),
            400,
        ),
        // The seeded image's files do not exist: the boot fails, the vm
        // is recorded failed.
        (
            "post",
            "/v1/vms",
            "/v1/vms".into(),
            Some(r#"{"name":"x"}"#),
            500,
        ),
        // Shared folders are opened with the caller's rights first.
        (
            "post",
            "/v1/vms",
            "/v1/vms".into(),
            Some(
                r#"{"name":"shared","no_start":true,"mounts":[{"host_dir":"/nonexistent-dir","guest_dir":"/srv"}]}"#,
            ),
            404,
        ),
        (
            "post",
            "/v1/vms",
            "/v1/vms".into(),
            Some(
                r#"{"name":"shared","no_start":true,"mounts":[{"host_dir":"/etc/hostname","guest_dir":"/srv"}]}"#,
            ),
            422,
        ),
        (
            "post",
            "/v1/vms",
            "/v1/vms".into(),
            Some(
                r#"{"name":"shared","no_start":true,"mounts":[{"host_dir":"tmp","guest_dir":"/srv"}]}"#,
            ),
            400,
        ),
        (
            "post",
            "/v1/vms/{vm}/stop",
            "/v1/vms/web/stop".into(),
            None,
            409,
        ),
        (
            "post",
            "/v1/vms/{vm}/exec",
            "/v1/vms/web/exec".into(),
            Some(r#"{"argv":["true"]}"#),
            409,
        ),
        (
            "post",
            "/v1/vms/{vm}/exec",
            "/v1/vms/web/exec".into(),
            Some(r#"{"argv":[]}"#),
            400,
        ),
        (
            "post",
            "/v1/vms/{vm}/exec",
            "/v1/vms/nope/exec".into(),
            Some(r#"{"argv":["true"]}"#),
            404,
        ),
        (
            "get",
            "/v1/vms/{vm}/logs",
            "/v1/vms/web/logs".into(),
            None,
            200,
        ),
        (
            "get",
            "/v1/vms/{vm}/logs",
            "/v1/vms/nope/logs".into(),
            None,
            404,
        ),
        (
            "post",
            "/v1/vms/{vm}/start",
            "/v1/vms/nope/start".into(),
            None,
            404,
        ),
        (
            "post",
            "/v1/vms/{vm}/start",
            "/v1/vms/web/start".into(),
            None,
            500,
        ),
        (
            "post",
            "/v1/vms/{vm}/restart",
            "/v1/vms/web/restart".into(),
            None,
            500,
        ),
        ("get", "/v1/vms", "/v1/vms".into(), None, 200),
        ("get", "/v1/catalog", "/v1/catalog".into(), None, 200),
        ("get", "/v1/ssh", "/v1/ssh".into(), None, 200),
        ("get", "/v1/verify", "/v1/verify".into(), None, 200),
        ("get", "/metrics", "/metrics".into(), None, 200),
        (
            "get",
            "/v1/vms/{vm}/stats",
            "/v1/vms/web/stats".into(),
            None,
            200,
        ),
        (
            "get",
            "/v1/vms/{vm}/stats",
            "/v1/vms/nope/stats".into(),
            None,
            404,
        ),
        (
            "post",
            "/v1/vms/{vm}/ssh-keys",
            "/v1/vms/web/ssh-keys".into(),
            Some(r#"{"keys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx alice@laptop"]}"#),
            200,
        ),
        (
            "post",
            "/v1/vms/{vm}/ssh-keys",
            "/v1/vms/nope/ssh-keys".into(),
            Some(r#"{"keys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx"]}"#),
            404,
        ),
        (
            "post",
            "/v1/vms/{vm}/ssh-keys",
            "/v1/vms/web/ssh-keys".into(),
            Some(r#"{"keys":["ssh-dss AAAAB3 old"]}"#),
            400,
        ),
        (
            "post",
            "/v1/vms/{vm}/ssh-keys",
            "/v1/vms/web/ssh-keys".into(),
            Some(r#"{"keys":[]}"#),
            400,
        ),
        (
            "patch",
            "/v1/vms/{vm}",
            "/v1/vms/web".into(),
            Some(r#"{"nat":true}"#),
            200,
        ),
        (
            "patch",
            "/v1/vms/{vm}",
            "/v1/vms/web".into(),
            Some(r#"{"nat":"yes"}"#),
            400,
        ),
        (
            "patch",
            "/v1/vms/{vm}",
            "/v1/vms/nope".into(),
            Some(r#"{"nat":true}"#),
            404,
        ),
        (
            "delete",
            "/v1/images/{image}",
            "/v1/images/base".into(),
            None,
            409,
        ),
        (
            "post",
            "/v1/images/build",
            "/v1/images/build".into(),
            Some(r#"{"name":"Bad Name"}"#),
            400,
        ),
        (
            "post",
            "/v1/images/build",
            "/v1/images/build".into(),
            Some(r#"{"name":"base"}"#),
            409,
        ),
        (
            "post",
            "/v1/images/pull",
            "/v1/images/pull".into(),
            Some(r#"{"source":"Not An Image Reference"}"#),
            400,
        ),
        (
            "post",
            "/v1/vms/{vm}/terminal",
            "/v1/vms/web/terminal".into(),
            None,
            400,
        ),
        (
            "post",
            "/v1/images/prune",
            "/v1/images/prune".into(),
            None,
            200,
        ),
        (
            "post",
            "/v1/images/register",
            "/v1/images/register".into(),
            Some(r#"{"name":"reg","kernel":"/nonexistent/k","rootfs":"/nonexistent/r"}"#),
            404,
        ),
        (
            "post",
            "/v1/images/{image}/export",
            "/v1/images/nope/export".into(),
            Some(r#"{"file":"/tmp/x.tar.zst"}"#),
            404,
        ),
        (
            "post",
            "/v1/images/{image}/export",
            "/v1/images/base/export".into(),
            Some(r#"{"file":"relative.tar.zst"}"#),
            400,
        ),
        // Snapshots: of a VM that is not running, of nothing.
        ("get", "/v1/snapshots", "/v1/snapshots".into(), None, 200),
        (
            "get",
            "/v1/snapshots/{snapshot}",
            "/v1/snapshots/nope".into(),
            None,
            404,
        ),
        (
            "delete",
            "/v1/snapshots/{snapshot}",
            "/v1/snapshots/nope".into(),
            None,
            404,
        ),
        (
            "post",
            "/v1/vms/{vm}/snapshot",
            "/v1/vms/web/snapshot".into(),
            Some("{}"),
            409,
        ),
        (
            "post",
            "/v1/vms/{vm}/fork",
            "/v1/vms/nope/fork".into(),
            Some(r#"{"count":2}"#),
            404,
        ),
        (
            "post",
            "/v1/vms/{vm}/promote",
            "/v1/vms/nope/promote".into(),
            Some(r#"{"name":"dev"}"#),
            404,
        ),
        (
            "post",
            "/v1/images/{image}/warm",
            "/v1/images/nope/warm".into(),
            None,
            404,
        ),
        ("get", "/v1/vms/{vm}", "/v1/vms/web".into(), None, 200),
        ("get", "/v1/vms/{vm}", "/v1/vms/nope".into(), None, 404),
        // Copies need a running VM; guest paths are absolute.
        (
            "get",
            "/v1/vms/{vm}/files",
            "/v1/vms/web/files?path=%2Fetc".into(),
            None,
            409,
        ),
        (
            "get",
            "/v1/vms/{vm}/files",
            "/v1/vms/web/files?path=etc".into(),
            None,
            400,
        ),
        (
            "get",
            "/v1/vms/{vm}/files",
            "/v1/vms/nope/files?path=%2Fetc".into(),
            None,
            404,
        ),
        (
            "put",
            "/v1/vms/{vm}/files",
            "/v1/vms/web/files?path=%2Froot".into(),
            Some("{}"),
            409,
        ),
        (
            "put",
            "/v1/vms/{vm}/files",
            "/v1/vms/web/files".into(),
            Some("{}"),
            400,
        ),
        // Ports: this daemon has no network to forward to.
        (
            "get",
            "/v1/vms/{vm}/ports",
            "/v1/vms/web/ports".into(),
            None,
            200,
        ),
        (
            "get",
            "/v1/vms/{vm}/ports",
            "/v1/vms/nope/ports".into(),
            None,
            404,
        ),
        (
            "post",
            "/v1/vms/{vm}/ports",
            "/v1/vms/web/ports".into(),
            Some(r#"{"host_port":18080,"guest_port":80}"#),
            422,
        ),
        (
            "post",
            "/v1/vms/{vm}/ports",
            "/v1/vms/web/ports".into(),
            Some(r#"{"host_port":0,"guest_port":80}"#),
            400,
        ),
        (
            "delete",
            "/v1/vms/{vm}/ports/{port}",
            "/v1/vms/web/ports/18080".into(),
            None,
            404,
        ),
        (
            "delete",
            "/v1/vms/{vm}/ports/{port}",
            "/v1/vms/web/ports/0".into(),
            None,
            400,
        ),
        ("delete", "/v1/vms/{vm}", "/v1/vms/web".into(), None, 200),
        ("delete", "/v1/vms/{vm}", "/v1/vms/web".into(), None, 404),
        ("delete", "/v1/vms/{vm}", "/v1/vms/x".into(), None, 200),
        (
            "delete",
            "/v1/images/{image}",
            "/v1/images/base".into(),
            None,
            200,
        ),
        (
            "delete",
            "/v1/images/{image}",
            "/v1/images/base".into(),
            None,
            404,
        ),
        ("post", "/v1/shutdown", "/v1/shutdown".into(), None, 202),
    ];
    for (method, route, path, body, expected) in cases {
        let (status, value) = daemon.call(&method.to_uppercase(), &path, body).await;
        assert_eq!(status, expected, "{method} {path}: {value}");
        assert_documented(&doc, method, route, status, &value);
        seen.insert((method.to_string(), route.to_string()));
    }
    let (status, content_type, body) = events.await.unwrap();
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() >= 4, "vms and an image came and went: {body}");
    for event in &lines {
        assert_fits(
            &doc,
            "get",
            "/v1/events",
            200,
            "application/x-ndjson",
            event,
        );
    }
    seen.insert(("get".to_string(), "/v1/events".to_string()));
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, route, _)| (method, route))
        .collect();
    assert_eq!(
        seen, documented,
        "every documented route is exercised, and nothing else"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn malformed_bodies_and_unknown_routes_get_error_bodies() {
    let doc = doc();
    let daemon = TestDaemon::start().await;
    for body in [
        "{",
        "42",
        r#"{"name": 5}"#,
        r#"{"bogus": true}"#,
        "not json",
    ] {
        let (status, value) = daemon.call("POST", "/v1/vms", Some(body)).await;
        assert_eq!(status, 400, "{body}: {value}");
        assert_documented(&doc, "post", "/v1/vms", 400, &value);
        assert_eq!(value["error"]["code"], "invalid_input");
    }
    // Any top-level value but an object, even one the body type would
    // take (a struct from a sequence).
    for body in ["[null, null]", "null", "\"web\""] {
        let (status, value) = daemon.call("POST", "/v1/vms", Some(body)).await;
        assert_eq!(status, 400, "{body}: {value}");
        assert_documented(&doc, "post", "/v1/vms", 400, &value);
    }
    // Malformed query strings and paths: the same error body, documented.
    for (method, route, path) in [
        ("delete", "/v1/vms/{vm}", "/v1/vms/web?force=maybe"),
        (
            "post",
            "/v1/vms/{vm}/stop",
            "/v1/vms/web/stop?force=1&force=0",
        ),
        ("get", "/v1/vms/{vm}/logs", "/v1/vms/web/logs?follow=yes"),
        ("get", "/v1/vms/{vm}", "/v1/vms/%FF%FE"),
        ("get", "/v1/images/{image}", "/v1/images/%C3"),
    ] {
        let (status, value) = daemon.call(&method.to_uppercase(), path, None).await;
        assert_eq!(status, 400, "{path}: {value}");
        assert_eq!(value["error"]["code"], "invalid_input", "{path}");
        assert_documented(&doc, method, route, 400, &value);
    }
    let (status, value) = daemon.call("GET", "/v1/nothing-here", None).await;
    assert_eq!(status, 404);
    assert_eq!(value["error"]["code"], "not_found");
    let (status, _) = daemon.call("GET", "/v1/vms", None).await;
    assert_eq!(status, 200, "the daemon still serves after bad requests");
    daemon.stop().await;
}

#[tokio::test]
async fn every_streamed_event_fits_the_documented_stream_schema() {
    let doc = doc();
    let daemon = TestDaemon::start().await;
    const NDJSON: &str = "application/x-ndjson";
    let ndjson_routes: Vec<(String, String)> = operations(&doc)
        .into_iter()
        .filter(|(_, _, op)| {
            op["responses"]
                .as_object()
                .unwrap()
                .values()
                .any(|r| r["content"].get(NDJSON).is_some())
        })
        .map(|(method, route, _)| (method, route))
        .collect();
    assert!(
        ndjson_routes.contains(&("post".into(), "/v1/vms".into())),
        "{ndjson_routes:?}"
    );
    // A create that ends with its vm, and an export that ends in an error
    // (the seeded image's files do not exist): both streams fit.
    let created = support::call_stream(
        &daemon.socket(),
        "/v1/vms",
        r#"{"name":"s","no_start":true}"#,
    )
    .await;
    assert_eq!(created.last().unwrap()["type"], "vm", "{created:?}");
    for event in &created {
        assert_fits(&doc, "post", "/v1/vms", 200, NDJSON, event);
    }
    let out = tempfile::tempdir().unwrap();
    let body = json!({ "file": out.path().join("b.tar.zst") }).to_string();
    let failed = support::call_stream(&daemon.socket(), "/v1/images/base/export", &body).await;
    assert_eq!(failed.last().unwrap()["type"], "error", "{failed:?}");
    for event in &failed {
        assert_fits(
            &doc,
            "post",
            "/v1/images/{image}/export",
            200,
            NDJSON,
            event,
        );
    }
    daemon.stop().await;
}
