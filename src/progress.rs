//! Progress of long work, as one interface every operation reports to.
//!
//! Operations (run, restore, dedupe) call these methods and never draw anything
//! themselves; `cli::progress` implements them once, as bars on a terminal and as
//! plain log lines under systemd. Every method has a no-op default, so an
//! operation that reports nothing, or a test, passes [`NoProgress`].
//! A leaf module: it imports nothing from subvault.

use std::sync::Arc;

/// Called with the bytes transferred so far (uploads report as parts complete).
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Receives progress of long work.
pub trait Progress: Send + Sync {
    /// A step worth one line of its own (e.g. "receiving 2/3: KEY (1.2 GiB)").
    fn note(&self, _line: &str) {}
    /// A phase of `total` bytes of work begins (0 when unknown).
    fn phase(&self, _name: &str, _total: u64) {}
    /// `bytes` more of the current phase are done.
    fn advance(&self, _bytes: u64) {}
    /// An upload of `key` starts; returns the callback for bytes uploaded so far.
    fn upload_started(&self, _key: &str, _description: &str) -> Option<ProgressFn> {
        None
    }
    /// The upload of `key` ended (successfully or not).
    fn upload_finished(&self, _key: &str) {}
    /// The work is over: whatever is still drawn goes away.
    fn finish(&self) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
