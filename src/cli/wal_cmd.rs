//! `subvault wal-push %p` and `subvault wal-fetch %f %p`: PostgreSQL's
//! `archive_command` and `restore_command` (docs/postgres.md, "WAL archive").
//!
//! PostgreSQL reads only their exit status and copies stderr into its log:
//! wal-push exits 0 only when the file is durable on every remote; wal-fetch
//! exits 1 without a word when no remote has the file (the normal end of the
//! archive), and [`EXIT_WAL_FATAL`] when a copy exists but cannot be used.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::load_config;
use crate::errors::{EXIT_FAILURE, EXIT_OK};
use crate::ops::wal::{self, FetchError, Pushed};
use crate::ops::wal_prefetch::Prefetch;
use crate::units::human_bytes;

/// wal-fetch's exit status when an archived copy exists but cannot be used
/// (damaged, of another cluster, or the remote failed): PostgreSQL stops
/// recovery on an exit status above 125, where it would take 1 for the end
/// of the archive and, without a recovery target, end recovery early.
pub const EXIT_WAL_FATAL: i32 = 126;

/// Arguments of `subvault wal-push`.
#[derive(Debug, Clone, clap::Args)]
pub struct WalPushArgs {
    /// The WAL file, as PostgreSQL's `%p` gives it (relative to the data directory).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The source whose remotes get the file (default: the PostgreSQL source
    /// whose subvolume holds the data directory).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The data directory (default: the current directory, where PostgreSQL
    /// runs `archive_command`).
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
}

/// Arguments of `subvault wal-fetch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WalFetchArgs {
    /// The file to fetch, as PostgreSQL's `%f` gives it.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to write it, as PostgreSQL's `%p` gives it.
    #[arg(value_name = "PATH")]
    pub dest: PathBuf,
    /// The source whose archive to read (default: the PostgreSQL source whose
    /// subvolume holds the data directory; a restored copy lies elsewhere, so
    /// `restore --pitr` writes it into restore_command).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Read only this remote (default: the source's remotes in config order,
    /// the next one when a remote fails).
    #[arg(long, value_name = "ID")]
    pub remote: Option<String>,
    /// The data directory (default: the current directory, where PostgreSQL
    /// runs `restore_command`); its `global/pg_control` names the cluster.
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// When a segment is not in the prefetch spool (`pg_wal/.subvault-prefetch`),
    /// also fetch this many segments after it at once and spool them for the
    /// calls that follow; 0 turns prefetch off.
    #[arg(long, value_name = "N", default_value_t = crate::core::wal_spool::DEFAULT_PREFETCH)]
    pub prefetch: usize,
}

fn datadir(given: &Option<PathBuf>) -> Result<PathBuf> {
    Ok(match given {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    })
}

/// Runs `subvault wal-push`.
pub fn push(config_path: &Path, args: &WalPushArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let dir = datadir(&args.pgdata)?;
    let source = wal::owning_source(&config, &dir, args.source.as_deref())?;
    let sysid = wal::read_system_id(&dir)?;
    let local = wal::read_local(&dir, &args.path, sysid)?;
    let rt = tokio::runtime::Runtime::new()?;
    let results = rt.block_on(wal::push(&config, source, sysid, &local))?;
    let mut failed = 0;
    for r in &results {
        match &r.outcome {
            Ok(Pushed::Uploaded { bytes }) => tracing::info!(
                "archived {} to remote {} ({}, {} raw)",
                local.file,
                r.remote,
                human_bytes(*bytes),
                human_bytes(local.data.len() as u64)
            ),
            Ok(Pushed::AlreadyThere) => tracing::info!(
                "{} was already archived on remote {} with the same content",
                local.file,
                r.remote
            ),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "subvault: wal-push {}: remote {} ({}): {}",
                    local.file,
                    r.remote,
                    r.key,
                    crate::errors::one_line(e)
                );
            }
        }
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILURE })
}

/// Runs `subvault wal-fetch`. Every failure but "not in the archive" exits
/// [`EXIT_WAL_FATAL`], usage errors included: PostgreSQL takes any status up
/// to 125 for a missing file, and a broken restore_command must stop recovery,
/// not end it early.
pub fn fetch(config_path: &Path, args: &WalFetchArgs) -> Result<i32> {
    match fetch_inner(config_path, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!(
                "subvault: wal-fetch {}: {}; recovery must stop here (exit {EXIT_WAL_FATAL})",
                args.name,
                crate::errors::one_line(&e)
            );
            Ok(EXIT_WAL_FATAL)
        }
    }
}

fn fetch_inner(config_path: &Path, args: &WalFetchArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let dir = datadir(&args.pgdata)?;
    let source = wal::owning_source(&config, &dir, args.source.as_deref())?;
    let sysid = wal::read_system_id(&dir)?;
    let dest = if args.dest.is_absolute() {
        args.dest.clone()
    } else {
        dir.join(&args.dest)
    };
    let prefetch = Prefetch::in_datadir(&dir, &dest, args.prefetch);
    let rt = tokio::runtime::Runtime::new()?;
    let got = rt.block_on(wal::fetch(
        &config,
        source,
        sysid,
        &args.name,
        &dest,
        args.remote.as_deref(),
        prefetch.as_ref(),
    ));
    match got {
        Ok(f) if f.from_spool => {
            tracing::info!(
                "restored {} from the prefetch spool {} ({})",
                args.name,
                f.key,
                human_bytes(f.bytes)
            );
            Ok(EXIT_OK)
        }
        Ok(f) => {
            tracing::info!(
                "restored {} from remote {} ({}); prefetched {} more",
                args.name,
                f.remote,
                human_bytes(f.bytes),
                f.prefetched
            );
            Ok(EXIT_OK)
        }
        Err(FetchError::Missing { name }) => {
            tracing::debug!("{name}: not in the archive");
            Ok(EXIT_FAILURE)
        }
        Err(FetchError::Failed(why)) => {
            eprintln!(
                "subvault: wal-fetch {}: {why}; recovery must stop here (exit {EXIT_WAL_FATAL})",
                args.name
            );
            Ok(EXIT_WAL_FATAL)
        }
        Err(FetchError::Usage(e)) => Err(e.into()),
    }
}
