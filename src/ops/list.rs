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
use std::fmt;
use std::sync::Arc;

use anyhow::Result;
use chrono_tz::Tz;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use uuid::Uuid;

use super::remotes::{self, OpenRemote, OpenRemotes};
use super::sources::{basename_of, plan_input, read_source, source_uuids};
use crate::config::Config;
use crate::core::model::Backup;
use crate::core::planner::{self, BackupAction, KeepReason};
use crate::remote::ObjectStore;

/// One backup as listed: a view of the remote's listing, made as it is shown.
#[derive(Debug, Clone, Serialize)]
pub struct Entry<'a> {
    /// Object key.
    pub key: std::borrow::Cow<'a, str>,
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
    /// The same instant, for the text form (not in JSON).
    #[serde(skip)]
    pub at: chrono::DateTime<chrono::Utc>,
    /// Why it is kept (planner reasons; empty when the source is not readable here).
    pub reasons: &'a [Reason],
    /// Object size in bytes.
    pub size: Option<u64>,
    /// Storage class (`STANDARD` when the listing does not say).
    pub storage_class: &'a str,
    /// Codec from the key; `None` = sniffed on read (btrfs2s3 objects).
    pub codec: Option<&'static str>,
    /// Why it is an orphan, if it is one.
    pub orphan: Option<&'a str>,
    /// Depth in the tree (0 = root or orphan).
    pub depth: usize,
    /// For a PostgreSQL source: server version, checkpoint/backup LSN, timeline
    /// and mode, as recorded in the key.
    pub postgres: Option<crate::core::pg_record::PgRecord>,
}

/// Why a listed backup is kept, or that the next run prunes it. Shown (and
/// serialized) in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A reason the planner keeps it for.
    Keep(KeepReason),
    /// The planner would delete it.
    PrunedByNextRun,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Keep(r) => r.fmt(f),
            Reason::PrunedByNextRun => f.write_str("pruned by the next run"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A place in the tree: which backup of the listing, and how deep.
#[derive(Debug, Clone, Copy)]
struct Node {
    index: u32,
    depth: u32,
}

/// One remote's listing. It owns the remote's backups and the tree's order,
/// and makes each [`Entry`] when it is shown: entries held as owned records
/// were half of `list`'s 180 MiB at 100k backups (issue 21).
#[derive(Debug)]
pub struct RemoteListing {
    /// Remote id.
    pub id: String,
    /// Where it points.
    pub location: String,
    /// Whether the remote is encrypted (and its listing authenticated).
    pub encrypted: bool,
    /// Encrypted remotes only: keys named like backups that do not
    /// authenticate (never planned, restored, verified or deleted).
    pub foreign: Vec<ForeignEntry>,
    /// The WAL archive of each PostgreSQL source uploading here.
    pub wal: Vec<crate::core::wal::WalSummary>,
    backups: Vec<Backup>,
    /// The tree, depth-first (roots, then their children by time).
    tree: Vec<Node>,
    /// Orphans (with their descendants), depth-first.
    orphans: Vec<Node>,
    /// Why each orphan root is one, by index in `backups`.
    orphan_why: HashMap<u32, String>,
    reasons: HashMap<Uuid, Vec<Reason>>,
    prefix: String,
    tz: Tz,
}

impl RemoteListing {
    /// The tree, depth-first (roots, then their children by time).
    pub fn backups(&self) -> impl ExactSizeIterator<Item = Entry<'_>> + '_ {
        self.tree.iter().map(|n| self.entry(*n))
    }

    /// Orphans (with their descendants), depth-first.
    pub fn orphans(&self) -> impl ExactSizeIterator<Item = Entry<'_>> + '_ {
        self.orphans.iter().map(|n| self.entry(*n))
    }

    fn entry(&self, n: Node) -> Entry<'_> {
        let b = &self.backups[n.index as usize];
        let key = b.key();
        Entry {
            name: basename_of(&self.prefix, &key).unwrap_or_default(),
            key,
            uuid: b.uuid,
            send_parent_uuid: b.send_parent_uuid,
            source_uuid: b.source_uuid,
            time: b.time.with_timezone(&self.tz).to_rfc3339(),
            at: b.time,
            reasons: self.reasons.get(&b.uuid).map_or(&[], Vec::as_slice),
            size: b.size,
            storage_class: b.storage_class.as_deref().unwrap_or("STANDARD"),
            codec: b.codec.map(|c| c.as_str()),
            orphan: self.orphan_why.get(&n.index).map(String::as_str),
            depth: n.depth as usize,
            postgres: crate::core::pg_record::from_key(&b.key()),
        }
    }
}

/// The entries of `nodes`, serialized as a JSON array as they are made.
struct Entries<'a>(&'a RemoteListing, &'a [Node]);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.1.iter().map(|n| self.0.entry(*n)))
    }
}

impl Serialize for RemoteListing {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("RemoteListing", 7)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("location", &self.location)?;
        st.serialize_field("backups", &Entries(self, &self.tree))?;
        st.serialize_field("orphans", &Entries(self, &self.orphans))?;
        st.serialize_field("encrypted", &self.encrypted)?;
        st.serialize_field("foreign", &self.foreign)?;
        st.serialize_field("wal", &self.wal)?;
        st.end()
    }
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
    let mut opened = remotes::open_ids(config, ids.iter().copied()).await;
    let mut reasons = planner_reasons(config, &opened);
    let uuids = source_uuids(config);
    let mut out = Vec::new();
    for (id, r) in &mut opened {
        out.push(match r {
            Ok(r) => {
                let mine = reasons.remove(id.as_str()).unwrap_or_default();
                let mut l = listing(config, id, r, mine, &uuids);
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
type Reasons = HashMap<String, HashMap<Uuid, Vec<Reason>>>;

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
        let plan = planner::plan(&input);
        // Verdicts come grouped by remote: one map lookup per remote.
        for verdicts in plan
            .backups
            .chunk_by(|a, b| Arc::ptr_eq(&a.remote, &b.remote))
        {
            let map = out.entry(verdicts[0].remote.to_string()).or_default();
            for b in verdicts {
                let reasons = match b.action {
                    BackupAction::Delete => vec![Reason::PrunedByNextRun],
                    _ => b.reasons.iter().copied().map(Reason::Keep).collect(),
                };
                map.insert(b.uuid(), reasons);
            }
        }
    }
    out
}

fn listing(
    config: &Config,
    id: &str,
    r: &mut OpenRemote,
    reasons: HashMap<Uuid, Vec<Reason>>,
    uuids: &HashMap<String, Option<Uuid>>,
) -> RemoteListing {
    // The listing takes the remote's backups: `list` needs them no more.
    let backups = Arc::unwrap_or_clone(std::mem::take(&mut r.backups));
    let prefix = r.store.prefix().to_string();
    let known: HashSet<Uuid> = uuids.values().flatten().copied().collect();
    let unreadable: HashSet<&str> = uuids
        .iter()
        .filter(|(_, u)| u.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    let index = |i: usize| u32::try_from(i).expect("fewer than 2^32 backups in a listing");
    let present: HashSet<Uuid> = backups.iter().map(|b| b.uuid).collect();
    let mut children: HashMap<Uuid, Vec<u32>> = HashMap::new();
    for (i, b) in backups.iter().enumerate() {
        if let Some(p) = b.send_parent_uuid {
            children.entry(p).or_default().push(index(i));
        }
    }
    let order = |i: &u32| {
        let b = &backups[*i as usize];
        (b.time, b.ctransid)
    };
    for v in children.values_mut() {
        v.sort_by_key(order);
    }
    // An orphan by source: its source uuid is no configured source's current
    // uuid, unless a configured source of that name cannot be read here.
    let foreign = |b: &Backup| {
        !known.contains(&b.source_uuid)
            && !basename_of(&prefix, &b.key()).is_some_and(|n| unreadable.contains(n.as_str()))
    };
    let mut roots: Vec<(u32, Option<String>)> = Vec::new();
    for (i, b) in backups.iter().enumerate() {
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
            roots.push((index(i), why));
        }
    }
    roots.sort_by_key(|(i, _)| order(i));
    let mut tree = Vec::with_capacity(backups.len());
    let mut orphans = Vec::new();
    let mut orphan_why = HashMap::new();
    let mut seen = vec![false; backups.len()];
    for (root, why) in roots {
        let out = match why {
            Some(why) => {
                orphan_why.insert(root, why);
                &mut orphans
            }
            None => &mut tree,
        };
        let mut stack = vec![Node {
            index: root,
            depth: 0,
        }];
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n.index as usize], true) {
                continue;
            }
            out.push(n);
            let uuid = backups[n.index as usize].uuid;
            for &c in children.get(&uuid).into_iter().flatten().rev() {
                stack.push(Node {
                    index: c,
                    depth: n.depth + 1,
                });
            }
        }
    }
    // Anything not reached (duplicate uuids, loops) is shown as an orphan too.
    for (i, reached) in seen.iter().enumerate() {
        if !reached {
            orphan_why.insert(index(i), "not reachable from a full backup".into());
            orphans.push(Node {
                index: index(i),
                depth: 0,
            });
        }
    }
    RemoteListing {
        id: id.to_string(),
        location: r.store.describe(),
        encrypted: r.keys.is_some(),
        foreign: r
            .foreign
            .iter()
            .map(|f| ForeignEntry {
                key: f.backup.key().to_string(),
                size: f.backup.size,
                why: f.why.to_string(),
            })
            .collect(),
        wal: Vec::new(),
        backups,
        tree,
        orphans,
        orphan_why,
        reasons,
        prefix,
        tz: config.timezone,
    }
}
