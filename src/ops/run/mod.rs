//! `run`: one pass over each source: snapshot if it changed, plan, upload,
//! prune, and optionally dedupe.
//!
//! Order and safety (docs/design.md, "A run" and "Safety rules"):
//! - A source is locked (so two configs naming it never run at once), and a
//!   run whose time lies before the source's newest snapshot or backup is
//!   refused before anything happens.
//! - The snapshot is taken first, even when a remote is down: local restore
//!   points matter most when the network is not there.
//! - Uploads run in plan order (parents before children), per remote; a remote
//!   that fails (cannot be listed, or an upload fails) fails alone: the others
//!   upload and prune, and the snapshots the failing one will need are kept
//!   (as much as its policy preserves, so they cannot pile up without bound).
//! - A remote is pruned only when all its uploads succeeded and were read back,
//!   its listing was whole, no other machine writes this source there, and the
//!   deletions fit the prune budget; snapshots are destroyed only within the
//!   budget too. Whatever is held back is named with what to do, and the run
//!   exits 1.

pub(crate) mod checks;
mod cleanup;
pub mod hooks;
pub mod metrics;
mod prune;
pub mod state;
mod upload;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::remotes::{OpenRemote, OpenRemotes};
use super::sources::{new_snapshot_path, plan_input, SourceState};
use super::subvols::Subvolumes;
use crate::config::{Config, Source};
use crate::core::object_key;
use crate::core::planner::{self, Plan, PlanInput, PlanOptions};
use crate::ops::status::Inventory;
use crate::postgres::PgError;
use crate::progress::{NoProgress, Progress};
use crate::units::human_bytes;

pub use upload::Uploaded;

/// How a run behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Heal broken chains (`--heal`).
    pub heal: bool,
    /// Prune even beyond the prune budget (`--allow-large-prune`): a
    /// deliberate policy change.
    pub allow_large_prune: bool,
}

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
    /// Archived WAL objects deleted by WAL retention.
    pub wal_deleted: usize,
    /// Warnings from the plan (broken chains).
    pub warnings: Vec<String>,
    /// What failed or was held back without stopping the rest of the source
    /// (a remote down, an upload failed, a prune over budget), one line each.
    /// A source with problems counts as failed (exit status 1).
    pub problems: Vec<String>,
    /// Keys of every upload the plan wanted, done or not: an open multipart
    /// upload of one of them is resumable and is spared by the stale-upload
    /// rule.
    pub planned_keys: BTreeSet<String>,
    /// Bytes of `bytes` that interrupted uploads had already stored (resumed,
    /// not sent again).
    pub resumed_bytes: u64,
    /// Per remote of the source: what this run did there.
    pub remotes: BTreeMap<String, RemoteReport>,
    /// Paths of the snapshots destroyed.
    pub destroyed_snapshots: Vec<String>,
}

/// What one source's run did on one remote.
#[derive(Debug, Default, Clone)]
pub struct RemoteReport {
    /// Objects stored (and read back).
    pub uploaded: Vec<Uploaded>,
    /// Keys deleted.
    pub deleted: Vec<String>,
    /// Archived WAL keys deleted (WAL retention).
    pub wal_deleted: Vec<String>,
    /// The problems of this remote (also in [`SourceReport::problems`]).
    pub errors: Vec<String>,
    /// What the remote holds of the source after the run: its listing at the
    /// start, less what was deleted, plus what was uploaded (`None` when it
    /// could not be listed).
    pub inventory: Option<Inventory>,
}

impl SourceReport {
    /// Records a problem of remote `id`.
    pub(crate) fn remote_problem(&mut self, id: &str, problem: String) {
        self.remotes
            .entry(id.to_string())
            .or_default()
            .errors
            .push(problem.clone());
        self.problems.push(problem);
    }
}

/// One source's run, as handed to the caller when it ends.
pub struct SourceRun<'a> {
    /// The source.
    pub source: &'a Source,
    /// When its run started and ended.
    pub started: DateTime<Utc>,
    /// When its run ended.
    pub finished: DateTime<Utc>,
    /// What it did, or why it stopped.
    pub result: Result<SourceReport>,
}

/// How a run over several sources ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Sources that failed (or had problems).
    pub failed: usize,
    /// A signal stopped the run (the sources after the interrupted one did not run).
    pub interrupted: bool,
    /// Requests each opened remote sent, per kind (see `remote::requests`).
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Runs the sources, up to `max_parallel_sources` at once (the others wait
/// for a free slot, in config order), opening each remote once, and hands
/// each source's run to `on_result` as soon as it ends. A signal during a
/// PostgreSQL backup stops the run after that source (the sources still under
/// way are dropped, which aborts their uploads).
///
/// The sources share one task: their CPU work (compression, checksums) runs on
/// worker threads and their I/O is asynchronous, so they overlap; each holds
/// its own upload buffers, so memory grows with the parallelism
/// (docs/design.md, Uploads).
#[allow(clippy::too_many_arguments)] // the run's inputs, from the command line
pub async fn run_sources<S: Subvolumes>(
    config: &Config,
    sources: &[&Source],
    now: DateTime<Utc>,
    opts: RunOptions,
    subvols: &S,
    progress: &dyn Progress,
    mut on_result: impl FnMut(&SourceRun),
) -> RunOutcome {
    let remotes = super::remotes::open_for_sources(config, sources).await;
    let mut outcome = RunOutcome::default();
    let remotes = &remotes;
    let mut planned = BTreeSet::new();
    let mut runs = futures::stream::iter(sources.iter().map(|source| async move {
        let started = Utc::now();
        let result = run_source(config, source, remotes, now, opts, subvols, progress).await;
        SourceRun {
            source,
            started,
            finished: Utc::now(),
            result,
        }
    }))
    .buffer_unordered(config.max_parallel_sources.max(1));
    while let Some(run) = runs.next().await {
        on_result(&run);
        if let Ok(report) = &run.result {
            planned.extend(report.planned_keys.iter().cloned());
        }
        match &run.result {
            Ok(report) if report.problems.is_empty() => {}
            Ok(_) => outcome.failed += 1,
            Err(e) => {
                outcome.failed += 1;
                if interrupted(e) {
                    outcome.interrupted = true;
                    return outcome;
                }
            }
        }
    }
    // After the uploads, so an open upload this run's plan still wants (to
    // resume next time) is known and spared.
    cleanup::abort_stale_uploads(
        remotes,
        config.safety.abort_incomplete_uploads_after,
        &planned,
    )
    .await;
    outcome.requests = remotes
        .iter()
        .filter_map(|(id, r)| {
            let store = &r.as_ref().ok()?.store;
            Some((id.clone(), crate::remote::ObjectStore::requests(store)))
        })
        .filter(|(_, counts)| !counts.is_empty())
        .collect();
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
    opts: RunOptions,
    subvols: &S,
    progress: &dyn Progress,
) -> Result<SourceReport> {
    let mut report = SourceReport {
        source: source.name.clone(),
        ..Default::default()
    };
    let before = subvols.read_source(source, true)?;
    // Held until the source is done: another config naming this subvolume
    // would snapshot, upload and prune the same things at the same time.
    let _lock = subvols.lock_source(before.info.uuid, &source.name)?;
    checks::clock(config, source, remotes, &before, now)?;
    for up in &source.upload_to_remotes {
        if let Some(Err(e)) = remotes.get(&up.id) {
            report.remote_problem(&up.id, crate::errors::one_line(e));
        }
    }
    let mut no_prune = checks::foreign_writers(source, remotes, &before, &mut report);

    let state = snapshot_if_changed(source, before, now, subvols, &mut report).await?;
    let mut input = plan_input(config, source, &state, remotes, now, false)?;
    let plan = planner::plan_with(&input, PlanOptions { heal: opts.heal });
    for w in &plan.warnings {
        // `run` prints them as WARNING lines; here for -vv logs.
        tracing::debug!("source {}: {w}", source.name);
    }
    report.warnings = plan.warnings.clone();

    let uploads = upload_all(
        config,
        source,
        &plan,
        remotes,
        &state,
        subvols,
        progress,
        &mut report,
    )
    .await;
    no_prune.extend(uploads.failed.iter().cloned());
    // Snapshots: as the plan says, unless a remote failed this run; then as a
    // plan that treats it as unreachable says, so the snapshots it will need
    // next time stay.
    let destroy_plan = if uploads.failed.is_empty() {
        None
    } else {
        mark_unreachable(&mut input, &uploads.failed);
        Some(planner::plan_with(&input, PlanOptions { heal: opts.heal }))
    };
    let prune = prune::Prune {
        source,
        remotes,
        budget: (!opts.allow_large_prune).then_some(config.safety.prune_budget),
        no_prune: &no_prune,
        uploaded: &uploads.done,
        snapshots_existing: state.snapshots.len(),
    };
    prune
        .run(
            &plan,
            destroy_plan.as_ref().unwrap_or(&plan),
            subvols,
            &mut report,
        )
        .await;
    if source.postgres.is_some() {
        prune.prune_wal(state.info.uuid, now, &mut report).await;
    }
    if source.dedupe.after_run {
        dedupe_after_run(source, subvols).await?;
    }
    inventories(source, remotes, state.info.uuid, &mut report);
    Ok(report)
}

/// Each remote's inventory of the source after the run: the listing at the
/// start, less what this run deleted, plus what it uploaded (an upload under
/// an existing key replaces that object).
fn inventories(
    source: &Source,
    remotes: &OpenRemotes,
    source_uuid: uuid::Uuid,
    report: &mut SourceReport,
) {
    for up in &source.upload_to_remotes {
        let entry = report.remotes.entry(up.id.clone()).or_default();
        let Some(Ok(open)) = remotes.get(&up.id) else {
            continue;
        };
        let prefix = crate::remote::ObjectStore::prefix(&open.store);
        let gone: HashSet<&str> = entry
            .deleted
            .iter()
            .chain(entry.uploaded.iter().map(|u| &u.key))
            .map(String::as_str)
            .collect();
        let uploaded: Vec<crate::core::model::Backup> = entry
            .uploaded
            .iter()
            .filter_map(|u| {
                let info = object_key::parse_key(prefix, &u.key).ok()?;
                Some(object_key::to_backup(
                    &u.key,
                    &info,
                    Some(u.stored_bytes),
                    Some(u.storage_class.as_str().into()),
                ))
            })
            .collect();
        // References into the listing, not copies (issue 21); a `Cow` per
        // backup was the size of a backup, 16 MiB at 100k.
        let mine: Vec<&crate::core::model::Backup> = open
            .backups
            .iter()
            .filter(|b| b.source_uuid == source_uuid && !gone.contains(&*b.key()))
            .chain(&uploaded)
            .collect();
        entry.inventory = Some(Inventory::of(&mine));
    }
}

/// Marks `failed` remotes as unreachable in a plan's input.
fn mark_unreachable(input: &mut PlanInput, failed: &BTreeSet<String>) {
    for r in &mut input.remotes {
        if failed.contains(&r.id) {
            r.unreachable = true;
        }
    }
}

/// Takes a snapshot when the source (read as `state`) changed since its
/// newest one; returns the source's state after it.
async fn snapshot_if_changed<S: Subvolumes>(
    source: &Source,
    state: SourceState,
    now: DateTime<Utc>,
    subvols: &S,
    report: &mut SourceReport,
) -> Result<SourceState> {
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

/// What the uploads of a source did.
struct Uploads {
    /// Objects stored (and read back).
    done: Vec<Uploaded>,
    /// Remotes where an upload failed (their later uploads were skipped).
    failed: BTreeSet<String>,
}

/// Every upload of the plan, in order; an upload that fails fails its remote
/// (the remote's later uploads are skipped, since they may be sent relative
/// to it), and the other remotes go on.
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
) -> Uploads {
    let started = Instant::now();
    let mut out = Uploads {
        done: Vec::new(),
        failed: BTreeSet::new(),
    };
    for u in plan.uploads() {
        if let Ok(open) = opened(remotes, &u.remote) {
            let key = upload::key_for(config, source, open, u, state.info.uuid);
            report.planned_keys.insert(key);
        }
        if out.failed.contains(&u.remote) {
            continue;
        }
        let result = match opened(remotes, &u.remote) {
            Ok(open) => {
                upload::upload(config, source, open, u, state.info.uuid, subvols, progress).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => {
                report.uploaded += 1;
                report.bytes += done.stored_bytes;
                report.raw_bytes += done.raw_bytes;
                report
                    .remotes
                    .entry(u.remote.clone())
                    .or_default()
                    .uploaded
                    .push(done.clone());
                report.resumed_bytes += done.resumed_bytes;
                out.done.push(done);
            }
            Err(e) => {
                report.remote_problem(&u.remote, crate::errors::one_line(&e));
                out.failed.insert(u.remote.clone());
            }
        }
    }
    report.upload_seconds = started.elapsed().as_secs_f64();
    out
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
