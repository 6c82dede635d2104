//! Writing received data to disk while the restore goes on.
//!
//! `btrfs receive` writes into the page cache. On a machine with plenty of RAM
//! nothing of a restore of a few GiB reaches the disk before the final sync (the
//! kernel starts background writeback only at `dirty_background_ratio`, 10% of
//! memory, or after 30 s), so the restore would first spend its CPU on receiving
//! and then wait, idle, for the whole of it to be written. [`Writeback`] calls
//! `syncfs` on the target filesystem over and over from its own thread while the
//! receive runs: the disk writes what has been received so far while the CPU
//! decodes the rest, and the final sync only has the last moments left. It also
//! keeps the dirty memory of a large restore small.
//!
//! Measured on 1 GiB (full + monthly + daily from the local remote, loop-device
//! btrfs): total 5.0-5.9 s with a final sync of 2.1-2.5 s; with this, 4.4-4.9 s
//! and a final sync of 0.0-0.2 s.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Pause between the end of one `syncfs` and the next. Short enough that
/// little is left for the final sync, long enough not to commit a btrfs
/// transaction more often than the data warrants (a `syncfs` with nothing dirty
/// returns at once). When the disk is slower than the receive, `syncfs` itself
/// takes longer and paces the loop. With 1 s the final sync took 0.6-0.8 s
/// instead of 0.0-0.3 s in the restore benchmark.
const PAUSE: Duration = Duration::from_millis(300);

/// A thread that flushes the filesystem holding a directory until stopped.
/// Dropping it (on an error path) also stops the thread, after its current
/// `syncfs`, without waiting for it: the thread sees its channel close.
pub struct Writeback {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    /// Starts flushing the filesystem that holds `dir`. Best effort: when the
    /// directory cannot be opened nothing is started (the final sync of the
    /// restore still reports errors).
    pub fn start(dir: &Path) -> Writeback {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = File::open(dir).ok().and_then(|f| {
            std::thread::Builder::new()
                .name("subvault-writeback".into())
                .spawn(move || loop {
                    // First a pause: a restore that ends within it has only
                    // the final sync.
                    match stopped.recv_timeout(PAUSE) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        // Stopped, or the owner is gone.
                        _ => return,
                    }
                    // Errors show up again, and are reported, in the final sync.
                    let _ = nix::unistd::syncfs(&f);
                })
                .ok()
        });
        Writeback { stop, thread }
    }

    /// Stops the thread and waits for its last `syncfs` to return.
    pub fn stop(self) {
        let Writeback { stop, thread } = self;
        drop(stop);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_promptly_and_tolerates_a_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let w = Writeback::start(dir.path());
        assert!(w.thread.is_some());
        let t = std::time::Instant::now();
        w.stop();
        // Stopping wakes the thread out of its pause.
        assert!(t.elapsed() < Duration::from_secs(5));

        let w = Writeback::start(&dir.path().join("missing"));
        assert!(w.thread.is_none());
        w.stop();
    }
}
