//! Clean-up work started by a dropped upload (its multipart upload is
//! aborted on a task of its own) that must finish before the process exits:
//! when a signal stops a run, the command drops the run and then waits here,
//! so no unfinished upload is left to bill storage.

use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Remembers a clean-up task to wait for in [`finish`].
pub(crate) fn track(task: JoinHandle<()>) {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    pending.retain(|t| !t.is_finished());
    pending.push(task);
}

/// Waits up to `limit` for every tracked clean-up task; returns how many did
/// not finish in time.
pub async fn finish(limit: Duration) -> usize {
    let tasks: Vec<JoinHandle<()>> =
        std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    let deadline = tokio::time::Instant::now() + limit;
    let mut left = 0;
    for task in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            left += 1;
        }
    }
    left
}
