//! The runner: gathers the state of a source (its subvolume, snapshots and the
//! backups on each remote), asks the planner what to do, and executes the plan.
//!
//! `plan` uses only the gathering half; `run` uses both. The planner stays pure:
//! everything that touches the kernel or a remote happens here or in `execute`.

pub mod execute;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{Config, RemoteConfig, Source, UploadConfig};
use crate::core::model::{Backup, Codec, Snapshot};
use crate::core::object_key::{self, KeyInfo};
use crate::core::pg_record::{self, PgRecord};
use crate::core::planner::{PlanInput, RemoteInput, Upload};
use crate::remote::{self, AnyStore, ObjectStore};
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

/// An opened remote and the backups listed on it.
pub struct OpenRemote {
    /// The remote's config.
    pub config: RemoteConfig,
    /// The store.
    pub store: AnyStore,
    /// Every backup key found under the prefix (all sources).
    pub backups: Vec<Backup>,
}

/// Opens and lists every remote that the given sources upload to (once each).
pub async fn open_remotes(
    config: &Config,
    sources: &[&Source],
) -> BTreeMap<String, Result<OpenRemote>> {
    let mut out = BTreeMap::new();
    for source in sources {
        for up in &source.upload_to_remotes {
            if out.contains_key(&up.id) {
                continue;
            }
            let remote_cfg = config
                .remote(&up.id)
                .expect("config validation guarantees remote ids exist")
                .clone();
            let opened = open_and_list(remote_cfg).await;
            out.insert(up.id.clone(), opened);
        }
    }
    out
}

async fn open_and_list(config: RemoteConfig) -> Result<OpenRemote> {
    let store = remote::open(&config)
        .await
        .with_context(|| format!("remote {}: cannot open", config.id))?;
    let (backups, _ignored) = remote::list_backups(&store, store.prefix())
        .await
        // The error names the store and the operation.
        .with_context(|| format!("remote {}", config.id))?;
    Ok(OpenRemote {
        config,
        store,
        backups,
    })
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
    remotes: &BTreeMap<String, Result<OpenRemote>>,
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
        let remote = match remotes.get(&up.id) {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(anyhow::anyhow!(crate::errors::one_line(e))),
            None => anyhow::bail!("remote {} was not opened", up.id),
        };
        inputs.push(RemoteInput {
            id: up.id.clone(),
            policy: up.preserve.clone(),
            backups: remote
                .backups
                .iter()
                .filter(|b| b.source_uuid == state.info.uuid)
                .cloned()
                .collect(),
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

/// The codec recorded in the key for an upload: ours, unless `pipe_through`
/// commands transform the bytes after compression. Then the key says nothing
/// (as btrfs2s3's keys) and readers sniff the object's magic bytes.
pub fn key_codec(up: &UploadConfig) -> Option<Codec> {
    if up.pipe_through.is_empty() {
        Some(up.compression.codec)
    } else {
        None
    }
}

/// How the new objects of one source on one remote are named.
pub struct KeyNaming<'a> {
    /// The key's base name (the source's name).
    pub basename: &'a str,
    /// The zone the key's time is written in.
    pub tz: chrono_tz::Tz,
    /// The codec the key records (see [`key_codec`]).
    pub codec: Option<Codec>,
    /// The remote's prefix.
    pub prefix: &'a str,
    /// The source subvolume's uuid (`.prnt`).
    pub source_uuid: Uuid,
}

impl<'a> KeyNaming<'a> {
    /// The naming of `source`'s uploads to the remote `up` describes, under `prefix`.
    pub fn new(
        config: &Config,
        source: &'a Source,
        up: &UploadConfig,
        prefix: &'a str,
        source_uuid: Uuid,
    ) -> Self {
        KeyNaming {
            basename: &source.name,
            tz: config.timezone,
            codec: key_codec(up),
            prefix,
            source_uuid,
        }
    }

    /// The key of `upload`; a PostgreSQL snapshot's record adds its suffixes.
    pub fn key(&self, upload: &Upload, pg: Option<&PgRecord>) -> String {
        let key = object_key::format_key(
            self.prefix,
            &KeyInfo {
                basename: self.basename.to_string(),
                time: upload.time.with_timezone(&self.tz).fixed_offset(),
                ctransid: upload.ctransid,
                uuid: upload.uuid,
                send_parent_uuid: upload.send_parent_uuid,
                source_uuid: self.source_uuid,
                codec: self.codec,
            },
        );
        match pg {
            Some(r) => key + &pg_record::key_suffix(r),
            None => key,
        }
    }
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
