//! Lifecycle tests of `Banger` over in-tree fakes of the VMM, the agent
//! link and capabilities: hook order, reverse cleanup after a failed
//! start, the stalled stage in errors, removal of failed creates,
//! capability refusals, requested addresses and the kept create stages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::*;
use crate::agent::{AgentLink, AgentLinkError, AgentReady, ExecChunk};
use crate::capability::{Capability, CapabilityError, Refusal, VmContext};
use crate::clock::SystemClock;
use crate::memory_store::MemoryStore;
use crate::resolve::StoredImages;
use crate::spec::VmSpec;
use crate::vmm::{MachineSpec, Vmm, VmmError, VmmHandle, VmmStatus};

pub(super) type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, event: impl Into<String>) {
    log.lock().unwrap().push(event.into());
}

/// What the fake VMM's restore refuses to load.
pub(super) const STALE_STATE: &[u8] = b"saved by another vmm";

/// What the fake VMM's restore takes its time over.
pub(super) const SLOW_STATE: &[u8] = b"slow to load";

/// FAKE: a VMM that records what it is asked and boots nothing.
struct FakeVmm {
    log: Log,
    /// What `status` answers: the VMM process lives.
    alive: Arc<std::sync::atomic::AtomicBool>,
    /// Keeps memory in a file of its own at every save and cannot boot
    /// into a memory file (as Firecracker); else as QEMU.
    memory_apart: bool,
}

#[async_trait]
impl Vmm for FakeVmm {
    fn kind(&self) -> &'static str {
        "qemu"
    }
    async fn start(&self, spec: &MachineSpec) -> Result<VmmHandle, VmmError> {
        push(&self.log, "vmm.start");
        Ok(VmmHandle {
            kind: "qemu".into(),
            pid: 4242,
            start_ticks: 1,
            control_socket: spec.run_dir.join("qmp.sock"),
            agent_socket: spec.agent.socket.clone(),
        })
    }
    async fn stop(&self, _handle: &VmmHandle, grace: Duration) -> Result<(), VmmError> {
        push(&self.log, format!("vmm.stop grace={}s", grace.as_secs()));
        Ok(())
    }
    async fn kill(&self, _handle: &VmmHandle) -> Result<(), VmmError> {
        push(&self.log, "vmm.kill");
        Ok(())
    }
    fn has_exited(&self, _handle: &VmmHandle) -> bool {
        !self.alive.load(std::sync::atomic::Ordering::SeqCst)
    }
    async fn status(&self, _handle: &VmmHandle) -> VmmStatus {
        if self.alive.load(std::sync::atomic::Ordering::SeqCst) {
            VmmStatus::Running
        } else {
            VmmStatus::Exited
        }
    }
    fn can_snapshot(&self) -> bool {
        true
    }
    async fn pause(&self, _handle: &VmmHandle) -> Result<(), VmmError> {
        push(&self.log, "vmm.pause");
        Ok(())
    }
    async fn resume(&self, _handle: &VmmHandle) -> Result<(), VmmError> {
        push(&self.log, "vmm.resume");
        Ok(())
    }
    async fn save(
        &self,
        _handle: &VmmHandle,
        state: &std::path::Path,
        memory: &std::path::Path,
        on_memory_file: bool,
    ) -> Result<bool, VmmError> {
        push(&self.log, "vmm.save");
        std::fs::write(state, b"machine").map_err(|e| VmmError::Control(e.to_string()))?;
        if self.memory_apart {
            std::fs::write(memory, b"memory").map_err(|e| VmmError::Control(e.to_string()))?;
        }
        Ok(on_memory_file || self.memory_apart)
    }
    fn boots_into_memory_file(&self) -> bool {
        !self.memory_apart
    }
    async fn restore(
        &self,
        spec: &MachineSpec,
        state: &std::path::Path,
    ) -> Result<VmmHandle, VmmError> {
        let shared = spec.memory_file.as_ref().map(|m| m.shared);
        // A slow restore: it says when it began and when it ended, and
        // whether the state it restores from was still there then.
        if std::fs::read(state).is_ok_and(|saved| saved == SLOW_STATE) {
            push(&self.log, "vmm.restore slow began");
            tokio::time::sleep(Duration::from_millis(300)).await;
            push(
                &self.log,
                format!("vmm.restore slow ended state={}", state.exists()),
            );
        }
        // A state another VMM version saved does not load.
        if std::fs::read(state).is_ok_and(|saved| saved == STALE_STATE) {
            push(&self.log, "vmm.restore failed");
            return Err(VmmError::Boot {
                message: "the saved machine does not load".into(),
                log: Vec::new(),
            });
        }
        push(
            &self.log,
            format!(
                "vmm.restore memory_file={shared:?} state={}",
                state.exists()
            ),
        );
        self.start(spec).await.inspect(|_| {
            // `start` logged too: take that line back.
            self.log.lock().unwrap().pop();
        })
    }
}

/// FAKE: an agent that is ready at once and powers off when asked
/// (unless told to fail), recording it.
struct FakeAgent {
    log: Log,
    refuse_shutdown: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl AgentLink for FakeAgent {
    async fn wait_ready(
        &self,
        _handle: &VmmHandle,
        _serial_log: &std::path::Path,
        _timeout: Duration,
    ) -> Result<AgentReady, AgentLinkError> {
        Ok(AgentReady::default())
    }
    async fn shutdown(
        &self,
        _handle: &VmmHandle,
        _timeout: Duration,
    ) -> Result<(), AgentLinkError> {
        push(&self.log, "agent.shutdown");
        if self
            .refuse_shutdown
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(AgentLinkError::Failed("the guest did not answer".into()));
        }
        Ok(())
    }
    async fn exec(
        &self,
        _handle: &VmmHandle,
        argv: Vec<String>,
        _context: crate::agent::ExecContext,
        _stdin: Option<Vec<u8>>,
        out: mpsc::Sender<ExecChunk>,
    ) -> Result<(), AgentLinkError> {
        push(&self.log, format!("agent.exec {}", argv.join(" ")));
        let _ = out
            .send(ExecChunk::Exit {
                code: Some(0),
                signal: None,
            })
            .await;
        Ok(())
    }
    async fn identity(
        &self,
        _handle: &VmmHandle,
        identity: banger_proto::agent::Identity,
    ) -> Result<(), AgentLinkError> {
        push(
            &self.log,
            format!(
                "agent.identity {} {}",
                identity.cmdline, identity.machine_id
            ),
        );
        Ok(())
    }
}

/// FAKE: a capability that records its hooks and fails where told.
pub(super) struct FakeCap {
    name: &'static str,
    log: Log,
    fail_prepare: bool,
    ready_stage: Option<&'static str>,
    fail_post_start: bool,
    refuse_nat: bool,
    pub(super) fail_save: bool,
}

impl FakeCap {
    pub(super) fn new(name: &'static str, log: &Log) -> FakeCap {
        FakeCap {
            name,
            log: log.clone(),
            fail_prepare: false,
            ready_stage: None,
            fail_post_start: false,
            refuse_nat: false,
            fail_save: false,
        }
    }
    fn fail(&self, message: &str) -> CapabilityError {
        CapabilityError {
            capability: self.name,
            message: message.into(),
        }
    }
}

#[async_trait]
impl Capability for FakeCap {
    fn name(&self) -> &'static str {
        self.name
    }
    fn prepare_stage(&self) -> &'static str {
        self.name
    }
    fn check_spec(&self, spec: &VmSpec) -> Result<(), Refusal> {
        if self.refuse_nat && spec.nat {
            return Err(Refusal {
                message: "nat needs an uplink".into(),
                hint: "add a default route".into(),
            });
        }
        Ok(())
    }
    async fn prepare_host(
        &self,
        ctx: &VmContext,
        _config: &crate::capability::GuestConfig,
    ) -> Result<(), CapabilityError> {
        push(&self.log, format!("{}.prepare", self.name));
        if let Some(dir) = &ctx.restore_from {
            let saved = dir.join(self.name).exists();
            push(
                &self.log,
                format!("{}.from_snapshot saved={saved}", self.name),
            );
        }
        if self.fail_prepare {
            return Err(self.fail("no room"));
        }
        Ok(())
    }
    async fn post_start(&self, _ctx: &VmContext) -> Result<(), CapabilityError> {
        push(&self.log, format!("{}.post_start", self.name));
        if self.fail_post_start {
            return Err(self.fail("sshd did not answer; last console lines: boot"));
        }
        Ok(())
    }
    fn ready_stage(&self) -> Option<&'static str> {
        self.ready_stage
    }
    async fn cleanup(&self, _ctx: &VmContext) {
        push(&self.log, format!("{}.cleanup", self.name));
    }
    async fn remove(&self, _ctx: &VmContext) {
        push(&self.log, format!("{}.remove", self.name));
    }
    async fn save(&self, _ctx: &VmContext, dir: &std::path::Path) -> Result<(), CapabilityError> {
        push(&self.log, format!("{}.save", self.name));
        std::fs::write(dir.join(self.name), b"disk").unwrap();
        if self.fail_save {
            return Err(self.fail("no space left on device"));
        }
        Ok(())
    }
}

pub(super) fn booting(capabilities: Vec<FakeCap>, log: &Log) -> Banger {
    booting_with(capabilities, log, Arc::new(true.into()), false)
}

/// Over a VMM that keeps memory apart, as Firecracker does.
pub(super) fn booting_memory_apart(capabilities: Vec<FakeCap>, log: &Log) -> Banger {
    booting_with(capabilities, log, Arc::new(true.into()), true)
}

fn booting_with(
    capabilities: Vec<FakeCap>,
    log: &Log,
    alive: Arc<std::sync::atomic::AtomicBool>,
    memory_apart: bool,
) -> Banger {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    store.upsert_image(&super::tests::image("base")).unwrap();
    let state = tempfile_dir();
    let settings = Settings::new(
        BridgeNet::parse("172.29.0.1/24").unwrap(),
        SpecDefaults {
            image: "base".into(),
            ..SpecDefaults::default()
        },
        "qemu",
        &state.join("state"),
        &state.join("run"),
    );
    Banger::new(
        store.clone(),
        Arc::new(StoredImages::new(store)),
        Arc::new(SystemClock),
        settings,
    )
    .with_runtime(Runtime {
        vmm: Arc::new(FakeVmm {
            log: log.clone(),
            alive,
            memory_apart,
        }),
        agents: Arc::new(FakeAgent {
            log: log.clone(),
            refuse_shutdown: refuse_shutdown(),
        }),
        capabilities: capabilities
            .into_iter()
            .map(|c| Arc::new(c) as Arc<dyn Capability>)
            .collect(),
    })
}

/// A fresh directory under the system temp dir (the flows create and
/// remove per-VM directories under it).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("banger-core-test-{}", crate::vm::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(super) fn named(name: &str) -> CreateParams {
    CreateParams {
        name: Some(name.into()),
        ..Default::default()
    }
}

pub(super) fn events(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn a_failed_prepare_cleans_up_what_was_prepared_in_reverse() {
    let log = Log::default();
    let mut second = FakeCap::new("disk", &log);
    second.fail_prepare = true;
    let caps = vec![
        FakeCap::new("net", &log),
        second,
        FakeCap::new("work", &log),
    ];
    let b = booting(caps, &log);
    let err = b.create_vm(named("web")).await.unwrap_err();
    assert!(matches!(err, ServiceError::Boot { .. }), "{err}");
    assert_eq!(err.to_string(), "vm web failed to start: disk: no room");
    assert_eq!(
        events(&log),
        ["net.prepare", "disk.prepare", "disk.cleanup", "net.cleanup"],
        "work was never prepared, the vmm never started"
    );
    let vm = b.find_vm("web").unwrap();
    assert_eq!(vm.state, VmState::Failed);
    assert_eq!(vm.last_error.as_deref(), Some("disk: no room"));
    assert!(vm.handle.is_none());
}

#[tokio::test]
async fn a_stalled_ready_stage_is_named_and_the_vmm_is_killed() {
    let log = Log::default();
    let mut ssh = FakeCap::new("ssh", &log);
    ssh.ready_stage = Some("ssh_ready");
    ssh.fail_post_start = true;
    let b = booting(vec![FakeCap::new("net", &log), ssh], &log);
    let err = b.create_vm(named("web")).await.unwrap_err().to_string();
    assert!(
        err.starts_with("vm web failed to start: stage ssh_ready stalled after "),
        "{err}"
    );
    assert!(
        err.ends_with("ssh: sshd did not answer; last console lines: boot"),
        "{err}"
    );
    assert_eq!(
        events(&log),
        [
            "net.prepare",
            "ssh.prepare",
            "vmm.start",
            "net.post_start",
            "ssh.post_start",
            "vmm.kill",
            "ssh.cleanup",
            "net.cleanup"
        ]
    );
    let vm = b.find_vm("web").unwrap();
    assert_eq!(vm.state, VmState::Failed);
    let stages: Vec<&str> = vm.create_stages.iter().map(|s| s.name.as_str()).collect();
    assert!(stages.contains(&"vmm_start"), "{stages:?}");
    assert!(
        !stages.contains(&"ssh_ready"),
        "it never finished: {stages:?}"
    );
}

#[tokio::test]
async fn a_failed_create_asked_to_remove_itself_leaves_nothing() {
    let log = Log::default();
    let mut ssh = FakeCap::new("ssh", &log);
    ssh.ready_stage = Some("ssh_ready");
    ssh.fail_post_start = true;
    let b = booting(vec![ssh], &log);
    let err = b
        .create_vm(CreateParams {
            remove_on_failure: true,
            ..named("web")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Boot { .. }), "{err}");
    assert!(b.list_vms().unwrap().is_empty());
    assert_eq!(
        events(&log),
        [
            "ssh.prepare",
            "vmm.start",
            "ssh.post_start",
            "vmm.kill",
            "ssh.cleanup",
            "ssh.remove"
        ]
    );
    // The name is free again.
    b.create_vm(CreateParams {
        no_start: true,
        ..named("web")
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_capability_refusal_is_unprocessable_and_records_nothing() {
    let log = Log::default();
    let mut net = FakeCap::new("net", &log);
    net.refuse_nat = true;
    let b = booting(vec![net], &log);
    let err = b
        .create_vm(CreateParams {
            nat: true,
            ..named("web")
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unprocessable);
    assert_eq!(err.to_string(), "nat needs an uplink");
    assert_eq!(err.hint().as_deref(), Some("add a default route"));
    assert!(b.list_vms().unwrap().is_empty());
    assert!(events(&log).is_empty());

    // Turning it on later is refused the same way, and stored as it was.
    b.create_vm(named("web")).await.unwrap();
    let err = b.set_nat("web", true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unprocessable);
    assert!(!b.find_vm("web").unwrap().spec.nat);
}

#[tokio::test]
async fn a_requested_address_must_be_a_free_guest_address_of_the_prefix() {
    let log = Log::default();
    let b = booting(vec![], &log);
    let at = |name: &str, ip: &str| CreateParams {
        guest_ip: Some(ip.into()),
        no_start: true,
        ..named(name)
    };
    let vm = b.create_vm(at("fixed", "172.29.0.77")).await.unwrap();
    assert_eq!(vm.guest_ip.to_string(), "172.29.0.77");
    assert_eq!(vm.vsock_cid, u32::from(vm.guest_ip));
    let cases = [
        ("10.0.0.5", ErrorKind::Unprocessable, "address 10.0.0.5 is outside the bridge prefix 172.29.0.0/24"),
        ("172.29.0.1", ErrorKind::Unprocessable, "address 172.29.0.1 is the bridge's own, or the network or broadcast address of 172.29.0.0/24"),
        ("172.29.0.255", ErrorKind::Unprocessable, "address 172.29.0.255 is the bridge's own, or the network or broadcast address of 172.29.0.0/24"),
        ("172.29.0.77", ErrorKind::Conflict, "address 172.29.0.77 is taken by vm fixed"),
        ("172.29.0", ErrorKind::InvalidInput, "invalid guest address \"172.29.0\": expected an IPv4 address like 172.29.0.10"),
    ];
    for (ip, kind, message) in cases {
        let err = b.create_vm(at("other", ip)).await.unwrap_err();
        assert_eq!((err.kind(), err.to_string().as_str()), (kind, message));
        assert!(err.hint().is_some(), "{err} has no hint");
    }
    assert_eq!(b.list_vms().unwrap().len(), 1, "nothing else was recorded");
    // Without --ip the next free address is still the lowest one.
    let next = b
        .create_vm(CreateParams {
            guest_ip: None,
            ..at("next", "")
        })
        .await
        .unwrap();
    assert_eq!(next.guest_ip.to_string(), "172.29.0.2");
}

#[tokio::test]
async fn a_start_keeps_the_create_stages() {
    let log = Log::default();
    let b = booting(vec![FakeCap::new("net", &log)], &log);
    let vm = b.create_vm(named("web")).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    let created: Vec<String> = vm.create_stages.iter().map(|s| s.name.clone()).collect();
    assert!(
        created.contains(&"resolve_image".to_string()),
        "{created:?}"
    );
    assert!(created.contains(&"reserve_vm".to_string()), "{created:?}");
    b.stop_vm("web", false).await.unwrap();
    b.start_vm("web").await.unwrap();
    let vm = b.find_vm("web").unwrap();
    let started: Vec<String> = vm.stages.iter().map(|s| s.name.clone()).collect();
    assert!(!started.contains(&"reserve_vm".to_string()), "{started:?}");
    assert!(started.contains(&"vmm_start".to_string()), "{started:?}");
    let kept: Vec<String> = vm.create_stages.iter().map(|s| s.name.clone()).collect();
    assert_eq!(kept, created);
    b.delete_vm("web", true).await.unwrap();
}

#[tokio::test]
async fn reconcile_adopts_the_living_stops_the_dead_and_fails_the_half_booted() {
    let log = Log::default();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b = booting_with(vec![FakeCap::new("net", &log)], &log, alive.clone(), false);
    for name in ["up", "gone", "booting"] {
        b.create_vm(named(name)).await.unwrap();
    }
    let mut first = b.reconcile().await.unwrap();
    first.adopted.sort();
    assert_eq!(
        first,
        Reconciled {
            adopted: vec!["booting".into(), "gone".into(), "up".into()],
            ..Reconciled::default()
        }
    );
    // The daemon died while "booting" was starting, and the VMMs of
    // "gone" and "booting" died with the host's patience.
    let mut half = b.find_vm("booting").unwrap();
    half.state = VmState::Starting;
    b.store.update_vm(&half).unwrap();
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    log.lock().unwrap().clear();
    let report = b.reconcile().await.unwrap();
    assert_eq!(report.failed, ["booting"]);
    assert_eq!(report.stopped.len(), 2, "{report:?}");
    let half = b.find_vm("booting").unwrap();
    assert_eq!(half.state, VmState::Failed);
    assert_eq!(half.last_error.as_deref(), Some(BOOT_INTERRUPTED));
    assert!(half.handle.is_none());
    assert_eq!(b.find_vm("gone").unwrap().state, VmState::Stopped);
    let cleaned = events(&log).iter().filter(|e| *e == "net.cleanup").count();
    assert_eq!(
        cleaned,
        3,
        "every dead vm released what it held: {:?}",
        events(&log)
    );
}

#[tokio::test]
async fn a_vmm_that_exits_on_its_own_is_reaped_and_its_vm_stopped() {
    let log = Log::default();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b = booting_with(vec![FakeCap::new("net", &log)], &log, alive.clone(), false);
    b.create_vm(named("web")).await.unwrap();
    assert!(b.reap_exited().await.is_empty(), "a living vmm stays");
    assert_eq!(b.find_vm("web").unwrap().state, VmState::Running);
    // The guest powered off, or its VMM crashed.
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    log.lock().unwrap().clear();
    assert_eq!(b.reap_exited().await, ["web"]);
    let vm = b.find_vm("web").unwrap();
    assert_eq!(vm.state, VmState::Stopped);
    assert!(vm.handle.is_none());
    assert!(
        events(&log).contains(&"net.cleanup".to_string()),
        "{:?}",
        events(&log)
    );
    assert!(b.reap_exited().await.is_empty(), "reaped once");
}

#[tokio::test]
async fn reconcile_handles_each_vm_alone() {
    let log = Log::default();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b = booting_with(vec![FakeCap::new("net", &log)], &log, alive.clone(), false);
    for name in ["broken", "gone"] {
        b.create_vm(named(name)).await.unwrap();
    }
    // "broken" names an image that is not there: it cannot be halted.
    let mut broken = b.find_vm("broken").unwrap();
    broken.image_id = "no-such-image".into();
    b.store.update_vm(&broken).unwrap();
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    let report = b.reconcile().await.unwrap();
    assert_eq!(report.stopped, ["gone"], "{report:?}");
    assert_eq!(report.unhandled.len(), 1, "{report:?}");
    assert!(report.unhandled[0].starts_with("broken: "), "{report:?}");
    assert_eq!(b.find_vm("gone").unwrap().state, VmState::Stopped);
}

thread_local! {
    /// What the next `booting` Banger's agent does on power-off.
    static REFUSE_SHUTDOWN: Arc<std::sync::atomic::AtomicBool> = Arc::default();
}

fn refuse_shutdown() -> Arc<std::sync::atomic::AtomicBool> {
    REFUSE_SHUTDOWN.with(Arc::clone)
}

#[tokio::test(flavor = "current_thread")]
async fn a_stop_asks_the_agent_first_then_gives_the_vmm_its_grace() {
    let log = Log::default();
    let b = booting(vec![], &log);
    b.create_vm(named("web")).await.unwrap();
    // What a stop asked of the agent and the VMM.
    let stop_events = |since: usize| -> Vec<String> {
        events(&log)[since..]
            .iter()
            .filter(|e| e.starts_with("agent.") || e.starts_with("vmm."))
            .cloned()
            .collect()
    };
    let since = events(&log).len();
    b.stop_vm("web", false).await.unwrap();
    let stop = stop_events(since);
    // The guest powers off through its agent; the VMM may take the grace.
    assert_eq!(stop, ["agent.shutdown", "vmm.stop grace=30s"]);

    // An agent that does not answer: the VMM's own stop, briefly.
    b.start_vm("web").await.unwrap();
    refuse_shutdown().store(true, std::sync::atomic::Ordering::SeqCst);
    let since = events(&log).len();
    b.stop_vm("web", false).await.unwrap();
    assert_eq!(stop_events(since), ["agent.shutdown", "vmm.stop grace=2s"]);

    // Forced: no agent, no power-off, killed at once.
    b.start_vm("web").await.unwrap();
    let since = events(&log).len();
    b.stop_vm("web", true).await.unwrap();
    assert_eq!(stop_events(since), ["vmm.kill"]);
    // A removal of a running VM too.
    b.start_vm("web").await.unwrap();
    let since = events(&log).len();
    b.delete_vm("web", true).await.unwrap();
    assert_eq!(stop_events(since), ["vmm.kill"]);
}
