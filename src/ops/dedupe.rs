//! `dedupe`: which trees a dedupe pass of configured sources covers.

use std::path::PathBuf;

use anyhow::Result;

use super::sources::select_sources;
use crate::config::Config;
use crate::sys::btrfs;

/// The trees of the named sources: each live subvolume first, then its
/// read-only snapshots newest first (the newest shares the most with the live
/// data).
pub fn source_trees(config: &Config, names: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for source in select_sources(config, names)? {
        let info = btrfs::subvol_info(&source.path)?;
        out.push(source.path.clone());
        let mut snaps = btrfs::list_snapshots(&source.snapshots, info.uuid, &source.name)?;
        snaps.reverse();
        out.extend(snaps.into_iter().map(|s| s.path));
    }
    Ok(out)
}
