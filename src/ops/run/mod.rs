//! `run`: one pass over each source: snapshot if it changed, plan, upload,
//! prune, and optionally dedupe.
//!
//! Order and safety (docs/design.md, "A run" and "Safety rules"): the snapshot
//! is taken first, then every upload in plan order (parents before children).
//! Only when every upload of the source succeeded are snapshots destroyed and
//! objects deleted; a failed upload leaves everything else as it was, and the
//! next run picks up where this one stopped.

mod prune;
mod upload;

#[cfg(test)]
mod tests;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use super::remotes::{OpenRemote, OpenRemotes};
use super::sources::{new_snapshot_path, plan_input, SourceState};
use super::subvols::Subvolumes;
use crate::config::{Config, Source};
use crate::core::planner::{self, Plan, PlanOptions};
use crate::postgres::PgError;
use crate::progress::{NoProgress, Progress};
use crate::units::human_bytes;

pub use upload::Uploaded;

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

/// How a run over several sources ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// Sources that failed.
    pub failed: usize,
    /// A signal stopped the run (the sources after the interrupted one did not run).
    pub interrupted: bool,
}

/// Runs every source in turn, opening each remote once, and hands each
/// source's result to `on_result` as soon as it is known. A signal during a
/// PostgreSQL backup stops the run after that source.
pub async fn run_sources<S: Subvolumes>(
    config: &Config,
    sources: &[&Source],
    now: DateTime<Utc>,
    heal: bool,
    subvols: &S,
    progress: &dyn Progress,
    mut on_result: impl FnMut(&Source, &Result<SourceReport>),
) -> RunOutcome {
    let remotes = super::remotes::open_for_sources(config, sources).await;
    let mut outcome = RunOutcome::default();
    for source in sources {
        let result = run_source(config, source, &remotes, now, heal, subvols, progress).await;
        on_result(source, &result);
        if let Err(e) = &result {
            outcome.failed += 1;
            if interrupted(e) {
                outcome.interrupted = true;
                break;
            }
        }
    }
    outcome
}

/// True when a signal stopped the work behind `e` (a PostgreSQL backup was
/// stopped on the way out).
fn interrupted(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<PgError>(), Some(PgError::Interrupted(_))))
}

/// One pass over one source: snapshot if changed, plan, upload, prune.
pub async fn run_source<S: Subvolumes>(
    config: &Config,
    source: &Source,
    remotes: &OpenRemotes,
    now: DateTime<Utc>,
    heal: bool,
    subvols: &S,
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
    let state = snapshot_if_changed(source, now, subvols, &mut report).await?;
    let plan = planner::plan_with(
        &plan_input(config, source, &state, remotes, now, false)?,
        PlanOptions { heal },
    );
    for w in &plan.warnings {
        tracing::warn!("source {}: {w}", source.name);
    }
    report.warnings = plan.warnings.clone();

    let uploaded = upload_all(
        config,
        source,
        &plan,
        remotes,
        &state,
        subvols,
        progress,
        &mut report,
    )
    .await?;
    // Pruning: only reached when every upload succeeded.
    prune::prune(source, &plan, remotes, &uploaded, subvols, &mut report).await?;
    if source.dedupe.after_run {
        dedupe_after_run(source, subvols).await?;
    }
    Ok(report)
}

/// Takes a snapshot when the source changed since its newest one; returns the
/// source's state after it.
async fn snapshot_if_changed<S: Subvolumes>(
    source: &Source,
    now: DateTime<Utc>,
    subvols: &S,
    report: &mut SourceReport,
) -> Result<SourceState> {
    let state = subvols.read_source(source, true)?;
    if !state.needs_snapshot() {
        return Ok(state);
    }
    let path = new_snapshot_path(source, now);
    if path.exists() {
        bail!(
            "source {}: {} already exists but is not a snapshot of this source; \
             move it away or pick another --now",
            source.name,
            path.display()
        );
    }
    subvols.take_snapshot(source, &path).await?;
    report.created = path.file_name().map(|n| n.to_string_lossy().into_owned());
    subvols.read_source(source, false)
}

/// Every upload of the plan, in order; stops at the first failure.
#[allow(clippy::too_many_arguments)] // the run's context, passed down one level
async fn upload_all<S: Subvolumes>(
    config: &Config,
    source: &Source,
    plan: &Plan,
    remotes: &OpenRemotes,
    state: &SourceState,
    subvols: &S,
    progress: &dyn Progress,
    report: &mut SourceReport,
) -> Result<Vec<Uploaded>> {
    let started = Instant::now();
    let mut uploaded = Vec::new();
    for u in plan.uploads() {
        let open = opened(remotes, &u.remote)?;
        let done =
            upload::upload(config, source, open, u, state.info.uuid, subvols, progress).await?;
        report.uploaded += 1;
        report.bytes += done.stored_bytes;
        report.raw_bytes += done.raw_bytes;
        uploaded.push(done);
    }
    report.upload_seconds = started.elapsed().as_secs_f64();
    Ok(uploaded)
}

/// The opened remote `id`, or its opening error as one line.
fn opened<'a>(remotes: &'a OpenRemotes, id: &str) -> Result<&'a OpenRemote> {
    remotes[id]
        .as_ref()
        .map_err(|e| anyhow::anyhow!(crate::errors::one_line(e)))
}

/// `dedupe: {after_run: true}`: share identical blocks between the live subvolume
/// and the snapshots kept now. The live subvolume goes first (the engine orders
/// writable trees first), so the next run's snapshot inherits its shared extents.
async fn dedupe_after_run<S: Subvolumes>(source: &Source, subvols: &S) -> Result<()> {
    let mut paths = vec![source.path.clone()];
    paths.extend(
        subvols
            .read_source(source, false)?
            .snapshots
            .into_iter()
            .map(|s| s.path),
    );
    let name = source.name.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::dedupe::dedupe_paths(
            &paths,
            &crate::dedupe::DedupeOptions::default(),
            &NoProgress,
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
