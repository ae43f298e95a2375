//! Every request banger sends is checked against Firecracker's own API
//! description with [`ApiSpec`]; and the validator itself is checked to
//! catch each kind of mistake.

use serde_json::{json, Value};

use super::api::{
    ActionType, CacheType, Drive, FcRequest, HugePages, IoEngine, LogLevel, Logger,
    MachineConfiguration,
};
use super::plan::{self, tests::sample};
use super::spec::ApiSpec;

fn put(path: &str, body: Value) -> FcRequest {
    FcRequest {
        method: super::api::Method::Put,
        path: path.to_string(),
        body: Some(body),
    }
}

#[test]
fn spec_is_the_expected_version() {
    let spec = ApiSpec::load();
    assert_eq!(spec.document()["swagger"], "2.0");
    assert_eq!(spec.document()["info"]["version"], "1.16.1");
}

#[test]
fn every_boot_request_matches_the_spec() {
    let spec = ApiSpec::load();
    let mut no_initrd = sample();
    no_initrd.initrd = None;
    no_initrd.drives.clear();
    for cfg in [sample(), no_initrd] {
        for req in plan::boot_requests(&cfg).unwrap() {
            assert_eq!(
                spec.check_request(&req),
                Ok(()),
                "{} {}",
                req.method.as_str(),
                req.path
            );
        }
    }
}

#[test]
fn stop_and_describe_match_the_spec() {
    let spec = ApiSpec::load();
    assert_eq!(spec.check_request(&plan::stop_request()), Ok(()));
    assert_eq!(spec.check_request(&plan::describe_request()), Ok(()));
}

#[test]
fn pause_resume_save_and_restore_match_the_spec() {
    let spec = ApiSpec::load();
    let mut requests = vec![
        plan::vm_state_request(super::api::VmRunState::Paused),
        plan::vm_state_request(super::api::VmRunState::Resumed),
        plan::snapshot_create_request("/snap/state".as_ref(), "/snap/memory".as_ref()).unwrap(),
    ];
    requests.extend(
        plan::restore_requests(&sample(), "/snap/state".as_ref(), "/snap/memory".as_ref()).unwrap(),
    );
    for req in &requests {
        assert_eq!(
            spec.check_request(req),
            Ok(()),
            "{} {}",
            req.method.as_str(),
            req.path
        );
    }
    let load = &requests[4].body.as_ref().unwrap();
    assert_eq!(load["network_overrides"][0]["host_dev_name"], "bgtap0");
    assert_eq!(
        load["vsock_override"]["uds_path"],
        "/run/banger/vms/web1/vsock.sock"
    );
    assert_eq!(load["mem_backend"]["backend_type"], "File");
}

#[test]
fn config_file_matches_full_vm_configuration() {
    let spec = ApiSpec::load();
    let file = plan::config_file(&sample()).unwrap();
    assert_eq!(spec.check_definition("FullVmConfiguration", &file), Ok(()));
    // And section by section, against each section's own definition.
    for (key, def) in [
        ("metrics", "Metrics"),
        ("machine-config", "MachineConfiguration"),
        ("boot-source", "BootSource"),
        ("vsock", "Vsock"),
    ] {
        assert_eq!(spec.check_definition(def, &file[key]), Ok(()), "{key}");
    }
    for (key, def) in [
        ("drives", "Drive"),
        ("network-interfaces", "NetworkInterface"),
    ] {
        let items = file[key].as_array().unwrap();
        assert!(!items.is_empty(), "{key}");
        for item in items {
            assert_eq!(spec.check_definition(def, item), Ok(()), "{key}");
        }
    }
}

/// Enum variants the plan does not use today must still be spec values.
#[test]
fn every_enum_variant_is_in_the_spec() {
    let spec = ApiSpec::load();
    for level in [
        LogLevel::Error,
        LogLevel::Warning,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
        LogLevel::Off,
    ] {
        let body = Logger {
            log_path: None,
            level: Some(level),
            show_level: Some(false),
            show_log_origin: Some(true),
        };
        assert_eq!(
            spec.check_request(&FcRequest::put("/logger", &body)),
            Ok(())
        );
    }
    for huge_pages in [HugePages::None, HugePages::TwoMib] {
        let body = MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 512,
            smt: Some(false),
            track_dirty_pages: Some(true),
            huge_pages: Some(huge_pages),
        };
        assert_eq!(
            spec.check_request(&FcRequest::put("/machine-config", &body)),
            Ok(())
        );
    }
    for (cache_type, io_engine) in [
        (CacheType::Unsafe, IoEngine::Sync),
        (CacheType::Writeback, IoEngine::Async),
    ] {
        let body = Drive {
            drive_id: "d".into(),
            is_root_device: false,
            path_on_host: "/d.ext4".into(),
            is_read_only: false,
            partuuid: Some("0eaa91a0-01".into()),
            cache_type: Some(cache_type),
            io_engine: Some(io_engine),
        };
        assert_eq!(
            spec.check_request(&FcRequest::put("/drives/d", &body)),
            Ok(())
        );
    }
    for action_type in [ActionType::InstanceStart, ActionType::SendCtrlAltDel] {
        let body = super::api::InstanceActionInfo { action_type };
        assert_eq!(
            spec.check_request(&FcRequest::put("/actions", &body)),
            Ok(())
        );
    }
}

fn errors_of(req: &FcRequest) -> String {
    ApiSpec::load().check_request(req).unwrap_err().join("; ")
}

fn drive_body() -> Value {
    json!({"drive_id": "d", "is_root_device": false, "path_on_host": "/d", "is_read_only": true})
}

#[test]
fn validator_catches_unknown_field() {
    let mut body = drive_body();
    body["read_only"] = json!(true);
    let e = errors_of(&put("/drives/d", body));
    assert!(e.contains("unknown field read_only"), "{e}");
    // Also nested: `vsock_id` is known, `id` is not.
    let e = errors_of(&put(
        "/vsock",
        json!({"guest_cid": 3, "uds_path": "/v", "id": "x"}),
    ));
    assert!(e.contains("unknown field id"), "{e}");
}

#[test]
fn validator_catches_missing_required_field() {
    let e = errors_of(&put("/boot-source", json!({"boot_args": "console=ttyS0"})));
    assert!(
        e.contains("missing required field kernel_image_path"),
        "{e}"
    );
    let e = errors_of(&put("/machine-config", json!({"vcpu_count": 1})));
    assert!(e.contains("missing required field mem_size_mib"), "{e}");
}

#[test]
fn validator_catches_wrong_type() {
    let e = errors_of(&put(
        "/machine-config",
        json!({"vcpu_count": "2", "mem_size_mib": 128}),
    ));
    assert!(e.contains("body.vcpu_count: expected integer"), "{e}");
    let mut body = drive_body();
    body["is_read_only"] = json!("yes");
    let e = errors_of(&put("/drives/d", body));
    assert!(e.contains("expected boolean"), "{e}");
    // A null is never sent: it fails the type check.
    let e = errors_of(&put(
        "/boot-source",
        json!({"kernel_image_path": "/k", "initrd_path": null}),
    ));
    assert!(
        e.contains("body.initrd_path: expected string, got null"),
        "{e}"
    );
    let e = errors_of(&put(
        "/machine-config",
        json!({"vcpu_count": 1.5, "mem_size_mib": 128}),
    ));
    assert!(e.contains("expected integer"), "{e}");
}

#[test]
fn validator_catches_enum_and_bounds() {
    let e = errors_of(&put("/actions", json!({"action_type": "Reboot"})));
    assert!(e.contains("\"Reboot\" is not one of"), "{e}");
    let e = errors_of(&put("/vsock", json!({"guest_cid": 2, "uds_path": "/v"})));
    assert!(e.contains("below the minimum"), "{e}");
    let e = errors_of(&put(
        "/machine-config",
        json!({"vcpu_count": 0, "mem_size_mib": 128}),
    ));
    assert!(e.contains("below the minimum"), "{e}");
    let e = errors_of(&put(
        "/machine-config",
        json!({"vcpu_count": 33, "mem_size_mib": 128}),
    ));
    assert!(e.contains("above the maximum"), "{e}");
}

#[test]
fn validator_catches_wrong_path_and_method() {
    let e = errors_of(&put("/drive/d", drive_body()));
    assert!(e.contains("no path in the spec matches /drive/d"), "{e}");
    let e = errors_of(&put("/drives", drive_body()));
    assert!(e.contains("no path in the spec matches /drives"), "{e}");
    let e = errors_of(&put("/drives/", drive_body()));
    assert!(e.contains("no path in the spec matches"), "{e}");
    let e = errors_of(&FcRequest::get("/logger"));
    assert!(e.contains("/logger has no get operation"), "{e}");
    let e = errors_of(&put("/", json!({})));
    assert!(e.contains("/ has no put operation"), "{e}");
}

#[test]
fn validator_catches_body_mismatch() {
    let e = errors_of(&FcRequest {
        method: super::api::Method::Put,
        path: "/actions".into(),
        body: None,
    });
    assert!(e.contains("/actions requires a body"), "{e}");
    let mut describe = plan::describe_request();
    describe.body = Some(json!({}));
    let e = errors_of(&describe);
    assert!(e.contains("/ takes no body"), "{e}");
}

#[test]
fn validator_reports_unresolvable_refs() {
    let spec = ApiSpec::load();
    let e = spec
        .check_definition("NoSuchThing", &json!({}))
        .unwrap_err();
    assert!(e[0].contains("missing definition NoSuchThing"), "{e:?}");
}
