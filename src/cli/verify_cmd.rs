//! `subvault verify`: download objects and check them without btrfs (see
//! `ops::verify`); one line per object, then a summary.

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use uuid::Uuid;

use super::load_config;
use crate::errors::{UsageError, EXIT_FAILURE, EXIT_OK};
use crate::ops::remotes;
use crate::ops::verify::{self, Outcome, Selection};

/// Arguments of `subvault verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Only this remote (default: every remote).
    #[arg(long, value_name = "ID")]
    pub remote: Option<String>,
    /// Check the chain of the backup of this snapshot.
    #[arg(long, value_name = "UUID", conflicts_with = "all")]
    pub uuid: Option<Uuid>,
    /// Check every backup object.
    #[arg(long)]
    pub all: bool,
    /// Check only N randomly chosen objects of the selection.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Print one JSON object (docs/json.md) instead of one line per object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `subvault verify`.
pub fn execute(config_path: &Path, args: &VerifyArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let remotes: Vec<_> = match &args.remote {
        Some(id) => vec![remotes::pick(&config, Some(id), None)?],
        None => config.remotes.iter().collect(),
    };
    let selection = Selection {
        uuid: args.uuid,
        all: args.all,
        sample: args.sample,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let lines = !args.json && !super::quiet();
    let mut objects = Vec::new();
    let report = rt.block_on(verify::verify(
        &config,
        &remotes,
        &selection,
        |b, outcome| {
            if args.json {
                objects.push(object_json(b, outcome));
            }
            if !lines {
                return;
            }
            match outcome {
                Outcome::Good(note) => println!("ok  {}  ({note})", b.key()),
                Outcome::Archived(cmd) => println!(
                    "--  {}  (not checked: in archive storage; to check it, first run: {cmd})",
                    b.key()
                ),
                Outcome::Bad(problem) => println!("BAD {}  ({problem})", b.key()),
            }
        },
    ))?;
    if !report.found_uuid {
        return Err(UsageError(format!(
            "--uuid {}: no backup of that snapshot on the remote(s) checked",
            args.uuid.unwrap_or_default()
        ))
        .into());
    }
    if args.json {
        let bad: Vec<_> = report
            .bad
            .iter()
            .map(|b| json!({"key": b.key, "problem": b.problem}))
            .collect();
        let out = json!({
            "version": 1,
            "ok": report.bad.is_empty(),
            "checked": report.checked,
            "bad": bad,
            "archived": report.archived,
            "objects": objects,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(if report.bad.is_empty() {
            EXIT_OK
        } else {
            EXIT_FAILURE
        });
    }
    if super::quiet() && report.bad.is_empty() {
        return Ok(EXIT_OK);
    }
    println!(
        "{} object(s) checked, {} bad, {} not checked (archived)",
        report.checked,
        report.bad.len(),
        report.archived.len()
    );
    if report.bad.is_empty() {
        return Ok(EXIT_OK);
    }
    eprintln!("subvault: {} bad object(s):", report.bad.len());
    for b in &report.bad {
        eprintln!("{}: {}", b.key, b.problem);
    }
    Ok(EXIT_FAILURE)
}

/// One checked object in `verify --json`.
fn object_json(b: &crate::core::model::Backup, outcome: &Outcome) -> serde_json::Value {
    let (result, detail) = match outcome {
        Outcome::Good(note) => ("ok", note),
        Outcome::Archived(cmd) => ("archived", cmd),
        Outcome::Bad(problem) => ("bad", problem),
    };
    json!({
        "key": b.key(),
        "uuid": b.uuid,
        "size": b.size,
        "result": result,
        "detail": detail,
    })
}
