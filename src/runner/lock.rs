//! The run lock: two `subvault run`s of one config never overlap.
//!
//! An exclusive `flock` on `<lock dir>/run-<hash of the config path>.lock`; the
//! kernel drops it when the holder exits, however it exits, so a crashed run never
//! leaves a stale lock behind. Keyed by config so unrelated configs (tests, several
//! users) do not serialize each other.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::subvol_lock::DEFAULT_LOCK_DIR;

/// Why the run lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    /// Another run holds it.
    #[error("another subvault run with this config is in progress (lock {} held{holder}); this run does nothing", .path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// ` by pid N` when the holder wrote its pid.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot take the run lock {}: {error}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The system error.
        error: io::Error,
    },
}

/// Held for the whole run; released on drop (or process exit).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// The lock file for a config.
pub fn lock_path(config_path: &Path) -> PathBuf {
    let dir = std::env::var_os("SUBVAULT_LOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK_DIR));
    let canonical =
        std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    dir.join(format!("run-{}.lock", hex::encode(&digest[..8])))
}

impl RunLock {
    /// Takes the lock without waiting.
    pub fn acquire(config_path: &Path) -> Result<RunLock, RunLockError> {
        let path = lock_path(config_path);
        let io_err = |error| RunLockError::Io {
            path: path.clone(),
            error,
        };
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(" by pid {pid}"))
                    .unwrap_or_default();
                return Err(RunLockError::Busy { path, holder });
            }
            return Err(io_err(err));
        }
        // Best effort: the pid helps the user find the other run.
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_config_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY (test): the variable is only read by this module's lock_path.
        std::env::set_var("SUBVAULT_LOCK_DIR", dir.path());
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, "").unwrap();
        let first = RunLock::acquire(&cfg).unwrap();
        let err = RunLock::acquire(&cfg).unwrap_err();
        assert!(matches!(err, RunLockError::Busy { .. }));
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let other = dir.path().join("other.yaml");
        std::fs::write(&other, "").unwrap();
        let _unrelated = RunLock::acquire(&other).expect("another config is not blocked");
        drop(first);
        RunLock::acquire(&cfg).expect("free again after drop");
    }
}
