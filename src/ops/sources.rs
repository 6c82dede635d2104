//! A source's local side (its subvolume and snapshots) and the questions every
//! command asks about sources: which ones the command line names, which
//! backups are theirs, and what the planner is given for them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::remotes::OpenRemotes;
use crate::config::{Config, Source};
use crate::core::model::{Backup, Snapshot};
use crate::core::object_key;
use crate::core::planner::{PlanInput, RemoteInput};
use crate::errors::UsageError;
use crate::sys::btrfs::{self, BtrfsError, SubvolInfo};

/// What the local side of a source looks like now.
#[derive(Debug, Clone)]
pub struct SourceState {
    /// The source subvolume.
    pub info: SubvolInfo,
    /// Its read-only snapshots in the snapshot directory, oldest first.
    pub snapshots: Vec<Snapshot>,
}

impl SourceState {
    /// True when the source changed since its newest snapshot (or has none), so a
    /// run takes a new snapshot.
    pub fn needs_snapshot(&self) -> bool {
        needs_snapshot(self.info.ctransid, &self.snapshots)
    }
}

/// A source needs a new snapshot unless some snapshot already holds its current
/// content (same ctransid: btrfs bumps a subvolume's ctransid on every change).
pub fn needs_snapshot(source_ctransid: u64, snapshots: &[Snapshot]) -> bool {
    !snapshots.iter().any(|s| s.ctransid >= source_ctransid)
}

/// Reads the source subvolume and its snapshots.
pub fn read_source(source: &Source) -> Result<SourceState> {
    read_source_with(source, btrfs::subvol_info)
}

/// Reads the source as a run sees it: its pending writes flushed first (see
/// [`btrfs::flushed_subvol_info`]), so the ctransid comparison of
/// [`SourceState::needs_snapshot`] counts every write made before the run.
pub fn read_source_flushed(source: &Source) -> Result<SourceState> {
    read_source_with(source, btrfs::flushed_subvol_info)
}

fn read_source_with(
    source: &Source,
    info: fn(&Path) -> Result<SubvolInfo, BtrfsError>,
) -> Result<SourceState> {
    // No "source NAME:" here: `run` and `plan` print it before every error.
    let info = info(&source.path).context("cannot read the source subvolume")?;
    let snapshots = btrfs::list_snapshots(&source.snapshots, info.uuid, &source.name)
        .context("cannot list snapshots")?;
    Ok(SourceState { info, snapshots })
}

/// Picks the sources named on the command line (all when none are named).
pub fn select_sources<'a>(
    config: &'a Config,
    names: &[String],
) -> Result<Vec<&'a Source>, UsageError> {
    if names.is_empty() {
        if config.sources.is_empty() {
            return Err(UsageError(format!(
                "{} has no `sources`: add one to back up (a config without sources only \
                 reads: status --fleet, list, restore)",
                config.path.display()
            )));
        }
        return Ok(config.sources.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            config.source(n).ok_or_else(|| {
                let known: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
                UsageError(format!(
                    "--source {n:?}: no such source in {} (sources: {})",
                    config.path.display(),
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Path of the snapshot a run at `now` would take of `source`.
pub fn new_snapshot_path(source: &Source, now: DateTime<Utc>) -> PathBuf {
    source
        .snapshots
        .join(btrfs::snapshot_name(&source.name, now))
}

/// The planner's input for one source. With `planned_snapshot`, the snapshot a
/// run would take now is included as a planned one.
pub fn plan_input(
    config: &Config,
    source: &Source,
    state: &SourceState,
    remotes: &OpenRemotes,
    now: DateTime<Utc>,
    planned_snapshot: bool,
) -> Result<PlanInput> {
    let mut snapshots = state.snapshots.clone();
    if planned_snapshot {
        snapshots.push(Snapshot::planned(
            new_snapshot_path(source, now),
            state.info.uuid,
            state.info.ctransid,
            now,
        ));
    }
    let mut inputs = Vec::new();
    for up in &source.upload_to_remotes {
        // A remote that could not be opened or listed is planned as unreachable:
        // nothing goes to it, and the snapshots it will need are kept.
        let (backups, unreachable) = match remotes.get(&up.id) {
            // The planner ignores other sources' backups itself.
            Some(Ok(r)) => (r.backups.clone(), false),
            Some(Err(_)) => (Default::default(), true),
            None => anyhow::bail!("remote {} was not opened", up.id),
        };
        inputs.push(RemoteInput {
            id: up.id.clone(),
            policy: up.preserve.clone(),
            backups,
            unreachable,
        });
    }
    Ok(PlanInput {
        tz: config.timezone,
        now,
        source_uuid: state.info.uuid,
        snapshots,
        remotes: inputs,
    })
}

/// Each configured source's current subvolume uuid (`None` when unreadable,
/// e.g. after the disaster the restore is for).
pub fn source_uuids(config: &Config) -> HashMap<String, Option<Uuid>> {
    config
        .sources
        .iter()
        .map(|s| {
            let u = crate::sys::btrfs::subvol_info(&s.path).ok().map(|i| i.uuid);
            (s.name.clone(), u)
        })
        .collect()
}

/// The `restore_pipe_through` commands for the objects of the source named
/// `source` on remote `remote_id` (none when no source of that name uploads
/// there, e.g. for orphans).
pub fn restore_pipe_through<'a>(
    config: &'a Config,
    remote_id: &str,
    source: Option<&str>,
) -> &'a [Vec<String>] {
    source
        .and_then(|name| config.source(name))
        .and_then(|s| s.upload_to_remotes.iter().find(|u| u.id == remote_id))
        .map(|u| u.restore_pipe_through.as_slice())
        .unwrap_or_default()
}

/// The base name in a backup key (usually the source's name).
pub fn basename_of(prefix: &str, key: &str) -> Option<String> {
    object_key::parse_key(prefix, key).ok().map(|k| k.basename)
}

/// Backups of `source`: by its current uuid, or by the base name in the key
/// (the source may be gone, or be a new subvolume since the disaster).
pub fn backups_of_source(
    backups: Vec<Backup>,
    prefix: &str,
    source: &Source,
    uuid: Option<Uuid>,
) -> Vec<Backup> {
    backups
        .into_iter()
        .filter(|b| is_of_source(b, prefix, source, uuid))
        .collect()
}

/// Whether `b` is a backup of `source` (whose current uuid is `uuid`), by
/// the rule of [`backups_of_source`].
pub fn is_of_source(b: &Backup, prefix: &str, source: &Source, uuid: Option<Uuid>) -> bool {
    Some(b.source_uuid) == uuid || basename_of(prefix, &b.key()).as_deref() == Some(&source.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ctransid: u64) -> Snapshot {
        Snapshot {
            path: PathBuf::from("/s"),
            uuid: Uuid::from_u128(ctransid as u128),
            parent_uuid: Uuid::nil(),
            ctransid,
            time: Utc::now(),
            planned: false,
        }
    }

    #[test]
    fn snapshot_only_when_the_source_changed() {
        assert!(needs_snapshot(10, &[]));
        assert!(needs_snapshot(11, &[snap(5), snap(10)]));
        assert!(!needs_snapshot(10, &[snap(5), snap(10)]));
        // A snapshot newer than the source's ctransid (e.g. written into before it
        // was sealed read-only) also holds the current content.
        assert!(!needs_snapshot(10, &[snap(12)]));
    }
}
