//! `status`: is every source backed up, recently, restorably? For people and
//! for monitoring (exit status, JSON, Prometheus).
//!
//! Per source and remote, from one listing per remote: the newest backup that
//! a chain of objects restores and its age, the backups whose chain is broken,
//! how many backups and bytes per storage class; per source, the last run's
//! outcome from the state file `run` writes (`ops::run::state`). Judged:
//! `ok`, or `stale` (the newest restorable backup is older than the max age:
//! `--max-age`, else the source's `max_age`), `broken` (a backup's chain does
//! not reach a full backup), `empty` (no restorable backup at all),
//! `unreachable` (the remote cannot be listed), or `failed` (the last run of
//! the source failed). Anything but `ok` makes `status` exit 1.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::remotes::{self, OpenRemote};
use super::run::state::{self, SourceHistory};
use super::sources::{basename_of, is_of_source, source_uuids};
use crate::config::{Config, Source};
use crate::core::cost::{CostEstimate, PriceTable};
use crate::core::model::Backup;
use crate::remote::ObjectStore;

pub use crate::core::inventory::{BrokenBackup, ClassTotal, Inventory, NewestBackup};
pub use crate::units::short_duration;

/// How one source stands on one remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Fresh and restorable.
    Ok,
    /// The newest restorable backup is older than the max age.
    Stale,
    /// Some backup's chain is broken.
    Broken,
    /// No restorable backup.
    Empty,
    /// The remote could not be listed.
    Unreachable,
}

/// One source on one remote.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteStatus {
    /// The remote's id.
    pub remote: String,
    /// The judgement (the worst that applies: unreachable, broken, empty, stale).
    pub health: Health,
    /// Age of the newest restorable backup, in seconds.
    pub newest_age_seconds: Option<i64>,
    /// What the remote holds of the source (`None` when unreachable).
    pub inventory: Option<Inventory>,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// One source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The source's name.
    pub source: String,
    /// The max age applied (`--max-age`, else the source's `max_age`).
    pub max_age_seconds: Option<u64>,
    /// The last run of this source, from the state file.
    pub last_run: Option<SourceHistory>,
    /// False when the last run of the source failed.
    pub last_run_ok: bool,
    /// WAL archive lag of a PostgreSQL source; always null until WAL
    /// archiving exists (issue 18).
    pub wal_archive_lag_seconds: Option<u64>,
    /// Per remote of the source.
    pub remotes: Vec<RemoteStatus>,
}

/// One remote as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteSummary {
    /// Its id.
    pub remote: String,
    /// Where it points (never credentials).
    pub location: String,
    /// Why it could not be listed, if it could not.
    pub error: Option<String>,
    /// Backups that belong to no configured source.
    pub orphans: usize,
    /// Every backup on the remote (all sources, orphans too) by storage
    /// class, priced with the config's `prices:` (`None` without them, or
    /// when the remote could not be listed).
    pub cost: Option<CostEstimate>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The schema version of this JSON.
    pub version: u32,
    /// When it was computed.
    pub now: DateTime<Utc>,
    /// True when every source is fresh and healthy (exit status 0).
    pub healthy: bool,
    /// The last run as the state file recorded it.
    pub last_run: Option<state::RunSummaryLine>,
    /// Per source.
    pub sources: Vec<SourceStatus>,
    /// Per remote.
    pub remotes: Vec<RemoteSummary>,
}

/// Computes the status of `sources` now: one listing per remote they use.
pub async fn status(
    config: &Config,
    sources: &[&Source],
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Status> {
    let ids: Vec<&str> = {
        let mut ids: Vec<&str> = Vec::new();
        for s in sources {
            for up in &s.upload_to_remotes {
                if !ids.contains(&up.id.as_str()) {
                    ids.push(&up.id);
                }
            }
        }
        ids
    };
    let opened = remotes::open_ids(config, ids.iter().copied()).await;
    let saved = state::load(&config.path)?;
    let uuids = source_uuids(config);
    let mut out = Vec::new();
    for source in sources {
        let uuid = uuids.get(&source.name).copied().flatten();
        let history = saved.as_ref().and_then(|s| s.sources.get(&source.name));
        let limit = max_age.or(source.max_age);
        let mut remotes_out = Vec::new();
        for up in &source.upload_to_remotes {
            let r = match &opened[&up.id] {
                Ok(open) => {
                    let prefix = open.store.prefix();
                    let mine: Vec<&Backup> = open
                        .backups
                        .iter()
                        .filter(|b| is_of_source(b, prefix, source, uuid))
                        .collect();
                    judge(&up.id, Inventory::of(&mine), limit, now)
                }
                Err(e) => RemoteStatus {
                    remote: up.id.clone(),
                    health: Health::Unreachable,
                    newest_age_seconds: None,
                    inventory: None,
                    problems: vec![crate::errors::one_line(e)],
                },
            };
            remotes_out.push(r);
        }
        out.push(SourceStatus {
            source: source.name.clone(),
            max_age_seconds: limit.map(|d| d.as_secs()),
            last_run_ok: history.map_or(true, |h| h.last.ok),
            last_run: history.cloned(),
            wal_archive_lag_seconds: None,
            remotes: remotes_out,
        });
    }
    let summaries = opened
        .iter()
        .map(|(id, r)| match r {
            Ok(open) => RemoteSummary {
                remote: id.clone(),
                location: open.store.describe(),
                error: None,
                orphans: orphans(config, open, &uuids),
                cost: config
                    .prices
                    .as_ref()
                    .map(|t| stored_cost(t, &open.backups)),
            },
            Err(e) => RemoteSummary {
                remote: id.clone(),
                location: config.remote(id).map(|r| r.location()).unwrap_or_default(),
                error: Some(crate::errors::one_line(e)),
                orphans: 0,
                cost: None,
            },
        })
        .collect();
    let healthy = out
        .iter()
        .all(|s| s.last_run_ok && s.remotes.iter().all(|r| r.health == Health::Ok));
    Ok(Status {
        version: 1,
        now,
        healthy,
        last_run: saved.and_then(|s| s.last_run),
        sources: out,
        remotes: summaries,
    })
}

/// What storing `backups` costs a month under `table`.
pub fn stored_cost(table: &PriceTable, backups: &[Backup]) -> CostEstimate {
    let mut cost = CostEstimate::new(table);
    for b in backups {
        let class = b.storage_class.as_deref().unwrap_or("STANDARD");
        cost.add_storage(table, class, b.size.unwrap_or(0));
    }
    cost
}

/// Judges one source's inventory on one remote.
pub fn judge(
    remote: &str,
    inv: Inventory,
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> RemoteStatus {
    let mut problems = Vec::new();
    let age = inv.newest.as_ref().map(|n| (now - n.time).num_seconds());
    let mut health = Health::Ok;
    if let (Some(age), Some(limit)) = (age, max_age) {
        if age > limit.as_secs() as i64 {
            health = Health::Stale;
            problems.push(format!(
                "the newest restorable backup is {} old, more than the max age {}",
                short_duration(age),
                short_duration(limit.as_secs() as i64)
            ));
        }
    }
    if inv.newest.is_none() {
        health = Health::Empty;
        problems.push("no restorable backup".to_string());
    }
    if !inv.broken.is_empty() {
        health = Health::Broken;
        problems.push(format!(
            "{} backup(s) whose chain is broken (a send parent's object is missing), e.g. {}; \
             `subvault run --heal` uploads them again where their snapshots are kept",
            inv.broken.len(),
            inv.broken[0].key
        ));
    }
    RemoteStatus {
        remote: remote.to_string(),
        health,
        newest_age_seconds: age,
        inventory: Some(inv),
        problems,
    }
}

/// Backups on a remote that belong to no configured source (by uuid, or by
/// base name for a source that cannot be read here).
fn orphans(
    config: &Config,
    open: &OpenRemote,
    uuids: &std::collections::HashMap<String, Option<Uuid>>,
) -> usize {
    let known: HashSet<Uuid> = uuids.values().flatten().copied().collect();
    let prefix = open.store.prefix();
    open.backups
        .iter()
        .filter(|b| {
            !known.contains(&b.source_uuid)
                && !basename_of(prefix, &b.key()).is_some_and(|n| config.source(&n).is_some())
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(n: u128, parent: Option<u128>, hours_ago: i64, class: Option<&str>) -> Backup {
        Backup {
            key_form: format!("data.{n}").into(),
            uuid: Uuid::from_u128(n),
            send_parent_uuid: parent.map(Uuid::from_u128),
            source_uuid: Uuid::from_u128(99),
            ctransid: n as u64,
            time: now() - chrono::Duration::hours(hours_ago),
            size: Some(100 * n as u64),
            storage_class: class.map(Into::into),
            codec: None,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn inventory_counts_classes_and_finds_the_newest_restorable() {
        let inv = Inventory::of(&[
            backup(1, None, 50, Some("DEEP_ARCHIVE")),
            backup(2, Some(1), 20, None),
            backup(3, Some(7), 1, None), // parent 7 is missing
        ]);
        assert_eq!((inv.backups, inv.bytes), (3, 600));
        assert_eq!(
            inv.by_storage_class["STANDARD"],
            ClassTotal {
                count: 2,
                bytes: 500
            }
        );
        assert_eq!(inv.by_storage_class["DEEP_ARCHIVE"].count, 1);
        assert_eq!(inv.newest.as_ref().unwrap().key, "data.2");
        assert_eq!(inv.broken.len(), 1);
        assert_eq!(inv.broken[0].key, "data.3");
    }

    #[test]
    fn judged_fresh_stale_broken_and_empty() {
        let day = Some(Duration::from_secs(86_400));
        let fresh = judge("r", Inventory::of(&[backup(1, None, 2, None)]), day, now());
        assert_eq!(fresh.health, Health::Ok);
        assert_eq!(fresh.newest_age_seconds, Some(7200));
        let old = Inventory::of(&[backup(1, None, 30, None)]);
        assert_eq!(judge("r", old.clone(), day, now()).health, Health::Stale);
        assert_eq!(judge("r", old, None, now()).health, Health::Ok);
        let broken = Inventory::of(&[backup(1, None, 2, None), backup(2, Some(5), 1, None)]);
        let b = judge("r", broken, day, now());
        assert_eq!(b.health, Health::Broken);
        assert!(b.problems[0].contains("data.2"), "{:?}", b.problems);
        assert_eq!(
            judge("r", Inventory::of::<Backup>(&[]), None, now()).health,
            Health::Empty
        );
    }

    #[test]
    fn durations_read_shortly() {
        assert_eq!(short_duration(93_600), "1d 2h");
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(3_661), "1h 1m");
        assert_eq!(short_duration(0), "0s");
    }
}
