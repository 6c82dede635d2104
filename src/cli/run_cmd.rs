//! `subvault run`: one pass over every source (snapshot, upload, prune).

use std::path::Path;

use anyhow::Result;

use super::plan_cmd::select_sources;
use super::time_arg::parse_time;
use super::{load_config, progress};
use crate::errors::{UsageError, EXIT_FAILURE, EXIT_OK};
use crate::postgres::PgError;
use crate::runner::{self, execute::run_source};
use crate::sys::lock::RunLock;

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
    let mut failed = 0;
    let mut interrupted = false;
    rt.block_on(async {
        let remotes = runner::open_remotes(&config, &sources).await;
        for source in &sources {
            match run_source(&config, source, &remotes, now, args.heal, progress.as_ref()).await {
                Ok(report) => println!("{}", report.summary()),
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "subvault: source {}: FAILED: {}",
                        source.name,
                        crate::errors::one_line(&e)
                    );
                    // A signal during a PostgreSQL backup: the backup was stopped;
                    // stop here too instead of starting the next source.
                    if e.chain().any(|c| {
                        matches!(c.downcast_ref::<PgError>(), Some(PgError::Interrupted(_)))
                    }) {
                        interrupted = true;
                        break;
                    }
                }
            }
        }
    });
    Ok(if interrupted {
        // 128 + SIGINT/SIGTERM, as a shell reports a killed command.
        130
    } else if failed > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}
