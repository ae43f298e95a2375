//! Named stages of an operation, timed and logged: the `stages` a VM
//! reports and the `stage` events in the daemon log.

use std::sync::Arc;
use std::time::Instant;

use crate::progress::Progress;
use crate::vm::Stage;

/// Times the stages of one operation (`vm.create`, `vm.start`, ...).
#[derive(Debug)]
pub struct Operation {
    kind: &'static str,
    started: Instant,
    last: Instant,
    stages: Vec<Stage>,
    progress: Option<Arc<dyn Progress>>,
}

impl std::fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Receives every finished stage (`Some(name)`) and operation (`None`),
/// with its operation's kind, wall time and, for an operation, whether it
/// failed: the daemon's metrics.
pub type Observer =
    Arc<dyn Fn(&'static str, Option<&str>, std::time::Duration, bool) + Send + Sync>;

static OBSERVER: std::sync::OnceLock<Observer> = std::sync::OnceLock::new();

/// Sets the process's observer (the first one set stays).
pub fn observe_with(observer: Observer) {
    let _ = OBSERVER.set(observer);
}

/// The kind of a VM's create; its stages are also kept as `create_stages`.
pub const VM_CREATE: &str = "vm.create";

impl Operation {
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn begin(kind: &'static str) -> Self {
        let now = Instant::now();
        tracing::info!(op = kind, "operation started");
        Operation {
            kind,
            started: now,
            last: now,
            stages: Vec::new(),
            progress: None,
        }
    }

    /// Also tells `progress` when each stage begins.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Where this operation's progress goes (nowhere when unwatched).
    pub fn progress(&self) -> &dyn Progress {
        match &self.progress {
            Some(progress) => progress.as_ref(),
            None => &crate::progress::NoProgress,
        }
    }

    /// Announces the stage about to run (to a watching client).
    pub fn next(&self, name: &str) {
        if let Some(progress) = &self.progress {
            progress.stage(name);
        }
    }

    /// Ends the current stage, naming it, and logs its wall time.
    pub fn stage(&mut self, name: &str) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last);
        let elapsed_ms = elapsed.as_millis() as u64;
        self.last = now;
        tracing::info!(op = self.kind, stage = name, elapsed_ms, "stage done");
        if let Some(observe) = OBSERVER.get() {
            observe(self.kind, Some(name), elapsed, false);
        }
        self.stages.push(Stage {
            name: name.to_string(),
            elapsed_ms,
        });
    }

    /// Records a stage measured elsewhere (inside the guest, say) without
    /// moving this operation's clock.
    pub fn record(&mut self, name: &str, elapsed_ms: u64) {
        tracing::info!(op = self.kind, stage = name, elapsed_ms, "stage reported");
        self.stages.push(Stage {
            name: name.to_string(),
            elapsed_ms,
        });
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Logs the outcome and the total wall time.
    pub fn finish(&self, outcome: Result<(), &dyn std::fmt::Display>) {
        let total_ms = self.started.elapsed().as_millis() as u64;
        if let Some(observe) = OBSERVER.get() {
            observe(self.kind, None, self.started.elapsed(), outcome.is_err());
        }
        match outcome {
            Ok(()) => tracing::info!(op = self.kind, total_ms, "operation done"),
            Err(err) => tracing::warn!(op = self.kind, total_ms, error = %err, "operation failed"),
        }
    }
}
