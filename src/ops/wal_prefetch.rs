//! `wal-fetch`'s prefetch spool on disk: `<pg_wal>/.subvault-prefetch/`
//! (the bookkeeping is `core::wal_spool`; the design: docs/postgres.md,
//! "Prefetch").
//!
//! Why prefetch happens inside the call, not in a detached process:
//! PostgreSQL runs `restore_command` once per segment and waits for it, so
//! replay is bound by one GET at a time. A call that misses the spool fetches
//! its segment, then the next K segments at once, and returns; the next K
//! calls are a local rename each. K+1 round trips become two. A detached
//! prefetcher (pgBackRest's async archive-get, WAL-G's forked prefetch) would
//! also overlap downloads with replay, but it outlives the call: it can still
//! be writing into `pg_wal` after the server promoted or shut down, two of
//! them need a lock, and its failures reach no log PostgreSQL keeps. Here
//! every byte is written by the call PostgreSQL is waiting for, and its
//! errors go to the server log like any other.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::core::wal::SegmentName;
use crate::core::wal_spool::{self, SPOOL_DIR, TMP_PREFIX};

/// The spool of one data directory, and how far ahead to fetch.
#[derive(Debug, Clone)]
pub struct Prefetch {
    /// `<pg_wal>/.subvault-prefetch`.
    pub dir: PathBuf,
    /// Segments to fetch ahead when the spool runs dry.
    pub ahead: usize,
}

/// What the spool held for a call.
#[derive(Debug, Default)]
pub struct Looked {
    /// The segment asked for, verified and renamed to the destination: its bytes.
    pub served: Option<u64>,
    /// Segments already spooled after it.
    pub spooled_ahead: Vec<SegmentName>,
}

impl Prefetch {
    /// The spool in `datadir/pg_wal` (followed when it is a symlink, so the
    /// spool is on the same file system as the `%p` PostgreSQL gives), when
    /// `dest` is in that `pg_wal` as PostgreSQL's `%p` is (`pg_wal/RECOVERYXLOG`):
    /// a fetch by hand to elsewhere spools nothing. `None` too when prefetch
    /// is off (`ahead` 0).
    pub fn in_datadir(datadir: &Path, dest: &Path, ahead: usize) -> Option<Prefetch> {
        let pg_wal = datadir.join("pg_wal").canonicalize().ok()?;
        let dest_dir = dest.parent()?.canonicalize().ok()?;
        (ahead > 0 && pg_wal.is_dir() && dest_dir == pg_wal).then(|| Prefetch {
            dir: pg_wal.join(SPOOL_DIR),
            ahead,
        })
    }

    fn names(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("cannot list {}", self.dir.display()))?;
            out.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    /// Removes what the spool no longer needs and, when it holds `wanted`,
    /// serves it: the file must hash to the name it was stored under and
    /// pass `check` (the same page-header check a direct fetch makes), then
    /// it is renamed to `dest`. A file that does not verify is deleted and
    /// not served (the caller fetches directly).
    pub fn look(
        &self,
        wanted: SegmentName,
        dest: &Path,
        check: impl Fn(&[u8]) -> Result<()>,
    ) -> Result<Looked> {
        let plan = wal_spool::plan(&self.names()?, wanted);
        for name in &plan.remove {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        let mut looked = Looked {
            served: None,
            spooled_ahead: plan.spooled_ahead,
        };
        let Some((name, hash)) = plan.serve else {
            return Ok(looked);
        };
        let path = self.dir.join(&name);
        let data =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let ok = <[u8; 32]>::from(Sha256::digest(&data)) == hash;
        let checked = if ok {
            check(&data)
        } else {
            Err(anyhow::anyhow!("its content does not hash to its name"))
        };
        if let Err(e) = checked {
            let _ = std::fs::remove_file(&path);
            tracing::warn!(
                "prefetched {} ({}) did not verify and was deleted: {e:#}; fetching it again",
                wanted,
                path.display()
            );
            return Ok(looked);
        }
        match std::fs::rename(&path, dest) {
            Ok(()) => {}
            // `%p` on another file system (wal-fetch run by hand).
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                super::wal::write_atomically(dest, &data)?;
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot rename {} to {}", path.display(), dest.display())
                })
            }
        }
        looked.served = Some(data.len() as u64);
        Ok(looked)
    }

    /// Stores verified bytes of segment `seg` in the spool: a temporary file
    /// first, renamed to `<segment>.<sha256>` when whole. `sha256` is the
    /// hash the object's trailer verified (not computed again here).
    pub fn store(&self, seg: SegmentName, data: &[u8], sha256: &[u8; 32]) -> Result<()> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{:016x}", fastrand::u64(..)));
        let dest = self.dir.join(wal_spool::entry_name(seg, sha256));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(data))
            .and_then(|()| std::fs::rename(&tmp, &dest));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", dest.display()));
        }
        Ok(())
    }
}
