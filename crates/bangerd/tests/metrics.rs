//! `/metrics` against a real daemon (this test binary's only one, so the
//! process's counts are its own): VMs by state, create operations and
//! their stages as histograms, image bytes, in the Prometheus text format.

use banger_testkit as support;

use support::TestDaemon;

#[tokio::test]
async fn metrics_count_vms_operations_and_images() {
    let daemon = TestDaemon::start().await;
    for name in ["a", "b"] {
        let body = format!(r#"{{"name":"{name}","no_start":true}}"#);
        let (status, vm) = daemon.call("POST", "/v1/vms", Some(&body)).await;
        assert_eq!(status, 201, "{vm}");
    }
    let (status, _) = daemon
        .call("POST", "/v1/vms", Some(r#"{"name":"a","no_start":true}"#))
        .await;
    assert_eq!(status, 409, "a taken name: the operation fails");
    let (status, text) = daemon.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("text, not json").to_string();
    for line in [
        "banger_vms{state=\"stopped\"} 2",
        "banger_operation_duration_seconds_count{operation=\"vm.create\",outcome=\"done\"} 2",
        "banger_operation_duration_seconds_count{operation=\"vm.create\",outcome=\"failed\"} 1",
        "banger_stage_duration_seconds_count{operation=\"vm.create\",stage=\"reserve_vm\"} 2",
        "# TYPE banger_image_bytes gauge",
        "banger_port_connections_refused_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    daemon.stop().await;
}
