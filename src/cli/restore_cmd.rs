//! `subvault restore --to DIR`: fetch a backup's chain and `btrfs receive` it.
//!
//! Chooses the remote, the source and the point (`--at`, `--uuid`, `--latest`),
//! then hands the chain to `crate::restore`, which does the downloading,
//! verifying and receiving. `--dry-run` stops after printing the chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use uuid::Uuid;

use super::load_config;
use super::time_arg::parse_time;
use crate::config::{Config, RemoteConfig, RemoteKind, Source};
use crate::core::chain;
use crate::core::model::Backup;
use crate::core::object_key;
use crate::errors::{UsageError, EXIT_OK};
use crate::remote::{self, AnyStore, ObjectStore};
use crate::restore::{self, ReceiveOptions, RestoreError, Selector, StepAction, Target};
use crate::units::{human_bytes, show_time};

/// Arguments of `subvault restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Directory on btrfs to receive into; one read-only subvolume per chain step
    /// appears in it. Earlier steps already in it (same received uuid) are reused.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The source whose backup to restore (needed when a remote holds several).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The remote to restore from (default: the source's first remote, or the only remote).
    #[arg(long, value_name = "ID")]
    pub remote: Option<String>,
    /// Restore the newest backup taken at or before this time (RFC 3339, or local
    /// time in the configured zone, e.g. 2026-11-27T13:00 or 2026-11-27).
    #[arg(long, value_name = "TIME", group = "point")]
    pub at: Option<String>,
    /// Restore the backup of the snapshot with this uuid (see `subvault list`).
    #[arg(long, value_name = "UUID", group = "point")]
    pub uuid: Option<Uuid>,
    /// Restore the newest backup (the default).
    #[arg(long, group = "point")]
    pub latest: bool,
    /// Print the chain and the bytes to download; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// MiB of the next object to download while the current one is received.
    #[arg(long, value_name = "MIB", default_value_t = restore::DEFAULT_PREFETCH >> 20)]
    pub prefetch_mib: usize,
}

/// Picks the remote: `--remote`, else the source's first remote, else the only one.
pub(crate) fn pick_remote<'a>(
    config: &'a Config,
    id: Option<&str>,
    source: Option<&Source>,
) -> Result<&'a RemoteConfig, UsageError> {
    let ids = || {
        config
            .remotes
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(id) = id {
        return config.remote(id).ok_or_else(|| {
            UsageError(format!(
                "--remote {id:?}: no such remote in {} (remotes: {})",
                config.path.display(),
                ids()
            ))
        });
    }
    if let Some(up) = source.and_then(|s| s.upload_to_remotes.first()) {
        if let Some(r) = config.remote(&up.id) {
            return Ok(r);
        }
    }
    match config.remotes.as_slice() {
        [only] => Ok(only),
        _ => Err(UsageError(format!(
            "several remotes are configured: choose one with --remote (remotes: {})",
            ids()
        ))),
    }
}

/// Opens a remote and lists its backups.
pub(crate) async fn open_listed(rc: &RemoteConfig) -> Result<(AnyStore, Vec<Backup>)> {
    let store = remote::open(rc)
        .await
        .with_context(|| format!("remote {}: cannot open", rc.id))?;
    let (backups, _) = remote::list_backups(&store, store.prefix())
        .await
        .with_context(|| format!("remote {}: cannot list {}", rc.id, store.describe()))?;
    Ok((store, backups))
}

/// The bucket name for archive restore commands ("" for local remotes).
pub(crate) fn bucket_of(rc: &RemoteConfig) -> &str {
    match &rc.kind {
        RemoteKind::S3(s) => &s.bucket,
        _ => "",
    }
}

/// Each configured source's current subvolume uuid (`None` when unreadable,
/// e.g. after the disaster the restore is for).
pub(crate) fn source_uuids(config: &Config) -> HashMap<String, Option<Uuid>> {
    config
        .sources
        .iter()
        .map(|s| {
            let u = crate::sys::btrfs::subvol_info(&s.path).ok().map(|i| i.uuid);
            (s.name.clone(), u)
        })
        .collect()
}

/// The base name in a backup key (usually the source's name).
pub(crate) fn basename_of(prefix: &str, key: &str) -> Option<String> {
    object_key::parse_key(prefix, key).ok().map(|k| k.basename)
}

/// Backups of `source`: by its current uuid, or by the base name in the key
/// (the source may be gone, or be a new subvolume since the disaster).
fn of_source(
    backups: Vec<Backup>,
    prefix: &str,
    source: &Source,
    uuid: Option<Uuid>,
) -> Vec<Backup> {
    backups
        .into_iter()
        .filter(|b| {
            Some(b.source_uuid) == uuid
                || basename_of(prefix, &b.key).as_deref() == Some(&source.name)
        })
        .collect()
}

/// Runs `subvault restore`.
pub fn execute(config_path: &Path, args: &RestoreArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let source = match &args.source {
        Some(n) => Some(super::plan_cmd::select_sources(&config, std::slice::from_ref(n))?[0]),
        None => None,
    };
    let rc = pick_remote(&config, args.remote.as_deref(), source)?;
    let selector = match (&args.at, args.uuid) {
        (Some(at), _) => Selector::At(parse_time(at, config.timezone, "--at")?),
        (None, Some(u)) => Selector::Uuid(u),
        (None, None) => Selector::Latest,
    };
    let target = Target::open(&args.to).map_err(|e| UsageError(e.to_string()))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(restore_async(&config, rc, source, selector, target, args))
}

async fn restore_async(
    config: &Config,
    rc: &RemoteConfig,
    source: Option<&Source>,
    selector: Selector,
    target: Target,
    args: &RestoreArgs,
) -> Result<i32> {
    let (store, mut backups) = open_listed(rc).await?;
    let prefix = store.prefix().to_string();
    if let Some(s) = source {
        let uuid = source_uuids(config).get(&s.name).copied().flatten();
        backups = of_source(backups, &prefix, s, uuid);
    } else if !matches!(selector, Selector::Uuid(_)) {
        let mut names: Vec<String> = backups
            .iter()
            .map(|b| basename_of(&prefix, &b.key).unwrap_or_default())
            .collect();
        names.sort();
        names.dedup();
        let mut sources: Vec<Uuid> = backups.iter().map(|b| b.source_uuid).collect();
        sources.sort();
        sources.dedup();
        if sources.len() > 1 {
            return Err(UsageError(format!(
                "remote {} holds backups of {} sources (names in keys: {}): choose one with --source",
                rc.id,
                sources.len(),
                names.join(", ")
            ))
            .into());
        }
    }
    if backups.is_empty() {
        anyhow::bail!(
            "remote {} ({}) has no backups{}",
            rc.id,
            store.describe(),
            source
                .map(|s| format!(" of source {}", s.name))
                .unwrap_or_default()
        );
    }
    let leaf = chain::select(&backups, selector).map_err(RestoreError::from)?;
    let steps_chain = chain::chain(&backups, leaf).map_err(RestoreError::from)?;
    let steps = restore::plan_steps(&steps_chain, &target.subvolumes()?)?;
    let tz = config.timezone;
    let leaf = leaf.clone();
    let to_get: u64 = steps
        .iter()
        .filter(|s| s.action == StepAction::Receive)
        .filter_map(|s| s.backup.size)
        .sum();
    if args.dry_run {
        println!(
            "restore of {} ({}) from {} into {}:",
            leaf.uuid,
            show_time(leaf.time, tz),
            store.describe(),
            target.dir().display()
        );
        for s in &steps {
            let what = match &s.action {
                StepAction::Receive => "receive".to_string(),
                StepAction::Skip => "skip (a later step is in DIR)".to_string(),
                StepAction::Reuse(p) => format!("reuse {}", p.display()),
            };
            println!(
                "  {what:<8} {}  {:>10}  {}  {}",
                show_time(s.backup.time, tz),
                s.backup.size.map(human_bytes).unwrap_or_else(|| "?".into()),
                s.backup.storage_class.as_deref().unwrap_or("STANDARD"),
                s.backup.key
            );
        }
        let n = steps
            .iter()
            .filter(|s| s.action == StepAction::Receive)
            .count();
        println!(
            "{n} object(s) to download, {} ({to_get} bytes)",
            human_bytes(to_get)
        );
        return Ok(EXIT_OK);
    }
    if let Err(e) = restore::check_objects(&store, bucket_of(rc), &steps).await {
        if let RestoreError::Archived { commands } = &e {
            eprintln!("subvault: objects in archive storage; request their restore (takes hours for DEEP_ARCHIVE) and run this again:");
            for c in commands {
                eprintln!("  {c}");
            }
        }
        return Err(e.into());
    }
    let progress = super::progress::for_stderr("restore");
    let opts = ReceiveOptions {
        prefetch: args.prefetch_mib.max(1) << 20,
        progress: progress.as_ref(),
    };
    let before = target.subvolumes()?;
    let received = tokio::select! {
        r = restore::receive_chain(Arc::new(store), &target, &steps, &opts) => r?,
        _ = tokio::signal::ctrl_c() => {
            // The pipeline future is dropped here, which kills btrfs receive;
            // what it left half-done (writable, or never marked received) goes.
            let removed = restore::remove_unfinished(&target, &before);
            anyhow::bail!("interrupted{removed}");
        }
    };
    let last = received.last().expect("the leaf is always received");
    let name = source
        .map(|s| s.name.clone())
        .or_else(|| basename_of(&prefix, &leaf.key));
    println!(
        "restored {} ({}snapshot {} of {}, {} object(s), {} downloaded)",
        last.path.display(),
        name.map(|n| format!("{n}: ")).unwrap_or_default(),
        leaf.uuid,
        show_time(leaf.time, tz),
        received.len(),
        human_bytes(received.iter().map(|r| r.object_len).sum())
    );
    let pg = source.map(|s| s.postgres.is_some()).unwrap_or_else(|| {
        config.sources.iter().any(|s| {
            s.postgres.is_some() && basename_of(&prefix, &leaf.key).as_deref() == Some(&s.name)
        })
    });
    if pg {
        // The received subvolume stays read-only (it is the restore point, and
        // later incremental restores need it untouched); the server runs on a
        // writable snapshot of it, prepared as PostgreSQL's backup docs say.
        let name = format!(
            "{}.pgdata",
            last.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let dir = last.path.parent().unwrap_or(&last.path);
        let rw = crate::sys::btrfs::create_snapshot(&last.path, dir, &name, false)
            .map_err(|e| anyhow::anyhow!("PostgreSQL: cannot make a writable copy: {e}"))?;
        let done = crate::postgres::prepare_restored_datadir(&rw)
            .map_err(|e| anyhow::anyhow!("PostgreSQL: cannot prepare {}: {e}", rw.display()))?;
        for line in &done {
            println!("PostgreSQL: {line}");
        }
        println!(
            "PostgreSQL: ready to start: {} (writable copy; for a backup-mode snapshot set \
             restore_command to your WAL archive first, see README \"Restore and start\")",
            rw.display()
        );
    }
    Ok(EXIT_OK)
}
