//! `subvault run`: one pass over every source (snapshot, upload, prune).

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};

use super::time_arg::parse_time;
use super::{journal, load_config, progress};
use crate::config::Config;
use crate::errors::{UsageError, EXIT_FAILURE, EXIT_LOCKED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM};
use crate::ops::run::state::{self, Outcome, RunRecord, SourceRecord};
use crate::ops::run::{
    hooks, metrics, run_sources, RunOptions, RunOutcome, SourceReport, SourceRun,
};
use crate::ops::sources::select_sources;
use crate::ops::subvols::Btrfs;
use crate::progress::{NoProgress, Progress};
use crate::sys::lock::{LockError, RunLock};
use crate::units::{human_bytes, plural};

/// Arguments of `subvault run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Run as if it were this time (RFC 3339, or local time in the configured zone):
    /// the snapshot is named and planned with it. For simulations and tests.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Only these sources (by name). Repeatable.
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Heal broken chains: upload a fresh backup for every kept snapshot whose
    /// backup cannot be restored (a missing parent object), then delete the
    /// broken objects.
    #[arg(long)]
    pub heal: bool,
    /// Prune even when a run would delete more than the prune budget allows
    /// (safety.prune_budget, half of a remote's backups by default): for one
    /// run after a deliberate policy change.
    #[arg(long)]
    pub allow_large_prune: bool,
    /// Print the run's summary as one JSON object (docs/json.md) instead of
    /// one line per source.
    #[arg(long)]
    pub json: bool,
}

/// Runs `subvault run`: 0 when every source succeeded, 1 when one failed or
/// had a problem (the others still ran), 3 when another run holds the lock,
/// 130/143 when SIGINT/SIGTERM stopped it (resumable S3 uploads are left open for the next run, the others aborted first).
/// Then the state file and the metrics file are written and the hook runs
/// (their failures are warnings: they change neither the backups nor the
/// exit status).
pub fn execute(config_path: &Path, args: &RunArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let sources = select_sources(&config, &args.sources)?;
    let now = match &args.now {
        Some(s) => parse_time(s, config.timezone, "--now")?,
        None => chrono::Utc::now(),
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(UsageError("subvault run needs root (btrfs snapshots and send)".into()).into());
    }
    let _lock = match RunLock::acquire(config_path) {
        Ok(lock) => lock,
        Err(e @ LockError::RunBusy { .. }) => {
            journal::error(&format!("subvault: {e}"));
            return Ok(EXIT_LOCKED);
        }
        Err(e) => return Err(e.into()),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let progress: Box<dyn Progress> = if super::quiet() {
        Box::new(NoProgress)
    } else {
        progress::for_stderr("run")
    };
    let opts = RunOptions {
        heal: args.heal,
        allow_large_prune: args.allow_large_prune,
    };
    let started = Utc::now();
    let records: RefCell<Vec<SourceRecord>> = RefCell::new(Vec::new());
    let lines = !args.json && !super::quiet();
    let run = run_sources(
        &config,
        &sources,
        now,
        opts,
        &Btrfs,
        progress.as_ref(),
        |r: &SourceRun| {
            report_source(r, lines);
            records.borrow_mut().push(SourceRecord::of(r));
        },
    );
    let ended = rt.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        // Signals first: dropping the run stops the send streams, kills
        // pipe_through and btrfs processes, removes a local remote's temp
        // files, ends a PostgreSQL backup session and starts the abort of each
        // multipart upload under way, which is then waited for.
        anyhow::Ok(tokio::select! {
            biased;
            _ = int.recv() => Ended::Signal("SIGINT", EXIT_SIGINT),
            _ = term.recv() => Ended::Signal("SIGTERM", EXIT_SIGTERM),
            outcome = run => Ended::Ran(outcome),
        })
    })?;
    let mut requests = Default::default();
    let (outcome, code) = match ended {
        Ended::Ran(o) if o.interrupted => (Outcome::Interrupted, EXIT_SIGINT),
        Ended::Ran(o) => {
            requests = o.requests;
            if o.failed > 0 {
                (Outcome::Failed, EXIT_FAILURE)
            } else {
                (Outcome::Ok, EXIT_OK)
            }
        }
        Ended::Signal(name, code) => {
            let left = rt.block_on(crate::remote::pending::finish(ABORT_WAIT));
            progress.finish();
            if left > 0 {
                journal::error(&format!(
                    "subvault: stopped by {name}; {left} unfinished upload(s) could not be \
                     aborted in time (the next run aborts them once they are a day old)"
                ));
            } else {
                journal::error(&format!(
                    "subvault: stopped by {name}; uploads under way were stopped (S3 \
                     multipart uploads stay open for the next run to resume, the rest \
                     were aborted)"
                ));
            }
            (Outcome::Interrupted, code)
        }
    };
    let mut record = run_record(
        &config,
        &sources,
        records.into_inner(),
        started,
        now,
        outcome,
        code,
    );
    record.requests = requests;
    rt.block_on(after_run(&config, &record));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    }
    Ok(code)
}

/// The lines printed when a source's run ends: its summary on stdout (unless
/// --json or -q), a WARNING line per broken chain, a FAILED line per problem.
fn report_source(r: &SourceRun, lines: bool) {
    let name = &r.source.name;
    match &r.result {
        Ok(report) => {
            if lines {
                println!("{}", summary(report));
            }
            for w in &report.warnings {
                journal::warning(&format!("subvault: source {name}: WARNING: {w}"));
            }
            for p in &report.problems {
                journal::error(&format!("subvault: source {name}: FAILED: {p}"));
            }
        }
        Err(e) => journal::error(&format!(
            "subvault: source {name}: FAILED: {}",
            crate::errors::one_line(e)
        )),
    }
}

/// The run's record: the sources in config order, those a signal kept from
/// finishing marked interrupted.
fn run_record(
    config: &Config,
    sources: &[&crate::config::Source],
    mut done: Vec<SourceRecord>,
    started: chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
    outcome: Outcome,
    exit_status: i32,
) -> RunRecord {
    let finished = Utc::now();
    let records = sources
        .iter()
        .map(|s| match done.iter().position(|r| r.source == s.name) {
            Some(i) => done.swap_remove(i),
            None => SourceRecord::interrupted(s),
        })
        .collect();
    RunRecord {
        version: state::SCHEMA_VERSION,
        config: config.path.clone(),
        started,
        finished,
        duration_seconds: state::seconds(started, finished),
        now,
        outcome,
        exit_status,
        sources: records,
        requests: Default::default(),
    }
}

/// The state file, the hook and the metrics file, in that order; a failure of
/// any is a warning line.
async fn after_run(config: &Config, record: &RunRecord) {
    let mut saved = match state::record(config, record) {
        Ok(s) => Some(s),
        Err(e) => {
            journal::warning(&format!(
                "subvault: warning: the state file was not written (status will not know this \
                 run): {}",
                crate::errors::one_line(&e)
            ));
            None
        }
    };
    if let Some(hook) = hooks::run(config, record).await {
        if let Some(err) = &hook.error {
            journal::warning(&format!(
                "subvault: warning: hook {} failed (nothing backed up changes): {err}",
                hook.hook
            ));
        }
        if let Some(s) = saved.as_mut() {
            s.hooks = vec![hook];
            if let Err(e) = state::save(config, s) {
                journal::warning(&format!(
                    "subvault: warning: {}",
                    crate::errors::one_line(&e)
                ));
            }
        }
    }
    if let Some(s) = &saved {
        if let Err(e) = metrics::write(config, s) {
            journal::warning(&format!(
                "subvault: warning: the metrics file was not written: {}",
                crate::errors::one_line(&e)
            ));
        }
    }
}

/// How long a stopped run waits for its multipart uploads to be aborted; well
/// within the 90 s systemd gives a unit (TimeoutStopSec) before SIGKILL.
const ABORT_WAIT: Duration = Duration::from_secs(30);

enum Ended {
    Ran(RunOutcome),
    Signal(&'static str, i32),
}

/// The one summary line printed per source.
fn summary(r: &SourceReport) -> String {
    if r.created.is_none()
        && r.uploaded == 0
        && r.deleted == 0
        && r.destroyed == 0
        && r.wal_deleted == 0
    {
        return format!(
            "source {}: nothing to do (no change since the last run)",
            r.source
        );
    }
    let mut parts = Vec::new();
    if let Some(name) = &r.created {
        parts.push(format!("snapshot {name}"));
    }
    let secs = r.upload_seconds.max(0.001);
    parts.push(format!(
        "uploaded {} object{}, {} in {:.1} s ({:.1} MB/s of send stream)",
        r.uploaded,
        plural(r.uploaded),
        human_bytes(r.bytes),
        r.upload_seconds,
        r.raw_bytes as f64 / secs / 1e6
    ));
    if r.resumed_bytes > 0 {
        parts.push(format!(
            "resumed {} stored by an interrupted run (not sent again)",
            human_bytes(r.resumed_bytes)
        ));
    }
    parts.push(format!("deleted {} object{}", r.deleted, plural(r.deleted)));
    if r.wal_deleted > 0 {
        // Only for PostgreSQL sources with an archive to prune.
        parts.push(format!(
            "deleted {} archived WAL object{}",
            r.wal_deleted,
            plural(r.wal_deleted)
        ));
    }
    parts.push(format!(
        "destroyed {} snapshot{}",
        r.destroyed,
        plural(r.destroyed)
    ));
    format!("source {}: {}", r.source, parts.join(", "))
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
            summary(&idle),
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
            ..Default::default()
        };
        assert_eq!(
            summary(&busy),
            "source data: snapshot data.2026-11-27T04:00:00Z, uploaded 2 objects, 3.0 MiB in 2.0 s \
             (5.0 MB/s of send stream), deleted 1 object, destroyed 0 snapshots"
        );
        let resumed = SourceReport {
            resumed_bytes: 2 * 1024 * 1024,
            ..busy
        };
        assert!(summary(&resumed).contains(
            "3.0 MiB in 2.0 s (5.0 MB/s of send stream), resumed 2.0 MiB stored by an \
             interrupted run (not sent again), deleted"
        ));
    }
}
