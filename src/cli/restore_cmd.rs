//! `subvault restore --to DIR`: fetch a backup's chain and `btrfs receive` it.
//!
//! Chooses the remote, the source and the point (`--at`, `--uuid`, `--latest`),
//! then hands the chain to `ops::restore`, which does the downloading,
//! verifying and receiving. `--dry-run` stops after printing the chain.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Value};
use uuid::Uuid;

use super::load_config;
use super::time_arg::parse_time;
use crate::errors::{UsageError, EXIT_OK};
use crate::ops::restore::{self, Chosen, RestoreError, Restored, Selector, StepAction, Target};
use crate::ops::{remotes, sources::select_sources};
use crate::units::{human_bytes, show_time};
/// Arguments of `subvault restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Directory on btrfs to receive into; one read-only subvolume per chain step
    /// appears in it. Earlier steps already in it (same received uuid) are reused.
    /// With --path: a directory on any filesystem to copy the paths into.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Restore only this file or directory (relative to the source's root,
    /// kept under DIR; repeat for more) onto any filesystem, through the
    /// browse cache (docs/restore.md#restoring-one-file).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["pitr", "dry_run", "json"])]
    pub path: Vec<String>,
    #[command(flatten)]
    pub cache: super::browse_cmd::CacheArgs,
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
    /// Point-in-time recovery of a PostgreSQL source (needs --source): restore
    /// the newest backup consistent before TIME and set the copy up to replay
    /// the WAL archive (`wal-fetch`) up to TIME (fractions of a second allowed).
    #[arg(long, value_name = "TIME", group = "point", requires = "source")]
    pub pitr: Option<String>,
    /// With --pitr: what the server does at the target (`promote`: open for
    /// writes on a new timeline; `pause`: stay read-only to inspect,
    /// `pg_wal_replay_resume()` to promote; `shutdown`).
    #[arg(long, value_name = "ACTION", default_value = "promote", value_parser = ["promote", "pause", "shutdown"], requires = "pitr")]
    pub target_action: String,
    /// With --pitr: the timeline to recover along (`recovery_target_timeline`):
    /// `latest` (PostgreSQL's default: follow the newest timeline in the
    /// archive, e.g. after a promotion of this cluster), `current` (the base
    /// backup's: the original's history even when a promoted copy archived
    /// a newer timeline into the same archive), or a timeline id.
    #[arg(long, value_name = "TLI", default_value = "latest", value_parser = crate::ops::restore::pitr::parse_timeline, requires = "pitr")]
    pub timeline: String,
    /// With --pitr: start the copy (`pg_ctl` as the data directory's owner,
    /// `archive_mode=off`) and wait until recovery has reached the target;
    /// exit 1 with the end of its log if it does not.
    #[arg(long, requires = "pitr")]
    pub start: bool,
    /// With --start: the port (default: a free one).
    #[arg(long, value_name = "PORT", requires = "start")]
    pub port: Option<u16>,
    /// With --start: a server setting for the copy, `NAME=VALUE` (repeat for
    /// more), e.g. `hba_file=/etc/postgresql/15/main/pg_hba.conf`.
    #[arg(long = "pg-setting", value_name = "NAME=VALUE", requires = "start")]
    pub pg_settings: Vec<String>,
    /// With --start: seconds recovery may take before giving up.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 3600,
        requires = "start"
    )]
    pub start_timeout: u64,
    /// Print the chain and the bytes to download; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// MiB of the next object to download while the current one is received.
    #[arg(long, value_name = "MIB", default_value_t = restore::DEFAULT_PREFETCH >> 20)]
    pub prefetch_mib: usize,
    /// Print the result (or with --dry-run the chain) as one JSON object
    /// (docs/json.md) instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs `subvault restore`.
pub fn execute(config_path: &Path, args: &RestoreArgs) -> Result<i32> {
    if !args.path.is_empty() {
        let point = super::browse_cmd::PointArgs {
            source: args.source.clone(),
            remote: args.remote.clone(),
            at: args.at.clone(),
            uuid: args.uuid,
        };
        return super::browse_cmd::restore_paths(
            config_path,
            &args.path,
            &args.to,
            &point,
            &args.cache,
        );
    }
    let config = load_config(config_path)?;
    let source = match &args.source {
        Some(n) => Some(select_sources(&config, std::slice::from_ref(n))?[0]),
        None => None,
    };
    let rc = remotes::pick(&config, args.remote.as_deref(), source)?;
    let target = Target::open(&args.to).map_err(|e| UsageError(e.to_string()))?;
    let tz = config.timezone;
    if !args.dry_run {
        // Before the steps are planned: a step a killed restore left
        // half-received is deleted, so it is received again.
        for note in target.clear_interrupted()? {
            eprintln!("subvault: {note}");
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    let mut pitr = None;
    let selector = match (&args.at, args.uuid, &args.pitr) {
        (Some(at), _, _) => Selector::At(parse_time(at, config.timezone, "--at")?),
        (None, Some(u), _) => Selector::Uuid(u),
        (None, None, Some(t)) => {
            let time = parse_time(t, config.timezone, "--pitr")?;
            let source = source.expect("clap requires --source with --pitr");
            let base = rt.block_on(restore::pitr::choose_base(&config, rc, source, time))?;
            println!(
                "point-in-time recovery to {}: base backup {} (consistent at {}), WAL archived up to {} ({} object(s), {})",
                show_time(time, tz),
                base.backup.uuid,
                show_time(base.consistent_at, tz),
                show_time(base.wal_end, tz),
                base.wal_objects.0,
                human_bytes(base.wal_objects.1)
            );
            let uuid = base.backup.uuid;
            pitr = Some((time, source));
            Selector::Uuid(uuid)
        }
        (None, None, None) => Selector::Latest,
    };
    let chosen = rt.block_on(restore::choose(&config, rc, source, selector, &target))?;
    if args.dry_run {
        if args.json {
            let out = chain_json(&chosen, &target);
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print_dry_run(&chosen, &target, tz);
        }
        return Ok(EXIT_OK);
    }
    let (leaf, name) = (chosen.leaf.clone(), chosen.name.clone());
    let chain = args.json.then(|| chain_json(&chosen, &target));
    let progress: Box<dyn crate::progress::Progress> = if args.json || super::quiet() {
        Box::new(crate::progress::NoProgress)
    } else {
        super::progress::for_stderr("restore")
    };
    let prefetch = args.prefetch_mib.max(1) << 20;
    let restored = rt
        .block_on(restore::restore(chosen, &target, prefetch, progress.as_ref()))
        .inspect_err(|e| {
            if let Some(RestoreError::Archived { commands }) = e.downcast_ref() {
                eprintln!("subvault: objects in archive storage; request their restore (takes hours for DEEP_ARCHIVE) and run this again:");
                for c in commands {
                    eprintln!("  {c}");
                }
            }
        })?;
    match chain {
        Some(mut out) => {
            out["restored"] = restored_json(&restored);
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        None if super::quiet() => {}
        None => print_restored(&restored, &leaf, name.as_deref(), tz),
    }
    if let Some((time, source)) = pitr {
        let copy = restored.postgres.as_ref().ok_or_else(|| {
            anyhow::anyhow!("--pitr: the restored backup was not prepared as a PostgreSQL copy")
        })?;
        let settings = restore::pitr::recovery_settings(
            &config,
            source,
            time,
            &args.target_action,
            &args.timeline,
        )?;
        let (datadir, done) = crate::postgres::write_recovery(&copy.datadir, &settings)?;
        for line in &done {
            println!("PostgreSQL: {line}");
        }
        if args.start {
            return start_copy(&datadir, args, &show_time(time, tz));
        }
        println!(
            "PostgreSQL: start it to recover to {}: pg_ctl -D {} -o '-c port=PORT -c archive_mode=off' -l LOGFILE start (as the data directory's owner). It replays the WAL archive up to the target, then {}s (its log: \"recovery stopping before commit ...\"). archive_mode=off keeps the copy from archiving into the original's archive; give it an archive of its own before it runs for long",
            show_time(time, tz),
            datadir.display(),
            args.target_action
        );
        if !datadir.join("postgresql.conf").exists() {
            // Debian keeps the config in /etc, and that config's
            // data_directory names the original cluster: never start the
            // copy with it.
            println!(
                "PostgreSQL: {} has no postgresql.conf (Debian keeps it in /etc/postgresql/...): create an empty one as its owner and add your settings with -c (e.g. -c hba_file=/etc/postgresql/15/main/pg_hba.conf); do not pass that cluster's config_file: its data_directory is the original's",
                datadir.display()
            );
        }
    }
    Ok(EXIT_OK)
}

/// `restore --pitr --start`: starts the copy and waits for its target.
fn start_copy(datadir: &Path, args: &RestoreArgs, time: &str) -> Result<i32> {
    for s in &args.pg_settings {
        if !s.contains('=') {
            return Err(UsageError(format!("--pg-setting {s:?}: expected NAME=VALUE")).into());
        }
    }
    let opts = crate::postgres::start::StartOptions {
        port: args.port,
        settings: args.pg_settings.clone(),
        action: args.target_action.clone(),
        timeout: std::time::Duration::from_secs(args.start_timeout),
    };
    println!(
        "PostgreSQL: starting {} (archive_mode=off) and waiting for recovery to reach {time}",
        datadir.display()
    );
    match crate::postgres::start::start_and_wait(datadir, &opts) {
        Ok(s) if s.running => {
            println!(
                "PostgreSQL: recovered to {time} and {}; port {}, log {}. Connect as the data directory's owner: psql -p {} (or -h 127.0.0.1 -p {}); stop: pg_ctl -D {} stop",
                if args.target_action == "pause" { "paused (read-only; SELECT pg_wal_replay_resume() promotes)" } else { "promoted (open for writes)" },
                s.port,
                s.log.display(),
                s.port,
                s.port,
                datadir.display()
            );
            Ok(EXIT_OK)
        }
        Ok(s) => {
            println!(
                "PostgreSQL: recovered to {time} and shut down (log {}); start it again with pg_ctl -D {} start",
                s.log.display(),
                datadir.display()
            );
            Ok(EXIT_OK)
        }
        Err(f) => {
            eprintln!(
                "subvault: restore --start: {} (log {}); its last lines:\n{}",
                f.why,
                f.log.display(),
                f.log_tail
            );
            Ok(crate::errors::EXIT_FAILURE)
        }
    }
}

/// `restore --json`: the chosen chain; `restored` is filled in after the
/// receive (null for --dry-run).
fn chain_json(chosen: &Chosen, target: &Target) -> Value {
    let steps: Vec<Value> = chosen
        .steps
        .iter()
        .map(|s| {
            let (action, reuse) = match &s.action {
                StepAction::Receive => ("receive", None),
                StepAction::Skip => ("skip", None),
                StepAction::Reuse(p) => ("reuse", Some(p.display().to_string())),
            };
            json!({
                "key": s.backup.key(),
                "uuid": s.backup.uuid,
                "time": s.backup.time,
                "full": s.backup.send_parent_uuid.is_none(),
                "size": s.backup.size,
                "storage_class": s.backup.storage_class.as_deref().unwrap_or("STANDARD"),
                "action": action,
                "reuse_path": reuse,
            })
        })
        .collect();
    json!({
        "version": 1,
        "remote": chosen.remote.id,
        "name": chosen.name,
        "target": target.dir().display().to_string(),
        "leaf": {
            "key": chosen.leaf.key(),
            "uuid": chosen.leaf.uuid,
            "time": chosen.leaf.time,
        },
        "steps": steps,
        "bytes_to_download": chosen.bytes_to_get(),
        "restored": Value::Null,
    })
}

fn restored_json(restored: &Restored) -> Value {
    let received: Vec<Value> = restored
        .received
        .iter()
        .map(|r| {
            json!({
                "key": r.key,
                "path": r.path.display().to_string(),
                "object_bytes": r.object_len,
                "raw_bytes": r.raw_len,
                "checksummed": r.checksummed,
                "seconds": r.seconds,
            })
        })
        .collect();
    json!({
        "path": restored.path().display().to_string(),
        "received": received,
        "downloaded_bytes": restored.received.iter().map(|r| r.object_len).sum::<u64>(),
        "postgres": restored.postgres.as_ref().map(|pg| json!({
            "datadir": pg.datadir.display().to_string(),
            "done": pg.done,
        })),
    })
}

fn print_dry_run(chosen: &Chosen, target: &Target, tz: chrono_tz::Tz) {
    println!(
        "restore of {} ({}) from {} into {}:",
        chosen.leaf.uuid,
        show_time(chosen.leaf.time, tz),
        crate::remote::ObjectStore::describe(&chosen.store),
        target.dir().display()
    );
    for s in &chosen.steps {
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
            s.backup.key()
        );
    }
    let to_get = chosen.bytes_to_get();
    println!(
        "{} object(s) to download, {} ({to_get} bytes)",
        chosen.to_receive().count(),
        human_bytes(to_get)
    );
}

fn print_restored(
    restored: &Restored,
    leaf: &crate::core::model::Backup,
    name: Option<&str>,
    tz: chrono_tz::Tz,
) {
    println!(
        "restored {} ({}snapshot {} of {}, {} object(s), {} downloaded)",
        restored.path().display(),
        name.map(|n| format!("{n}: ")).unwrap_or_default(),
        leaf.uuid,
        show_time(leaf.time, tz),
        restored.received.len(),
        human_bytes(restored.received.iter().map(|r| r.object_len).sum())
    );
    if let Some(pg) = &restored.postgres {
        for line in &pg.done {
            println!("PostgreSQL: {line}");
        }
        println!(
            "PostgreSQL: ready to start: {} (writable copy; for a backup-mode snapshot set \
             restore_command to your WAL archive first, see docs/postgres.md)",
            pg.datadir.display()
        );
    }
}
