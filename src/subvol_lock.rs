//! Per-subvolume advisory locks, so that a send and a dedupe of the same
//! subvolume never overlap (the kernel would fail one of them with EAGAIN),
//! across threads and processes alike.
//!
//! A lock is an exclusive `flock` on `/run/subvault/locks/<uuid>.lock`
//! (directory created with mode 0700; `SUBVAULT_LOCK_DIR` overrides it, for
//! tests). flock belongs to the open file, so two locks taken in one process
//! exclude each other too, and the kernel drops a lock when its holder dies.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Where locks live unless `SUBVAULT_LOCK_DIR` says otherwise.
pub const DEFAULT_LOCK_DIR: &str = "/run/subvault/locks";

/// How often a waiting [`SubvolLock::exclusive`] retries.
const POLL: Duration = Duration::from_millis(50);

/// Taking a subvolume lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file or its directory could not be created or locked.
    #[error("cannot {action} {}: {error}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The lock file or directory.
        path: PathBuf,
        /// The system error.
        error: io::Error,
    },
    /// Someone else holds the lock.
    #[error(
        "subvolume {uuid} is busy: another send or dedupe holds {} (waited {waited:?}); \
         try again when it is done",
        .path.display()
    )]
    Busy {
        /// The subvolume.
        uuid: Uuid,
        /// The lock file.
        path: PathBuf,
        /// How long we waited before giving up.
        waited: Duration,
    },
}

/// An exclusive lock on one subvolume, released on drop.
#[derive(Debug)]
pub struct SubvolLock {
    _file: File,
    path: PathBuf,
}

impl SubvolLock {
    /// Takes the exclusive lock for the subvolume `uuid`. `wait: None` tries
    /// once; `Some(d)` retries for up to `d`. Blocks the calling thread while
    /// waiting (use `spawn_blocking` from async code).
    pub fn exclusive(uuid: Uuid, wait: Option<Duration>) -> Result<SubvolLock, LockError> {
        let dir = lock_dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|error| LockError::Io {
                action: "create the lock directory",
                path: dir.clone(),
                error,
            })?;
        let path = dir.join(format!("{uuid}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|error| LockError::Io {
                action: "open the lock file",
                path: path.clone(),
                error,
            })?;
        let started = Instant::now();
        let deadline = wait.map(|w| started + w);
        loop {
            // SAFETY: flock on a valid fd.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(SubvolLock { _file: file, path });
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EWOULDBLOCK) => {}
                Some(libc::EINTR) => continue,
                _ => {
                    return Err(LockError::Io {
                        action: "lock",
                        path,
                        error,
                    })
                }
            }
            let now = Instant::now();
            match deadline {
                Some(d) if now < d => std::thread::sleep(POLL.min(d - now)),
                _ => {
                    return Err(LockError::Busy {
                        uuid,
                        path,
                        waited: now - started,
                    })
                }
            }
        }
    }

    /// The lock file this lock holds.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `SUBVAULT_LOCK_DIR` or [`DEFAULT_LOCK_DIR`].
fn lock_dir() -> PathBuf {
    std::env::var_os("SUBVAULT_LOCK_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test sets the env var for the whole process; all cases live in it
    // so parallel tests cannot race on it.
    #[test]
    fn locks_exclude_release_on_drop_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("locks");
        std::env::set_var("SUBVAULT_LOCK_DIR", &lock_dir);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));

        let held = SubvolLock::exclusive(a, None).unwrap();
        assert_eq!(held.path(), lock_dir.join(format!("{a}.lock")));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&lock_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let busy = SubvolLock::exclusive(a, None).unwrap_err();
        assert!(
            matches!(busy, LockError::Busy { uuid, .. } if uuid == a),
            "{busy}"
        );
        let t = Instant::now();
        let busy = SubvolLock::exclusive(a, Some(Duration::from_millis(200))).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(200), "{busy}");

        let other = SubvolLock::exclusive(b, None).unwrap();

        let waiter = std::thread::spawn(move || {
            SubvolLock::exclusive(a, Some(Duration::from_secs(10))).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        waiter.join().unwrap().unwrap();
        drop(other);
        std::env::remove_var("SUBVAULT_LOCK_DIR");
    }
}
