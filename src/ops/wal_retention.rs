//! WAL retention on a remote: lists a PostgreSQL source's archive and asks
//! [`core::wal_retention`](crate::core::wal_retention) which objects no kept
//! backup can use. `run` deletes them (within the prune budget), `plan`
//! shows them.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::config::Source;
use crate::core::model::Backup;
use crate::core::object_key;
use crate::core::wal::{self, WalSummary};
use crate::core::wal_retention::{self, WalObject, WalRetention};
use crate::ops::remotes::OpenRemote;
use crate::remote::ObjectStore;

/// One source's archive on one remote: what it holds and what a run deletes.
#[derive(Debug, Clone, Serialize)]
pub struct WalPrunePlan {
    /// The remote.
    pub remote: String,
    /// What the archive holds now.
    pub archive: WalSummary,
    /// What retention decided.
    pub retention: WalRetention,
    /// The deletions exceed the prune budget: a run deletes the oldest it
    /// allows and leaves the rest to later runs, unless it is given
    /// `--allow-large-prune` (set by `plan`).
    pub over_budget: bool,
}

/// The source's WAL objects on `opened` (one listing; on an encrypted remote
/// only those whose key authenticates).
pub async fn objects(
    opened: &OpenRemote,
    source: &Source,
) -> Result<Vec<(WalObject, Option<DateTime<Utc>>)>> {
    let prefix = opened.store.prefix();
    let listed = opened.store.list().await?;
    Ok(listed
        .into_iter()
        .filter_map(|o| {
            let (system_id, file) = wal::parse_source_key(prefix, &source.name, &o.key)?;
            if let Some(k) = &opened.keys {
                k.auth.open_name(&o.key[prefix.len()..]).ok()?;
            }
            Some((
                WalObject {
                    key: o.key,
                    system_id,
                    file,
                    size: o.size,
                },
                o.last_modified,
            ))
        })
        .collect())
}

/// The backups of source `source_uuid` that `opened` holds after a run that
/// deleted `deleted` and stored `uploaded` (keys): what WAL retention keeps
/// WAL for. A deletion held back (over budget, failed) leaves its backup
/// here, so its WAL stays too.
pub fn kept_backups(
    opened: &OpenRemote,
    source_uuid: Uuid,
    deleted: &[String],
    uploaded: &[(String, u64)],
) -> Vec<Backup> {
    let prefix = opened.store.prefix();
    let gone: std::collections::HashSet<&str> = deleted
        .iter()
        .map(String::as_str)
        .chain(uploaded.iter().map(|(k, _)| k.as_str()))
        .collect();
    let mut kept: Vec<Backup> = opened
        .backups
        .iter()
        .filter(|b| b.source_uuid == source_uuid && !gone.contains(&*b.key()))
        .cloned()
        .collect();
    for (key, size) in uploaded {
        if let Ok(info) = object_key::parse_key(prefix, key) {
            kept.push(object_key::to_backup(key, &info, Some(*size), None));
        }
    }
    kept
}

/// What retention would delete from `source`'s archive on `opened`, given
/// the backups kept there.
pub async fn plan(
    remote: &str,
    opened: &OpenRemote,
    source: &Source,
    kept: &[Backup],
    now: DateTime<Utc>,
) -> Result<WalPrunePlan> {
    let listed = objects(opened, source).await?;
    let archive = wal::summarize(
        &source.name,
        listed
            .iter()
            .map(|(o, t)| (o.system_id, o.file.clone(), o.size, *t)),
    );
    let objects: Vec<WalObject> = listed.into_iter().map(|(o, _)| o).collect();
    let window = source.postgres.as_ref().and_then(|p| p.pitr_window);
    let kept: Vec<&Backup> = kept.iter().collect();
    Ok(WalPrunePlan {
        remote: remote.to_string(),
        archive,
        retention: wal_retention::retain(&objects, &kept, window, now),
        over_budget: false,
    })
}
