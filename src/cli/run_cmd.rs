//! `subvault run`: one pass over every source (snapshot, upload, prune).

use std::path::Path;

use anyhow::Result;

use super::time_arg::parse_time;
use super::{load_config, progress};
use crate::errors::{UsageError, EXIT_FAILURE, EXIT_OK};
use crate::ops::run::{run_sources, SourceReport};
use crate::ops::sources::select_sources;
use crate::ops::subvols::Btrfs;
use crate::sys::lock::RunLock;
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
}

/// Runs `subvault run`; returns 0 when every source succeeded, 1 otherwise.
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
    let _lock = RunLock::acquire(config_path)?;
    let rt = tokio::runtime::Runtime::new()?;
    let progress = progress::for_stderr("run");
    let outcome = rt.block_on(run_sources(
        &config,
        &sources,
        now,
        args.heal,
        &Btrfs,
        progress.as_ref(),
        |source, result| match result {
            Ok(report) => println!("{}", summary(report)),
            Err(e) => eprintln!(
                "subvault: source {}: FAILED: {}",
                source.name,
                crate::errors::one_line(e)
            ),
        },
    ));
    Ok(if outcome.interrupted {
        // 128 + SIGINT/SIGTERM, as a shell reports a killed command.
        130
    } else if outcome.failed > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

/// The one summary line printed per source.
fn summary(r: &SourceReport) -> String {
    if r.created.is_none() && r.uploaded == 0 && r.deleted == 0 && r.destroyed == 0 {
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
    parts.push(format!("deleted {} object{}", r.deleted, plural(r.deleted)));
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
            warnings: vec![],
        };
        assert_eq!(
            summary(&busy),
            "source data: snapshot data.2026-11-27T04:00:00Z, uploaded 2 objects, 3.0 MiB in 2.0 s \
             (5.0 MB/s of send stream), deleted 1 object, destroyed 0 snapshots"
        );
    }
}
