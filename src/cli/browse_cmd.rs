//! `restore --path`, `ls`, `mount`, `umount` and `cache clean`: a backup on
//! any filesystem, through the browse cache (see `ops::browse`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use uuid::Uuid;

use super::load_config;
use super::time_arg::parse_time;
use crate::config::{Config, RemoteConfig, Source};
use crate::core::browse::{entry_json, format_line, normalize, outermost};
use crate::core::chain::Selector;
use crate::errors::{UsageError, EXIT_OK};
use crate::ops::browse::{self, cache, copy, mount, walk, Point, Settings};
use crate::ops::{remotes, sources::select_sources};
use crate::progress::Progress;
use crate::units::human_bytes;
use crate::units::parse_size;

/// Where the browse cache is and how big a new image may grow.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// Directory of the browse cache images (one sparse btrfs image per remote).
    #[arg(long, value_name = "DIR", env = "SUBVAULT_BROWSE_CACHE", default_value = cache::DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Size of a new cache image, the most disk it can take (e.g. 64G); an
    /// existing image keeps its size until `subvault cache clean`.
    #[arg(long, value_name = "SIZE", env = "SUBVAULT_BROWSE_CACHE_MAX", default_value = cache::DEFAULT_MAX, value_parser = parse_size)]
    pub cache_max: u64,
}

impl CacheArgs {
    fn settings(&self) -> Settings {
        Settings {
            dir: self.cache_dir.clone(),
            max_bytes: self.cache_max,
        }
    }
}

/// Which backup: the same selection as `restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct PointArgs {
    /// The source whose backup to open (needed when a remote holds several).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The remote (default: the source's first remote, or the only remote).
    #[arg(long, value_name = "ID")]
    pub remote: Option<String>,
    /// The newest backup taken at or before this time (default: the newest).
    #[arg(long, value_name = "TIME", conflicts_with = "uuid")]
    pub at: Option<String>,
    /// The backup of the snapshot with this uuid.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<Uuid>,
}

/// Arguments of `subvault ls`.
#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    point: PointArgs,
    /// Path inside the backup, relative to the source's root (default: all).
    #[arg(value_name = "PATH")]
    path: Option<String>,
    /// One JSON array of entries instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Arguments of `subvault mount`.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    #[command(flatten)]
    point: PointArgs,
    /// An empty directory to mount the backup at, read-only.
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: PathBuf,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Arguments of `subvault umount`.
#[derive(Debug, Clone, clap::Args)]
pub struct UmountArgs {
    /// Where `subvault mount` mounted a backup.
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: PathBuf,
}

/// `subvault cache ...`
#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Unmount, detach and delete the browse cache images.
    Clean(CacheArgs),
}

fn select<'a>(
    config: &'a Config,
    p: &PointArgs,
) -> Result<(&'a RemoteConfig, Option<&'a Source>, Selector)> {
    let source = match &p.source {
        Some(n) => Some(select_sources(config, std::slice::from_ref(n))?[0]),
        None => None,
    };
    let rc = remotes::pick(config, p.remote.as_deref(), source)?;
    let selector = match (&p.at, p.uuid) {
        (Some(at), _) => Selector::At(parse_time(at, config.timezone, "--at")?),
        (None, Some(u)) => Selector::Uuid(u),
        (None, None) => Selector::Latest,
    };
    Ok((rc, source, selector))
}

fn progress(quiet: bool) -> Box<dyn Progress> {
    if quiet || super::quiet() {
        Box::new(crate::progress::NoProgress)
    } else {
        super::progress::for_stderr("fetch")
    }
}

fn open(
    config: &Config,
    p: &PointArgs,
    cache: &CacheArgs,
    quiet: bool,
) -> Result<(tokio::runtime::Runtime, Point)> {
    let (rc, source, selector) = select(config, p)?;
    let rt = tokio::runtime::Runtime::new()?;
    let progress = progress(quiet);
    let point = rt.block_on(browse::open_point(
        config,
        rc,
        source,
        selector,
        &cache.settings(),
        progress.as_ref(),
    ))?;
    progress.finish();
    Ok((rt, point))
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

fn fetched(point: &Point) -> String {
    if point.received == 0 {
        "from the browse cache".to_string()
    } else {
        format!(
            "{} step(s) received into the browse cache, {} downloaded",
            point.received,
            human_bytes(point.downloaded)
        )
    }
}

/// `subvault restore --path P... --to DIR`.
pub fn restore_paths(
    config_path: &Path,
    paths: &[String],
    to: &Path,
    point: &PointArgs,
    cache: &CacheArgs,
) -> Result<i32> {
    let config = load_config(config_path)?;
    let wanted: Vec<PathBuf> = paths
        .iter()
        .map(|p| normalize(p))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let wanted = outermost(&wanted);
    let (_rt, point) = open(&config, point, cache, false)?;
    copy::check_paths(&point.root, &wanted, &point.snapshot).map_err(usage)?;
    let placed = copy::copy_out(&point.root, &wanted, to)?;
    if !super::quiet() {
        println!(
            "restored {} path(s) of {} into {} ({}): {}",
            wanted.len(),
            point.snapshot,
            to.display(),
            fetched(&point),
            placed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(EXIT_OK)
}

/// Runs `subvault ls`.
pub fn ls(config_path: &Path, args: &LsArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let rel = normalize(args.path.as_deref().unwrap_or("/")).map_err(usage)?;
    let (_rt, point) = open(&config, &args.point, &args.cache, args.json)?;
    copy::check_paths(&point.root, std::slice::from_ref(&rel), &point.snapshot)
        .map_err(|e| usage(e.to_string().replacen("--path ", "PATH ", 1)))?;
    let entries = walk::list(&point.root, &rel)?;
    if args.json {
        let all: Vec<_> = entries.iter().map(entry_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for e in &entries {
            writeln!(out, "{}", format_line(e))?;
        }
    }
    Ok(EXIT_OK)
}

/// Runs `subvault mount`.
pub fn mount(config_path: &Path, args: &MountArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let dst = mount::check_mountpoint(&args.mountpoint).map_err(usage)?;
    let (_rt, mut point) = open(&config, &args.point, &args.cache, false)?;
    mount::bind_ro(&point.root, &dst)?;
    point.cache.keep_mounted();
    if !super::quiet() {
        println!(
            "mounted {} read-only at {} ({}); `subvault umount {}` when done",
            point.snapshot,
            dst.display(),
            fetched(&point),
            dst.display()
        );
    }
    Ok(EXIT_OK)
}

/// Runs `subvault umount`.
pub fn umount(args: &UmountArgs) -> Result<i32> {
    let cache_mnt = mount::unmount(&args.mountpoint).map_err(usage)?;
    if !super::quiet() {
        match cache_mnt {
            Some(c) => println!(
                "unmounted {} and the browse cache {} (no other mount used it)",
                args.mountpoint.display(),
                c.display()
            ),
            None => println!(
                "unmounted {} (the browse cache stays mounted for the other mounts of it)",
                args.mountpoint.display()
            ),
        }
    }
    Ok(EXIT_OK)
}

/// Runs `subvault cache clean`.
pub fn cache_clean(args: &CacheArgs) -> Result<i32> {
    let cleaned = cache::clean(&args.cache_dir)?;
    if !super::quiet() {
        if cleaned.is_empty() {
            println!("no browse cache in {}", args.cache_dir.display());
        }
        for c in cleaned {
            println!(
                "removed {} ({} on disk)",
                c.image.display(),
                human_bytes(c.bytes)
            );
        }
    }
    Ok(EXIT_OK)
}
