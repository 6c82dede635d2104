//! `subvault dedupe`: share identical blocks between a source's live subvolume and
//! its snapshots (or any paths on one btrfs), then report what it found and freed.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::dedupe::{self, DedupeOptions};
use crate::units::parse_size;

/// Arguments of `subvault dedupe`.
#[derive(Debug, Clone, clap::Args)]
pub struct DedupeArgs {
    /// Compute and report everything, but share nothing (no dedupe ioctl, no index update).
    #[arg(long)]
    pub dry_run: bool,
    /// A configured source: its live subvolume and its read-only snapshots. Repeatable.
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Subvolumes or directories on the same btrfs filesystem to dedupe.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Block size in bytes (a multiple of the filesystem's sector size; K/M suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "128K", value_parser = parse_size)]
    pub block_size: u64,
    /// Run at normal CPU and IO priority instead of nice 19 / idle IO class.
    #[arg(long)]
    pub no_nice: bool,
    /// Directory of the incremental index.
    #[arg(long, value_name = "DIR", default_value = dedupe::DEFAULT_INDEX_DIR)]
    pub index_dir: PathBuf,
    /// Memory budget for block records (32 bytes per block); beyond it matching
    /// runs in several hash partitions. K/M/G suffixes allowed.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_size)]
    pub max_memory: u64,
}

/// Run `subvault dedupe`. Exit status 0 when every range was handled (deduped,
/// found different, or deferred because a send held the subvolume), 1 when some
/// ranges failed, 2 for usage errors.
pub fn execute(config_path: &Path, args: &DedupeArgs) -> anyhow::Result<i32> {
    let mut paths = Vec::new();
    if !args.sources.is_empty() {
        let config = Config::load(config_path)?;
        paths.extend(crate::ops::dedupe::source_trees(&config, &args.sources)?);
    }
    paths.extend(args.paths.iter().cloned());
    if paths.is_empty() {
        return Err(crate::errors::UsageError(
            "dedupe needs --source NAME or at least one PATH".into(),
        )
        .into());
    }
    let opts = DedupeOptions {
        block_size: args.block_size,
        dry_run: args.dry_run,
        index_dir: args.index_dir.clone(),
        max_memory: args.max_memory,
        low_priority: !args.no_nice,
        ..Default::default()
    };
    let progress = super::progress::for_stderr("dedupe");
    let result = dedupe::dedupe_paths(&paths, &opts, progress.as_ref());
    progress.finish();
    let report = match result {
        Ok(r) => r,
        Err(e @ (dedupe::DedupeError::BadBlockSize { .. } | dedupe::DedupeError::NoPaths)) => {
            return Err(crate::errors::UsageError(e.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.error_count > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("131072"), Ok(131072));
        assert_eq!(parse_size("128K"), Ok(131072));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
    }
}
