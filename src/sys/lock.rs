//! Advisory locks between subvault processes (and threads): the run lock, so
//! two `subvault run`s of one config never overlap, and per-subvolume locks, so
//! a send and a dedupe of the same subvolume never overlap (the kernel would
//! fail one of them with EAGAIN).
//!
//! Both are an exclusive `flock` on a file in the lock directory
//! (`/run/subvault/locks`, created with mode 0700; `SUBVAULT_LOCK_DIR`
//! overrides it, for tests): `run-<hash of the config path>.lock` and
//! `<subvolume uuid>.lock`. flock belongs to the open file, so two locks taken
//! in one process exclude each other too, and the kernel drops a lock when its
//! holder exits, however it exits: a crashed run never leaves a stale lock.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Where locks live unless `SUBVAULT_LOCK_DIR` says otherwise.
pub const DEFAULT_LOCK_DIR: &str = "/run/subvault/locks";

/// How often a waiting [`SubvolLock::exclusive`] retries.
const POLL: Duration = Duration::from_millis(50);

/// Taking a lock failed.
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
    /// Another run of the same config holds the run lock.
    #[error("another subvault run with this config is in progress (lock {} held{holder}); this run does nothing", .path.display())]
    RunBusy {
        /// The lock file.
        path: PathBuf,
        /// ` by pid N` when the holder wrote its pid.
        holder: String,
    },
    /// Another run (of another config) works on this source.
    #[error("another subvault run{holder} is working on source {name} (subvolume {uuid}), perhaps from another config file naming it; this source was skipped")]
    SourceBusy {
        /// The source's name in this config.
        name: String,
        /// Its subvolume uuid.
        uuid: Uuid,
        /// ` (pid N)` when the holder wrote its pid.
        holder: String,
    },
    /// Another command holds the browse cache.
    #[error("the browse cache is busy: another subvault restore --path, ls, mount or cache clean holds {} (waited {waited:?}); try again when it is done", .path.display())]
    CacheBusy {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// Someone else holds the subvolume's lock.
    #[error(
        "subvolume {uuid} is busy: another send or dedupe holds {} (waited {waited:?}); \
         try again when it is done",
        .path.display()
    )]
    SubvolBusy {
        /// The subvolume.
        uuid: Uuid,
        /// The lock file.
        path: PathBuf,
        /// How long we waited before giving up.
        waited: Duration,
    },
}

/// `SUBVAULT_LOCK_DIR` or [`DEFAULT_LOCK_DIR`].
fn lock_dir() -> PathBuf {
    std::env::var_os("SUBVAULT_LOCK_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK_DIR))
}

/// Opens (creating it and its directory) the lock file `name` in `dir`.
fn open_lock_file(dir: &Path, name: &str) -> Result<(File, PathBuf), LockError> {
    let dir = dir.to_path_buf();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|error| LockError::Io {
            action: "create the lock directory",
            path: dir.clone(),
            error,
        })?;
    let path = dir.join(name);
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
    Ok((file, path))
}

/// One non-blocking attempt: `Ok(Ok(lock))`, or `Ok(Err(file))` when another
/// holder has it (the file comes back for the next attempt).
fn try_lock(mut file: File, path: &Path) -> Result<Result<Flock<File>, File>, LockError> {
    loop {
        return match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Ok(lock)),
            Err((f, Errno::EWOULDBLOCK)) => Ok(Err(f)),
            Err((f, Errno::EINTR)) => {
                file = f;
                continue;
            }
            Err((_, e)) => Err(LockError::Io {
                action: "lock",
                path: path.to_path_buf(),
                error: e.into(),
            }),
        };
    }
}

/// Held for the whole run; released on drop (or process exit).
#[derive(Debug)]
pub struct RunLock {
    _lock: Flock<File>,
}

/// The run lock file for a config.
pub fn run_lock_path(config_path: &Path) -> PathBuf {
    lock_dir().join(run_lock_name(config_path))
}

fn run_lock_name(config_path: &Path) -> String {
    let canonical =
        std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    format!("run-{}.lock", hex::encode(&digest[..8]))
}

impl RunLock {
    /// Takes the run lock of `config_path` without waiting.
    pub fn acquire(config_path: &Path) -> Result<RunLock, LockError> {
        Self::acquire_in(&lock_dir(), config_path)
    }

    /// [`RunLock::acquire`] with the lock file in `dir`.
    pub fn acquire_in(dir: &Path, config_path: &Path) -> Result<RunLock, LockError> {
        let (file, path) = open_lock_file(dir, &run_lock_name(config_path))?;
        match try_lock(file, &path)? {
            Ok(mut lock) => {
                // Best effort: the pid helps the user find the other run.
                let _ = lock.set_len(0);
                let _ = write!(*lock, "{}", std::process::id());
                Ok(RunLock { _lock: lock })
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(" by pid {pid}"))
                    .unwrap_or_default();
                Err(LockError::RunBusy { path, holder })
            }
        }
    }
}

/// Held while a run works on one source subvolume, so two configs naming it
/// (snapshotting, uploading and pruning the same things) never run at once.
#[derive(Debug)]
pub struct SourceLock {
    _lock: Flock<File>,
}

impl SourceLock {
    /// Takes the lock of the source subvolume `uuid` (named `name`) without waiting.
    pub fn acquire(uuid: Uuid, name: &str) -> Result<SourceLock, LockError> {
        let (file, path) = open_lock_file(&lock_dir(), &format!("source-{uuid}.lock"))?;
        match try_lock(file, &path)? {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = write!(*lock, "{}", std::process::id());
                Ok(SourceLock { _lock: lock })
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                Err(LockError::SourceBusy {
                    name: name.to_string(),
                    uuid,
                    holder,
                })
            }
        }
    }
}

/// An exclusive lock on one subvolume, released on drop.
#[derive(Debug)]
pub struct SubvolLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl SubvolLock {
    /// Takes the exclusive lock for the subvolume `uuid`. `wait: None` tries
    /// once; `Some(d)` retries for up to `d`. Blocks the calling thread while
    /// waiting (use `spawn_blocking` from async code).
    pub fn exclusive(uuid: Uuid, wait: Option<Duration>) -> Result<SubvolLock, LockError> {
        Self::exclusive_in(&lock_dir(), uuid, wait)
    }

    /// [`SubvolLock::exclusive`] with the lock file in `dir`.
    pub fn exclusive_in(
        dir: &Path,
        uuid: Uuid,
        wait: Option<Duration>,
    ) -> Result<SubvolLock, LockError> {
        let (mut file, path) = open_lock_file(dir, &format!("{uuid}.lock"))?;
        let started = Instant::now();
        let deadline = wait.map(|w| started + w);
        loop {
            file = match try_lock(file, &path)? {
                Ok(lock) => return Ok(SubvolLock { _lock: lock, path }),
                Err(file) => file,
            };
            let now = Instant::now();
            match deadline {
                Some(d) if now < d => std::thread::sleep(POLL.min(d - now)),
                _ => {
                    return Err(LockError::SubvolBusy {
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

/// An exclusive lock on the browse cache file `<image>.lock` (next to the
/// image, not in the lock directory: the cache is shared by every config), so
/// two `restore --path`, `ls`, `mount` or `cache clean` never receive into,
/// evict from or delete one cache at once. Released on drop.
#[derive(Debug)]
pub struct CacheLock {
    _lock: Flock<File>,
}

impl CacheLock {
    /// Takes the lock file `path`, waiting up to `wait` for another holder.
    pub fn acquire(path: &Path, wait: Duration) -> Result<CacheLock, LockError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (mut file, path) = open_lock_file(dir, &name)?;
        let started = Instant::now();
        loop {
            file = match try_lock(file, &path)? {
                Ok(mut lock) => {
                    let _ = lock.set_len(0);
                    let _ = write!(*lock, "{}", std::process::id());
                    return Ok(CacheLock { _lock: lock });
                }
                Err(file) => file,
            };
            if started.elapsed() >= wait {
                return Err(LockError::CacheBusy {
                    path,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The directory is passed in, never set through SUBVAULT_LOCK_DIR: setenv
    // while other test threads read the environment is undefined in glibc.
    #[test]
    fn subvolume_locks_exclude_release_on_drop_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("locks");
        let lock = |uuid, wait| SubvolLock::exclusive_in(&lock_dir, uuid, wait);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));

        let held = lock(a, None).unwrap();
        assert_eq!(held.path(), lock_dir.join(format!("{a}.lock")));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&lock_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let busy = lock(a, None).unwrap_err();
        assert!(
            matches!(busy, LockError::SubvolBusy { uuid, .. } if uuid == a),
            "{busy}"
        );
        let t = Instant::now();
        let busy = lock(a, Some(Duration::from_millis(200))).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(200), "{busy}");

        let other = lock(b, None).unwrap();

        let waiter_dir = lock_dir.clone();
        let waiter = std::thread::spawn(move || {
            SubvolLock::exclusive_in(&waiter_dir, a, Some(Duration::from_secs(10))).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        waiter.join().unwrap().unwrap();
        drop(other);
    }

    #[test]
    fn a_cache_lock_makes_the_second_command_wait_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("browse").join("main-1.lock");
        let held = CacheLock::acquire(&path, Duration::ZERO).unwrap();
        let t = Instant::now();
        let busy = CacheLock::acquire(&path, Duration::from_millis(150)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert!(matches!(busy, LockError::CacheBusy { .. }), "{busy}");
        assert!(busy.to_string().contains("main-1.lock"), "{busy}");
        let waiter_path = path.clone();
        let waiter = std::thread::spawn(move || {
            CacheLock::acquire(&waiter_path, Duration::from_secs(10)).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn run_locks_exclude_per_config() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let locks = dir.join("locks");
        let acquire = |cfg: &Path| RunLock::acquire_in(&locks, cfg);
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, "").unwrap();
        let first = acquire(&cfg).unwrap();
        let err = acquire(&cfg).unwrap_err();
        assert!(matches!(err, LockError::RunBusy { .. }));
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let other = dir.join("other.yaml");
        std::fs::write(&other, "").unwrap();
        let _unrelated = acquire(&other).expect("another config is not blocked");
        drop(first);
        acquire(&cfg).expect("free again after drop");
    }
}
