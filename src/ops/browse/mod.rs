//! Single files and browsing: `restore --path`, `ls` and `mount` of a backup
//! on any filesystem.
//!
//! ```text
//! Cache::open (lock, mkfs on first use, loop-mount)
//!   ──> restore::choose + restore::restore into the cache's mount
//!       (steps already in the cache are reused; evict old ones if it is full)
//!   ──> copy out (cp -a), walk (ls), or bind-mount read-only (mount)
//!   ──> unmount the cache unless a `subvault mount` uses it
//! ```

pub mod cache;
pub mod copy;
pub mod mount;
pub mod walk;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

pub use cache::{Cache, Settings};

use crate::config::{Config, RemoteConfig, Source};
use crate::core::browse::{eviction_order, Cached};
use crate::core::chain::Selector;
use crate::ops::restore::{self, Chosen, RestoreError, Target};
use crate::progress::Progress;
use crate::sys::btrfs;
use crate::units::human_bytes;

/// Why a browse command stopped; one line naming the path or setting.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// The cache directory or image cannot be used.
    #[error("browse cache {}: {reason}", .path.display())]
    Cache {
        /// The cache directory or image.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A PATH is not in the backup.
    #[error("--path {}: not in the backup {snapshot} (`subvault ls` lists it); nothing was written", .path.display())]
    Missing {
        /// The path asked for.
        path: PathBuf,
        /// The backup's snapshot name (it carries its time).
        snapshot: String,
    },
    /// A PATH goes through a symlink in the backup.
    #[error("--path {}: {} is a symlink in the backup {snapshot}; ask for the path it points to", .path.display(), .link.display())]
    ThroughSymlink {
        /// The path asked for.
        path: PathBuf,
        /// The symlink on the way.
        link: PathBuf,
        /// The backup's snapshot name.
        snapshot: String,
    },
    /// The target directory cannot be used.
    #[error("--to {}: {reason}", .dir.display())]
    Target {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The chain does not fit the cache.
    #[error("the chain needs about {} in the browse cache {} of {}: raise --cache-max (SUBVAULT_BROWSE_CACHE_MAX) and run `subvault cache clean` so the image is made again at that size", human_bytes(*.need), .image.display(), human_bytes(*.size))]
    TooBig {
        /// Estimated bytes.
        need: u64,
        /// The image.
        image: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// A backup received in the cache and ready to read.
#[derive(Debug)]
pub struct Point {
    /// The cache, locked and mounted.
    pub cache: Cache,
    /// The received read-only subvolume.
    pub root: PathBuf,
    /// Its name (the snapshot's, which carries its time).
    pub snapshot: String,
    /// Objects downloaded for it now (0 when the cache had it).
    pub downloaded: u64,
    /// Chain steps received now.
    pub received: usize,
}

/// Opens the cache of `rc` and makes sure the backup `selector` picks is
/// received in it: steps already there are reused, the rest downloaded; old
/// subvolumes are evicted first when the chain would not fit.
pub async fn open_point(
    config: &Config,
    rc: &RemoteConfig,
    source: Option<&Source>,
    selector: Selector,
    settings: &Settings,
    progress: &dyn Progress,
) -> Result<Point> {
    let cache = Cache::open(settings, &rc.id)?;
    let target = Target::open(cache.mount_dir())?;
    for note in target.clear_interrupted()? {
        progress.note(&note);
    }
    let chosen = match restore::choose(config, rc, source, selector, &target).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(RestoreError::AlreadyRestored { path, .. }) = e.downcast_ref() {
                let root = path.clone();
                return Ok(Point {
                    cache,
                    snapshot: snapshot_name(&root),
                    root,
                    downloaded: 0,
                    received: 0,
                });
            }
            return Err(e);
        }
    };
    make_room(&cache, &target, &chosen, progress)?;
    let mut chosen = chosen;
    // The cache holds received snapshots only: no writable PostgreSQL copy.
    chosen.postgres = false;
    let restored = restore::restore(chosen, &target, restore::DEFAULT_PREFETCH, progress).await?;
    let root = restored.path().to_path_buf();
    Ok(Point {
        cache,
        snapshot: snapshot_name(&root),
        downloaded: restored.received.iter().map(|r| r.object_len).sum(),
        received: restored.received.len(),
        root,
    })
}

fn snapshot_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Bytes on the cache's filesystem: (total, available).
fn space(dir: &Path) -> Result<(u64, u64), BrowseError> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(|e| BrowseError::Cache {
        path: dir.to_path_buf(),
        reason: format!("statvfs: {e}"),
    })?;
    let unit = s.fragment_size();
    Ok((s.blocks() * unit, s.blocks_available() * unit))
}

/// Deletes cached subvolumes, oldest received first, that are neither steps
/// of `chosen` nor bind-mounted, until the chain's estimated size fits.
/// The estimate is twice the objects' (compressed) size: the raw size is
/// only known once a stream is read, and zstd on typical data halves it; a
/// wrong guess ends as `btrfs receive` running out of space, which deletes
/// its half-received subvolume like any failed step.
fn make_room(
    cache: &Cache,
    target: &Target,
    chosen: &Chosen,
    progress: &dyn Progress,
) -> Result<(), BrowseError> {
    let need = chosen.bytes_to_get().saturating_mul(2);
    let (total, mut avail) = space(cache.mount_dir())?;
    if need > total {
        return Err(BrowseError::TooBig {
            need,
            image: cache.image().to_path_buf(),
            size: total,
        });
    }
    let chain: BTreeSet<uuid::Uuid> = chosen.steps.iter().map(|s| s.backup.uuid).collect();
    let mounted: BTreeSet<PathBuf> = cache.users().into_iter().map(|m| m.root).collect();
    while avail < need {
        let present = target.subvolumes().map_err(|e| BrowseError::Cache {
            path: cache.image().to_path_buf(),
            reason: e.to_string(),
        })?;
        let cached: Vec<Cached> = present
            .iter()
            .map(|(name, p)| Cached {
                name: name.to_string_lossy().into_owned(),
                received: btrfs::subvol_info(&p.path)
                    .map(|i| i.otime.timestamp())
                    .unwrap_or(0),
                mounted: mounted.contains(&Path::new("/").join(name)),
                needed: p.received_uuid.is_some_and(|u| chain.contains(&u)),
            })
            .collect();
        let Some(victim) = eviction_order(&cached).into_iter().next() else {
            break; // nothing left to evict: let the receive try
        };
        let path = target.join(&victim);
        btrfs::destroy_subvolume(&path).map_err(|e| BrowseError::Cache {
            path: path.clone(),
            reason: format!("cannot evict it: {e}"),
        })?;
        progress.note(&format!(
            "browse cache: evicted {victim} to make room for {}",
            human_bytes(need)
        ));
        // A deleted subvolume's space comes back when the cleaner thread has
        // dropped it, and the cleaner starts at a transaction commit (every
        // 30 s on its own): commit now, then wait for the cleaner.
        for args in [["filesystem", "sync"], ["subvolume", "sync"]] {
            let _ = std::process::Command::new("btrfs")
                .args(args)
                .arg(cache.mount_dir())
                .output();
        }
        avail = space(cache.mount_dir())?.1;
    }
    Ok(())
}
