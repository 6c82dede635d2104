//! Executing a plan for one source: snapshot, uploads, then pruning.
//!
//! Order and safety (DESIGN.md section 2): the snapshot is taken first, then every
//! upload in plan order (parents before children). Only when every upload of the
//! source succeeded are snapshots destroyed and objects deleted; a failed upload
//! leaves everything else as it was, and the next run picks up where this one
//! stopped.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, ReadBuf};
use uuid::Uuid;

use super::{
    new_snapshot_path, plan_input, read_source, read_source_flushed, KeyNaming, OpenRemote,
};
use crate::config::{Config, Source};
use crate::core::planner::{self, Action, Upload};
use crate::progress::Progress;
use crate::remote::{ObjectStore, UploadOptions};
use crate::stream::{self, EncodeOptions, SourceCheck};
use crate::sys::btrfs::{self, SendStream};
use crate::sys::lock::SubvolLock;
use crate::units::{human_bytes, plural};

/// How long an upload waits for a dedupe of the same snapshot to finish.
const SEND_LOCK_WAIT: Duration = Duration::from_secs(6 * 3600);

/// What one source's run did.
#[derive(Debug, Default, Clone)]
pub struct SourceReport {
    /// The source's name.
    pub source: String,
    /// The snapshot taken by this run, if any.
    pub created: Option<String>,
    /// Objects uploaded.
    pub uploaded: usize,
    /// Bytes stored (compressed objects).
    pub bytes: u64,
    /// Bytes of raw send stream.
    pub raw_bytes: u64,
    /// Wall time of the uploads.
    pub upload_seconds: f64,
    /// Objects deleted.
    pub deleted: usize,
    /// Snapshots destroyed.
    pub destroyed: usize,
    /// Warnings from the plan (broken chains).
    pub warnings: Vec<String>,
}

impl SourceReport {
    /// The one summary line printed per source.
    pub fn summary(&self) -> String {
        if self.created.is_none() && self.uploaded == 0 && self.deleted == 0 && self.destroyed == 0
        {
            return format!(
                "source {}: nothing to do (no change since the last run)",
                self.source
            );
        }
        let mut parts = Vec::new();
        if let Some(name) = &self.created {
            parts.push(format!("snapshot {name}"));
        }
        let secs = self.upload_seconds.max(0.001);
        parts.push(format!(
            "uploaded {} object{}, {} in {:.1} s ({:.1} MB/s of send stream)",
            self.uploaded,
            plural(self.uploaded),
            human_bytes(self.bytes),
            self.upload_seconds,
            self.raw_bytes as f64 / secs / 1e6
        ));
        parts.push(format!(
            "deleted {} object{}",
            self.deleted,
            plural(self.deleted)
        ));
        parts.push(format!(
            "destroyed {} snapshot{}",
            self.destroyed,
            plural(self.destroyed)
        ));
        format!("source {}: {}", self.source, parts.join(", "))
    }
}

/// One pass over one source: snapshot if changed, plan, upload, prune.
pub async fn run_source(
    config: &Config,
    source: &Source,
    remotes: &BTreeMap<String, Result<OpenRemote>>,
    now: DateTime<Utc>,
    heal: bool,
    progress: &dyn Progress,
) -> Result<SourceReport> {
    let mut report = SourceReport {
        source: source.name.clone(),
        ..Default::default()
    };
    for up in &source.upload_to_remotes {
        if let Some(Err(e)) = remotes.get(&up.id) {
            bail!(crate::errors::one_line(e));
        }
    }
    let mut state = read_source_flushed(source)?;
    if state.needs_snapshot() {
        let path = new_snapshot_path(source, now);
        if path.exists() {
            bail!(
                "source {}: {} already exists but is not a snapshot of this source; \
                 move it away or pick another --now",
                source.name,
                path.display()
            );
        }
        take_snapshot(source, &path).await?;
        report.created = path.file_name().map(|n| n.to_string_lossy().into_owned());
        state = read_source(source)?;
    }

    let plan = planner::plan_with(
        &plan_input(config, source, &state, remotes, now, false)?,
        planner::PlanOptions { heal },
    );
    for w in &plan.warnings {
        tracing::warn!("source {}: {w}", source.name);
    }
    report.warnings = plan.warnings.clone();

    let started = Instant::now();
    let mut uploaded_keys: Vec<(String, String)> = Vec::new();
    for u in plan.uploads() {
        let open = remotes[&u.remote]
            .as_ref()
            .map_err(|e| anyhow!(crate::errors::one_line(e)))?;
        let stats = upload(config, source, open, u, state.info.uuid, progress).await?;
        report.uploaded += 1;
        report.bytes += stats.0;
        report.raw_bytes += stats.1;
        uploaded_keys.push((u.remote.clone(), stats.2));
    }
    report.upload_seconds = started.elapsed().as_secs_f64();

    // Pruning: only reached when every upload succeeded.
    let mut failures = Vec::new();
    for action in &plan.actions {
        if let Action::DestroySnapshot { path, .. } = action {
            match btrfs::destroy_subvolume(path) {
                Ok(()) => {
                    crate::postgres::sidecar::remove(path);
                    tracing::info!(
                        "source {}: destroyed snapshot {}",
                        source.name,
                        path.display()
                    );
                    report.destroyed += 1;
                }
                Err(e) => failures.push(format!("{e}")),
            }
        }
    }
    let mut deletes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for action in &plan.actions {
        if let Action::DeleteBackup { remote, key } = action {
            // Never delete what this run just wrote (an upload can replace a
            // broken object under the same key).
            if uploaded_keys.iter().any(|(r, k)| r == remote && k == key) {
                continue;
            }
            deletes.entry(remote).or_default().push(key.clone());
        }
    }
    for (remote, keys) in deletes {
        let open = remotes[remote]
            .as_ref()
            .map_err(|e| anyhow!(crate::errors::one_line(e)))?;
        match open.store.delete(&keys).await {
            Ok(rep) => {
                for key in &rep.deleted {
                    tracing::info!("source {}: deleted {key} from remote {remote}", source.name);
                }
                report.deleted += rep.deleted.len();
                for (key, err) in rep.failed {
                    failures.push(format!("remote {remote}: cannot delete {key}: {err}"));
                }
            }
            Err(e) => failures.push(format!("remote {remote}: {e}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "source {}: pruning failed ({}); backups are complete, the next run retries",
            source.name,
            failures.join("; ")
        );
    }
    if source.dedupe.after_run {
        dedupe_after_run(source).await?;
    }
    Ok(report)
}

/// `dedupe: {after_run: true}`: share identical blocks between the live subvolume
/// and the snapshots kept now. The live subvolume goes first (the engine orders
/// writable trees first), so the next run's snapshot inherits its shared extents.
async fn dedupe_after_run(source: &Source) -> Result<()> {
    let mut paths = vec![source.path.clone()];
    paths.extend(read_source(source)?.snapshots.into_iter().map(|s| s.path));
    let name = source.name.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::dedupe::dedupe_paths(
            &paths,
            &crate::dedupe::DedupeOptions::default(),
            &crate::progress::NoProgress,
        )
    })
    .await?
    .with_context(|| format!("source {name}: dedupe after the run"))?;
    tracing::info!(
        "source {}: dedupe scanned {}, deduped {}",
        source.name,
        human_bytes(report.bytes_scanned),
        human_bytes(report.bytes_deduped)
    );
    Ok(())
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

/// Sends one snapshot, encodes it and uploads it. Returns (stored bytes, raw bytes, key).
async fn upload(
    config: &Config,
    source: &Source,
    remote: &OpenRemote,
    u: &Upload,
    source_uuid: Uuid,
    progress: &dyn Progress,
) -> Result<(u64, u64, String)> {
    let up = source
        .upload_to_remotes
        .iter()
        .find(|up| up.id == remote.config.id)
        .expect("plan remotes come from the source's uploads");
    let pg = crate::postgres::sidecar::read(&u.snapshot_path);
    let key =
        KeyNaming::new(config, source, up, remote.store.prefix(), source_uuid).key(u, pg.as_ref());
    let (snapshot_path, uuid) = (u.snapshot_path.as_path(), u.uuid);
    let (send_parent_path, send_parent_uuid) = (u.send_parent_path.as_deref(), u.send_parent_uuid);
    let what = match send_parent_path {
        None => "full".to_string(),
        Some(p) => format!("relative to {}", p.display()),
    };
    let ctx = || {
        format!(
            "source {}: upload {} ({what}) to remote {}",
            source.name, key, remote.config.id
        )
    };

    // A send and a dedupe of the same subvolumes exclude each other (EAGAIN).
    let mut lock_ids = vec![uuid];
    lock_ids.extend(send_parent_uuid);
    lock_ids.sort();
    let locks = tokio::task::spawn_blocking(move || {
        lock_ids
            .into_iter()
            .map(|id| SubvolLock::exclusive(id, Some(SEND_LOCK_WAIT)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?
    .with_context(ctx)?;

    let send = btrfs::send(snapshot_path, send_parent_path).with_context(ctx)?;
    let shared = Arc::new(Mutex::new(Some(send)));
    let check_handle = shared.clone();
    let source_check: SourceCheck = Box::pin(async move {
        let send = check_handle.lock().expect("send lock").take();
        match send {
            Some(s) => s.finish().await.map(|_| ()).map_err(|e| e.to_string()),
            None => Err("the send stream was already finished".to_string()),
        }
    });
    let mut opts = EncodeOptions::new(up.compression.codec);
    opts.level = up.compression.level;
    opts.threads = up.compression.threads;
    opts.pipe_through = up.pipe_through.clone();
    opts.source_check = Some(source_check);
    let mut encoded = stream::encode(SharedSend(shared), opts).with_context(ctx)?;

    let class = up.storage_class.r#for(u.timeframe);
    let upload_opts = UploadOptions {
        storage_class: (class != "STANDARD").then_some(class),
        object_lock: match (&up.object_lock, u.retain_until) {
            (Some(lock), Some(until)) => Some((lock.mode.as_str().to_string(), until)),
            _ => None,
        },
        progress: progress.upload_started(&key, &what),
    };
    tracing::info!(
        "source {}: uploading {key} ({what}) to remote {}",
        source.name,
        remote.config.id
    );
    let result = remote.store.upload(&key, &mut encoded, &upload_opts).await;
    progress.upload_finished(&key);
    let stats = result.with_context(ctx)?;
    let summary = encoded.finish().await.with_context(ctx)?;
    drop(locks);
    tracing::info!(
        "source {}: uploaded {key}: {} ({} raw) in {:.1} s",
        source.name,
        human_bytes(stats.bytes),
        human_bytes(summary.record.raw_len),
        stats.seconds
    );
    Ok((stats.bytes, summary.record.raw_len, key))
}

/// A send stream shared between the encoder (which reads it) and the encoder's
/// end-of-stream check (which takes it out to learn whether the send succeeded).
struct SharedSend(Arc<Mutex<Option<SendStream>>>);

impl AsyncRead for SharedSend {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut guard = self.0.lock().expect("send lock");
        match guard.as_mut() {
            Some(send) => Pin::new(send).poll_read(cx, buf),
            // Taken by the check: the stream is over.
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_say_what_happened() {
        let idle = SourceReport {
            source: "data".into(),
            ..Default::default()
        };
        assert_eq!(
            idle.summary(),
            "source data: nothing to do (no change since the last run)"
        );
        let busy = SourceReport {
            source: "data".into(),
            created: Some("data.2026-11-27T04:00:00Z".into()),
            uploaded: 2,
            bytes: 3 * 1024 * 1024,
            raw_bytes: 10_000_000,
            upload_seconds: 2.0,
            deleted: 1,
            destroyed: 0,
            warnings: vec![],
        };
        assert_eq!(
            busy.summary(),
            "source data: snapshot data.2026-11-27T04:00:00Z, uploaded 2 objects, 3.0 MiB in 2.0 s \
             (5.0 MB/s of send stream), deleted 1 object, destroyed 0 snapshots"
        );
    }
}
