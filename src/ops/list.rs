//! `list`: the backups on each remote as a tree.
//!
//! Full backups are roots and each backup hangs under its send parent, so the
//! tree shows exactly which objects a restore of any point needs. Each entry
//! carries the time (configured zone), why the policy keeps it (the planner's
//! reasons, when the source is readable here), size, storage class and codec.
//! Backups that cannot be restored as they are (a send parent missing) or that
//! belong to no configured source are listed as orphans. In an encrypted
//! remote, keys named like backups whose `.auth` MAC is missing or wrong are
//! listed as foreign: nothing else in subvault ever acts on them.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use serde::Serialize;
use uuid::Uuid;

use super::remotes::{self, OpenRemote, OpenRemotes};
use super::sources::{basename_of, plan_input, read_source, source_uuids};
use crate::config::Config;
use crate::core::model::Backup;
use crate::core::planner::{self, BackupAction};
use crate::remote::ObjectStore;

/// One backup as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Object key.
    pub key: String,
    /// Base name in the key (usually the source's name).
    pub name: String,
    /// Snapshot uuid (what `restore --uuid` takes).
    pub uuid: Uuid,
    /// Send parent, `None` for a full backup.
    pub send_parent_uuid: Option<Uuid>,
    /// Source subvolume uuid.
    pub source_uuid: Uuid,
    /// Snapshot time, RFC 3339 in the configured zone.
    pub time: String,
    /// Why it is kept (planner reasons; empty when the source is not readable here).
    pub reasons: Vec<String>,
    /// Object size in bytes.
    pub size: Option<u64>,
    /// Storage class (`STANDARD` when the listing does not say).
    pub storage_class: String,
    /// Codec from the key; `None` = sniffed on read (btrfs2s3 objects).
    pub codec: Option<String>,
    /// Why it is an orphan, if it is one.
    pub orphan: Option<String>,
    /// Depth in the tree (0 = root or orphan).
    pub depth: usize,
    /// For a PostgreSQL source: server version, checkpoint/backup LSN, timeline
    /// and mode, as recorded in the key.
    pub postgres: Option<crate::core::pg_record::PgRecord>,
}

/// One remote's listing.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteListing {
    /// Remote id.
    pub id: String,
    /// Where it points.
    pub location: String,
    /// The tree, depth-first (roots, then their children by time).
    pub backups: Vec<Entry>,
    /// Orphans (with their descendants), depth-first.
    pub orphans: Vec<Entry>,
    /// Whether the remote is encrypted (and its listing authenticated).
    pub encrypted: bool,
    /// Encrypted remotes only: keys named like backups that do not
    /// authenticate (never planned, restored, verified or deleted).
    pub foreign: Vec<ForeignEntry>,
    /// The WAL archive of each PostgreSQL source uploading here.
    pub wal: Vec<crate::core::wal::WalSummary>,
}

/// A key in an encrypted remote that looks like a backup but does not
/// authenticate.
#[derive(Debug, Clone, Serialize)]
pub struct ForeignEntry {
    /// Object key.
    pub key: String,
    /// Object size in bytes.
    pub size: Option<u64>,
    /// Why it does not authenticate.
    pub why: String,
}

/// Lists the remotes with these ids: each remote's tree, or why it could not
/// be listed.
pub async fn list(config: &Config, ids: &[&str]) -> Vec<Result<RemoteListing>> {
    let opened = remotes::open_ids(config, ids.iter().copied()).await;
    let reasons = planner_reasons(config, &opened);
    let uuids = source_uuids(config);
    let mut out = Vec::new();
    for (id, r) in &opened {
        out.push(match r {
            Ok(r) => {
                let mut l = listing(config, id, r, &reasons, &uuids);
                l.wal = wal_summaries(config, id, r).await;
                Ok(l)
            }
            Err(e) => Err(anyhow::anyhow!(crate::errors::one_line(e))),
        });
    }
    out
}

/// The WAL archives on remote `id` of the PostgreSQL sources uploading to it
/// (a second listing; a failure only logs, the tree is still shown).
async fn wal_summaries(
    config: &Config,
    id: &str,
    r: &OpenRemote,
) -> Vec<crate::core::wal::WalSummary> {
    let mut out = Vec::new();
    for source in &config.sources {
        if source.postgres.is_none() || !source.upload_to_remotes.iter().any(|u| u.id == id) {
            continue;
        }
        match crate::ops::wal::summary(r, source).await {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!(
                "remote {id}: cannot list the WAL archive of {}: {e:#}",
                source.name
            ),
        }
    }
    out
}

/// The planner's reasons per (remote, uuid), for sources readable on this host
/// whose remotes all opened. The planner runs as `plan` would now, without a
/// new snapshot, so a reason reads as "why this object is kept".
/// Remote id -> snapshot uuid -> reasons: keyed by remote first, so a lookup
/// per backup neither copies the remote's id nor hashes it (issue 21).
type Reasons = HashMap<String, HashMap<Uuid, Vec<String>>>;

fn planner_reasons(config: &Config, opened: &OpenRemotes) -> Reasons {
    let mut out = Reasons::new();
    for source in &config.sources {
        if source
            .upload_to_remotes
            .iter()
            .any(|u| !matches!(opened.get(&u.id), Some(Ok(_))))
        {
            continue; // a remote not listed: no plan, only the tree
        }
        let Ok(state) = read_source(source) else {
            continue;
        };
        let now = chrono::Utc::now();
        let Ok(input) = plan_input(config, source, &state, opened, now, false) else {
            continue;
        };
        for b in planner::plan(&input).backups {
            let reasons = match b.action {
                BackupAction::Delete => vec!["pruned by the next run".to_string()],
                _ => b.reasons.iter().map(ToString::to_string).collect(),
            };
            out.entry(b.remote.to_string())
                .or_default()
                .insert(b.uuid, reasons);
        }
    }
    out
}

fn listing(
    config: &Config,
    id: &str,
    r: &OpenRemote,
    reasons: &Reasons,
    uuids: &HashMap<String, Option<Uuid>>,
) -> RemoteListing {
    let reasons = reasons.get(id);
    let prefix = r.store.prefix();
    let tz = config.timezone;
    let known: HashSet<Uuid> = uuids.values().flatten().copied().collect();
    let unreadable: HashSet<&str> = uuids
        .iter()
        .filter(|(_, u)| u.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    let present: HashSet<Uuid> = r.backups.iter().map(|b| b.uuid).collect();
    let mut children: HashMap<Uuid, Vec<&Backup>> = HashMap::new();
    for b in &r.backups {
        if let Some(p) = b.send_parent_uuid {
            children.entry(p).or_default().push(b);
        }
    }
    for v in children.values_mut() {
        v.sort_by_key(|b| (b.time, b.ctransid));
    }
    let entry = |b: &Backup, depth: usize, orphan: Option<String>| Entry {
        key: b.key.to_string(),
        name: basename_of(prefix, &b.key).unwrap_or_default(),
        uuid: b.uuid,
        send_parent_uuid: b.send_parent_uuid,
        source_uuid: b.source_uuid,
        time: b.time.with_timezone(&tz).to_rfc3339(),
        reasons: reasons
            .and_then(|r| r.get(&b.uuid))
            .cloned()
            .unwrap_or_default(),
        size: b.size,
        storage_class: b.storage_class.as_deref().unwrap_or("STANDARD").to_string(),
        codec: b.codec.map(|c| c.as_str().to_string()),
        orphan,
        depth,
        postgres: crate::core::pg_record::from_key(&b.key),
    };
    // An orphan by source: its source uuid is no configured source's current
    // uuid, unless a configured source of that name cannot be read here.
    let foreign = |b: &Backup| {
        !known.contains(&b.source_uuid)
            && !basename_of(prefix, &b.key).is_some_and(|n| unreadable.contains(n.as_str()))
    };
    let mut roots: Vec<(&Backup, Option<String>)> = Vec::new();
    for b in &r.backups {
        let why = match b.send_parent_uuid {
            Some(p) if !present.contains(&p) => Some(format!("send parent {p} is missing")),
            _ if foreign(b) => Some(format!(
                "source {} is not a configured source's subvolume",
                b.source_uuid
            )),
            _ => None,
        };
        // Children are shown under their parent (in its section), never twice.
        if !matches!(b.send_parent_uuid, Some(p) if present.contains(&p)) {
            roots.push((b, why));
        }
    }
    roots.sort_by_key(|(b, _)| (b.time, b.ctransid));
    let mut backups = Vec::new();
    let mut orphans = Vec::new();
    // Backups by address: keys are unique in a listing, and hashing each
    // key was a tenth of `list`'s time at 100k backups (issue 21).
    let mut seen: HashSet<*const Backup> = HashSet::new();
    for (root, why) in roots {
        let out = if why.is_some() {
            &mut orphans
        } else {
            &mut backups
        };
        let mut stack = vec![(root, 0usize, why)];
        while let Some((b, depth, why)) = stack.pop() {
            if !seen.insert(b) {
                continue;
            }
            out.push(entry(b, depth, why));
            for c in children.get(&b.uuid).into_iter().flatten().rev() {
                stack.push((c, depth + 1, None));
            }
        }
    }
    // Anything not reached (duplicate uuids, loops) is shown as an orphan too.
    for b in &r.backups {
        if !seen.contains(&(b as *const Backup)) {
            orphans.push(entry(b, 0, Some("not reachable from a full backup".into())));
        }
    }
    RemoteListing {
        id: id.to_string(),
        location: r.store.describe(),
        backups,
        orphans,
        encrypted: r.keys.is_some(),
        foreign: r
            .foreign
            .iter()
            .map(|f| ForeignEntry {
                key: f.backup.key.to_string(),
                size: f.backup.size,
                why: f.why.to_string(),
            })
            .collect(),
        wal: Vec::new(),
    }
}
