//! `subvault plan --dry-run`: the backup tree and the actions a run would take now.
//!
//! Reads the snapshot directories and the remotes' listings, changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;

use super::load_config;
use super::plan_view::{render_json, render_text, SourcePlan};
use super::time_arg::parse_time;
use crate::config::{Config, Source};
use crate::core::planner;
use crate::errors::{UsageError, EXIT_FAILURE, EXIT_OK};
use crate::remote::ObjectStore;
use crate::runner::{self, KeyNaming, OpenRemote};

/// Arguments of `subvault plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Only show what would happen (always the case for `plan`; accepted so that
    /// `plan --dry-run` reads as what it is).
    #[arg(long)]
    pub dry_run: bool,
    /// Plan as if it were this time (RFC 3339, or local time in the configured zone).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Print one JSON object instead of the tree.
    #[arg(long)]
    pub json: bool,
    /// Only these sources (by name). Repeatable.
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Show what `run --heal` would do about broken chains.
    #[arg(long)]
    pub heal: bool,
}

/// Picks the sources named on the command line (all when none are named).
pub fn select_sources<'a>(
    config: &'a Config,
    names: &[String],
) -> Result<Vec<&'a Source>, UsageError> {
    if names.is_empty() {
        return Ok(config.sources.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            config.source(n).ok_or_else(|| {
                let known: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
                UsageError(format!(
                    "--source {n:?}: no such source in {} (sources: {})",
                    config.path.display(),
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Runs `subvault plan`.
pub fn execute(config_path: &Path, args: &PlanArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let sources = select_sources(&config, &args.sources)?;
    let now = match &args.now {
        Some(s) => parse_time(s, config.timezone, "--now")?,
        None => chrono::Utc::now(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let remotes = rt.block_on(runner::open_remotes(&config, &sources));
    let mut plans = Vec::new();
    let mut failed = false;
    for source in sources {
        match plan_source(&config, source, &remotes, now, args.heal) {
            Ok(p) => plans.push(p),
            Err(e) => {
                eprintln!(
                    "subvault: source {}: {}",
                    source.name,
                    crate::errors::one_line(&e)
                );
                failed = true;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&render_json(&plans))?);
    } else {
        print!("{}", render_text(&plans, config.timezone));
    }
    Ok(if failed { EXIT_FAILURE } else { EXIT_OK })
}

fn plan_source(
    config: &Config,
    source: &Source,
    remotes: &BTreeMap<String, Result<OpenRemote>>,
    now: chrono::DateTime<chrono::Utc>,
    heal: bool,
) -> Result<SourcePlan> {
    let state = runner::read_source_flushed(source)?;
    let input = runner::plan_input(config, source, &state, remotes, now, state.needs_snapshot())?;
    let plan = planner::plan_with(&input, planner::PlanOptions { heal });
    let mut upload_keys = HashMap::new();
    let mut described = BTreeMap::new();
    for up in &source.upload_to_remotes {
        if let Some(Ok(r)) = remotes.get(&up.id) {
            described.insert(up.id.clone(), (r.store.describe(), up.preserve.describe()));
        }
    }
    for u in plan.uploads() {
        let (Some(Ok(r)), Some(up)) = (
            remotes.get(&u.remote),
            source.upload_to_remotes.iter().find(|up| up.id == u.remote),
        ) else {
            continue;
        };
        if !u.uuid.is_nil() {
            let pg = crate::postgres::sidecar::read(&u.snapshot_path);
            let naming = KeyNaming::new(config, source, up, r.store.prefix(), state.info.uuid);
            upload_keys.insert((u.remote.clone(), u.uuid), naming.key(u, pg.as_ref()));
        }
    }
    Ok(SourcePlan {
        name: source.name.clone(),
        path: source.path.display().to_string(),
        plan,
        remotes: described,
        upload_keys,
    })
}
