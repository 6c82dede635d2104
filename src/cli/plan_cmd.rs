//! `subvault plan --dry-run`: the backup tree and the actions a run would take now.
//!
//! Reads the snapshot directories and the remotes' listings, changes nothing.

use std::path::Path;

use anyhow::Result;

use super::load_config;
use super::plan_view::{render_json, write_text};
use super::time_arg::parse_time;
use crate::errors::{EXIT_FAILURE, EXIT_OK};
use crate::ops::{self, sources::select_sources};

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

/// Runs `subvault plan`.
pub fn execute(config_path: &Path, args: &PlanArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let sources = select_sources(&config, &args.sources)?;
    let now = match &args.now {
        Some(s) => parse_time(s, config.timezone, "--now")?,
        None => chrono::Utc::now(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let results = rt.block_on(ops::plan::plan_sources(&config, &sources, now, args.heal));
    let mut plans = Vec::new();
    let mut failed = false;
    for (source, result) in sources.iter().zip(results) {
        match result {
            Ok(p) => {
                for problem in &p.problems {
                    eprintln!("subvault: source {}: {problem}", source.name);
                    failed = true;
                }
                plans.push(p)
            }
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
        super::print_json(&render_json(&plans))?;
    } else {
        let mut out = super::StdoutText::new();
        write_text(&mut out, &plans, config.timezone);
        out.finish()?;
    }
    Ok(if failed { EXIT_FAILURE } else { EXIT_OK })
}
