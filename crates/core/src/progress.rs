//! Progress of long operations (image build, pull, VM create): the flows
//! and host code report named stages and byte counts through `Progress`;
//! front-ends turn them into live output (the API streams them as events).

/// Receives the steps of one long operation as they happen. Calls are
/// cheap and never block on the receiver.
pub trait Progress: Send + Sync {
    /// A named stage begins (`debootstrap`, `kernel`, `download`, ...);
    /// the previous stage, if any, ends.
    fn stage(&self, name: &str);
    /// Bytes done within the current stage, out of `total` when known.
    fn bytes(&self, _done: u64, _total: Option<u64>) {}
    /// One line of detail (for example a tool's last output line).
    fn note(&self, _line: &str) {}
}

/// Discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str) {}
}

/// Logs stages at info level (for work no client is watching, such as an
/// auto-pull during create).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn stage(&self, name: &str) {
        tracing::info!(stage = name, "progress");
    }
}
