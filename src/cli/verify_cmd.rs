//! `subvault verify`: download objects and check them without btrfs.
//!
//! Each object is decompressed to nowhere while its raw stream's length and
//! SHA-256 are compared with the object's trailer and every send-stream command's
//! CRC-32C is checked; each checked object's send parent must exist. Without
//! `--uuid` or `--all`, the chain of each source's newest backup is checked
//! (what the next restore would need).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use uuid::Uuid;

use super::load_config;
use super::restore_cmd::{basename_of, bucket_of, open_listed, pick_remote};
use crate::core::chain;
use crate::core::model::Backup;
use crate::errors::{UsageError, EXIT_FAILURE, EXIT_OK};
use crate::remote::{AnyStore, ObjectStore};
use crate::restore::{download_cause, restore_request_command, Fetch};
use crate::stream::{self, StreamError};
use crate::units::human_bytes;

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
}

/// One bad object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bad {
    key: String,
    problem: String,
}

/// Runs `subvault verify`.
pub fn execute(config_path: &Path, args: &VerifyArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let remotes: Vec<_> = match &args.remote {
        Some(id) => vec![pick_remote(&config, Some(id), None)?],
        None => config.remotes.iter().collect(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let mut bad = Vec::new();
    let mut checked = 0usize;
    let mut skipped = Vec::new();
    let mut found_uuid = args.uuid.is_none();
    for rc in remotes {
        let (store, backups) = rt.block_on(open_listed(rc))?;
        let store = Arc::new(store);
        let selection = match select(&store, &backups, args, &mut bad) {
            Some(s) => s,
            None => continue,
        };
        found_uuid |= !selection.is_empty() && args.uuid.is_some();
        for b in selection {
            match rt.block_on(check(&store, &b, bucket_of(rc))) {
                Ok(Check::Good(note)) => {
                    checked += 1;
                    println!("ok  {}  ({note})", b.key);
                }
                Ok(Check::Archived(cmd)) => {
                    println!(
                        "--  {}  (not checked: in archive storage; to check it, first run: {cmd})",
                        b.key
                    );
                    skipped.push(b.key.clone());
                }
                Err(problem) => {
                    checked += 1;
                    println!("BAD {}  ({problem})", b.key);
                    bad.push(Bad {
                        key: b.key.clone(),
                        problem,
                    });
                }
            }
        }
    }
    if !found_uuid {
        return Err(UsageError(format!(
            "--uuid {}: no backup of that snapshot on the remote(s) checked",
            args.uuid.unwrap_or_default()
        ))
        .into());
    }
    println!(
        "{checked} object(s) checked, {} bad, {} not checked (archived)",
        bad.len(),
        skipped.len()
    );
    if bad.is_empty() {
        return Ok(EXIT_OK);
    }
    eprintln!("subvault: {} bad object(s):", bad.len());
    for b in &bad {
        eprintln!("{}: {}", b.key, b.problem);
    }
    Ok(EXIT_FAILURE)
}

/// The objects to check; chain problems found on the way go to `bad`.
fn select(
    store: &AnyStore,
    backups: &[Backup],
    args: &VerifyArgs,
    bad: &mut Vec<Bad>,
) -> Option<Vec<Backup>> {
    let mut out: BTreeMap<String, Backup> = BTreeMap::new();
    let mut add_chain = |leaf: &Backup, bad: &mut Vec<Bad>| match chain::chain(backups, leaf) {
        Ok(c) => out.extend(c.into_iter().map(|b| (b.key.clone(), b))),
        Err(e) => bad.push(Bad {
            key: leaf.key.clone(),
            problem: e.to_string(),
        }),
    };
    if let Some(u) = args.uuid {
        let leaf = chain::select(backups, chain::Selector::Uuid(u)).ok()?;
        add_chain(leaf, bad);
    } else if args.all {
        for (b, parent) in chain::broken(backups) {
            bad.push(Bad {
                key: b.key.clone(),
                problem: format!("its send parent {parent} has no object (missing chain object)"),
            });
        }
        out.extend(backups.iter().map(|b| (b.key.clone(), b.clone())));
    } else {
        let mut newest: BTreeMap<(Uuid, String), &Backup> = BTreeMap::new();
        for b in backups {
            let name = basename_of(store.prefix(), &b.key).unwrap_or_default();
            let e = newest.entry((b.source_uuid, name)).or_insert(b);
            if (b.time, b.ctransid) > (e.time, e.ctransid) {
                *e = b;
            }
        }
        for leaf in newest.into_values() {
            add_chain(leaf, bad);
        }
    }
    let mut v: Vec<Backup> = out.into_values().collect();
    if let Some(n) = args.sample {
        fastrand::shuffle(&mut v);
        v.truncate(n);
        v.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Some(v)
}

enum Check {
    Good(String),
    Archived(String),
}

/// Bytes buffered ahead of the checker per object.
const VERIFY_WINDOW: usize = 8 << 20;

async fn check(store: &Arc<AnyStore>, b: &Backup, bucket: &str) -> Result<Check, String> {
    if matches!(
        b.storage_class.as_deref(),
        Some("GLACIER") | Some("DEEP_ARCHIVE")
    ) {
        let info = store.head(&b.key).await.map_err(|e| e.to_string())?;
        if info.needs_restore() {
            return Ok(Check::Archived(restore_request_command(bucket, &b.key)));
        }
    }
    // Through restore's downloader, so a body that breaks off midway is
    // resumed with a ranged GET instead of failing the check.
    let body = Fetch::start(
        store.clone(),
        b.key.clone(),
        b.size.unwrap_or(u64::MAX),
        VERIFY_WINDOW,
    );
    let s = stream::verify_object(body, b.codec)
        .await
        .map_err(|e| match &e {
            StreamError::ObjectRead(inner) => download_cause(inner),
            _ => e.to_string(),
        })?;
    let how = match (&s.trailer, s.verified) {
        (Some(_), true) => "length and SHA-256 match the trailer, send-stream CRCs ok",
        _ => "no checksum trailer (not written by subvault): send-stream CRCs ok",
    };
    Ok(Check::Good(format!(
        "{}, {} raw, {how}",
        s.codec,
        human_bytes(s.raw_len)
    )))
}
