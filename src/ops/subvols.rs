//! The btrfs side of a run, behind one small trait: read a source, take a
//! snapshot, send one, destroy one.
//!
//! The executor's rules (snapshots are destroyed and objects deleted only after
//! every upload of the source succeeded; a key uploaded this run is never
//! deleted) are then unit-tested with a fake and a local store in a temp dir,
//! without root. [`Btrfs`] is the real thing.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, ReadBuf};
use uuid::Uuid;

use super::sources::{read_source, read_source_flushed, SourceState};
use crate::config::Source;
use crate::sys::btrfs::{self, SendStream};
use crate::sys::lock::{SourceLock, SubvolLock};

/// How long a send waits for a dedupe of the same snapshot to finish.
const SEND_LOCK_WAIT: Duration = Duration::from_secs(6 * 3600);

/// A stream being sent: read it to EOF, then [`SendSource::finish`] says
/// whether it was complete (a send that failed part way ends in a plain EOF).
pub trait SendSource: AsyncRead + Unpin + Send {
    /// Waits for the send to end; an error says why the stream is incomplete.
    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

    /// The ctransid the stream carries (its snapshot's when the send
    /// started), when known.
    fn ctransid(&self) -> Option<u64> {
        None
    }
}

/// What a run does to subvolumes.
pub trait Subvolumes: Sync {
    /// What holds a source for one run (released on drop).
    type SourceGuard;

    /// The source and its snapshots; `flush` writes out pending changes first,
    /// so the ctransid comparison counts every write made before the run.
    fn read_source(&self, source: &Source, flush: bool) -> Result<SourceState>;

    /// Holds the source subvolume `uuid` (named `name`) for this run, so two
    /// runs never work on it at once; fails at once when another holds it.
    fn lock_source(&self, uuid: Uuid, name: &str) -> Result<Self::SourceGuard>;

    /// Takes the read-only snapshot of `source` at `path`.
    fn take_snapshot(
        &self,
        source: &Source,
        path: &Path,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Starts sending `snapshot` (uuid `uuid`), in full or relative to `parent`.
    fn send(
        &self,
        snapshot: &Path,
        uuid: Uuid,
        parent: Option<(&Path, Uuid)>,
    ) -> impl Future<Output = Result<Box<dyn SendSource>>> + Send;

    /// Destroys a snapshot (and what is kept next to it).
    fn destroy_snapshot(&self, path: &Path) -> Result<()>;
}

/// The real subvolumes: btrfs ioctls, and PostgreSQL for database sources.
#[derive(Debug, Default, Clone, Copy)]
pub struct Btrfs;

impl Subvolumes for Btrfs {
    type SourceGuard = SourceLock;

    fn lock_source(&self, uuid: Uuid, name: &str) -> Result<SourceLock> {
        Ok(SourceLock::acquire(uuid, name)?)
    }

    fn read_source(&self, source: &Source, flush: bool) -> Result<SourceState> {
        if flush {
            read_source_flushed(source)
        } else {
            read_source(source)
        }
    }

    fn take_snapshot(
        &self,
        source: &Source,
        path: &Path,
    ) -> impl Future<Output = Result<()>> + Send {
        take_snapshot(source, path)
    }

    async fn send(
        &self,
        snapshot: &Path,
        uuid: Uuid,
        parent: Option<(&Path, Uuid)>,
    ) -> Result<Box<dyn SendSource>> {
        // A send and a dedupe of the same subvolumes exclude each other (EAGAIN).
        let mut lock_ids = vec![uuid];
        lock_ids.extend(parent.map(|(_, u)| u));
        lock_ids.sort();
        let locks = tokio::task::spawn_blocking(move || {
            lock_ids
                .into_iter()
                .map(|id| SubvolLock::exclusive(id, Some(SEND_LOCK_WAIT)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
        let stream = btrfs::send(snapshot, parent.map(|(p, _)| p))?;
        Ok(Box::new(LockedSend {
            stream,
            _locks: locks,
        }))
    }

    fn destroy_snapshot(&self, path: &Path) -> Result<()> {
        btrfs::destroy_subvolume(path)?;
        crate::postgres::sidecar::remove(path);
        Ok(())
    }
}

/// A send holding the subvolume locks of its snapshot and parent until it is
/// finished or dropped.
struct LockedSend {
    stream: SendStream,
    _locks: Vec<SubvolLock>,
}

impl AsyncRead for LockedSend {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl SendSource for LockedSend {
    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move {
            let LockedSend { stream, _locks } = *self;
            stream.finish().await.map(|_| ()).map_err(|e| e.to_string())
        })
    }

    fn ctransid(&self) -> Option<u64> {
        Some(self.stream.ctransid())
    }
}

/// Takes the read-only snapshot at `path`, through PostgreSQL when the source is a
/// database.
async fn take_snapshot(source: &Source, path: &Path) -> Result<()> {
    let dir = path.parent().expect("snapshot paths have a parent");
    let name = path
        .file_name()
        .expect("snapshot paths have a name")
        .to_string_lossy()
        .into_owned();
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "source {}: cannot create the snapshot directory {}",
                source.name,
                dir.display()
            )
        })?;
        tracing::info!(
            "source {}: created snapshot directory {}",
            source.name,
            dir.display()
        );
    }
    match &source.postgres {
        None => {
            btrfs::create_snapshot(&source.path, dir, &name, true)
                .with_context(|| format!("source {}", source.name))?;
        }
        Some(pg) => {
            let label = format!("subvault {name}");
            let src = source.path.clone();
            let dir = dir.to_path_buf();
            let info = crate::postgres::snapshot_with(pg, &source.path, &label, move |readonly| {
                btrfs::create_snapshot(&src, &dir, &name, readonly).map_err(anyhow::Error::from)
            })
            .await
            .with_context(|| format!("source {}: PostgreSQL snapshot", source.name))?;
            if let Err(e) = crate::postgres::sidecar::write(path, &(&info).into()) {
                tracing::warn!(
                    "source {}: cannot record the PostgreSQL LSN next to {}: {e}",
                    source.name,
                    path.display()
                );
            }
            tracing::info!(
                "source {}: PostgreSQL {} snapshot at LSN {} (timeline {}, server {})",
                source.name,
                info.mode.as_str(),
                info.lsn,
                info.timeline,
                info.server_version
            );
        }
    }
    tracing::info!("source {}: took snapshot {}", source.name, path.display());
    Ok(())
}
