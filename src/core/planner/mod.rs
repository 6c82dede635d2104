//! The planner: a pure function from (snapshots, backups, policies, now) to a [`Plan`].
//!
//! It decides which snapshots to keep, create or destroy, which backups to keep,
//! upload or delete, and the send parent of every new upload. It does no I/O, so
//! every rule here is tested without root, btrfs or object storage.
//!
//! # Rules (DESIGN.md section 2)
//! - Per remote, the *items* are the local snapshots plus the backups on that remote
//!   (a backup whose snapshot is gone still counts). The item that represents a span
//!   is the first one in it: lowest ctransid.
//! - A backup is kept when its item represents a span the remote's policy preserves,
//!   when it is the most recent item, or when a kept backup is sent relative to it
//!   (`ancestor`).
//! - A new upload is full when its item represents a span of the policy's longest
//!   timeframe; otherwise it is sent relative to the representative of the enclosing
//!   span of the next longer timeframe (for an item that represents nothing, the
//!   shortest timeframe's span). If that representative has no local snapshot to
//!   send from, the next longer one is tried, ending in a full backup. So a restore
//!   chain never has more than (number of timeframes + 1) objects.
//! - An existing backup is reused as it is, whatever parent it was sent relative to;
//!   one whose parent object is missing is kept and reported as a broken chain.
//! - A snapshot is kept when it is the most recent one, when its item is preserved by
//!   any remote's policy, or when an upload of this plan is sent relative to it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use uuid::Uuid;

use crate::core::model::{Backup, Snapshot};
use crate::core::policy::{Policy, Span, Timeframe};

/// Reason string for the newest snapshot and its backup.
pub const REASON_MOST_RECENT: &str = "most recent";
/// Reason string for a backup kept because a kept backup is sent relative to it.
pub const REASON_ANCESTOR: &str = "ancestor";
/// Reason string for a snapshot kept because an upload of this plan needs it.
pub const REASON_SEND_PARENT: &str = "send parent";

/// What one remote contributes to planning a source.
#[derive(Debug, Clone)]
pub struct RemoteInput {
    /// The remote's id from the config.
    pub id: String,
    /// The preservation policy for this source on this remote.
    pub policy: Policy,
    /// The backups found on the remote. Backups of other sources are ignored.
    pub backups: Vec<Backup>,
}

/// Everything the planner looks at for one source.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The configured time zone that spans are aligned to.
    pub tz: Tz,
    /// The time the plan is made for.
    pub now: DateTime<Utc>,
    /// The source subvolume's uuid; backups whose `.prnt` differs are ignored.
    pub source_uuid: Uuid,
    /// The source's snapshots, including at most one planned (not yet taken) one.
    pub snapshots: Vec<Snapshot>,
    /// One entry per remote the source is uploaded to.
    pub remotes: Vec<RemoteInput>,
}

/// What happens to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotAction {
    /// It stays.
    Keep,
    /// It is taken by this run.
    Create,
    /// It is destroyed after the uploads.
    Destroy,
}

/// What happens to a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupAction {
    /// It stays.
    Keep,
    /// It is uploaded by this run.
    Upload,
    /// It is deleted after the uploads.
    Delete,
}

/// The planner's verdict on one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPlan {
    /// The snapshot (planned ones have a nil uuid).
    pub snapshot: Snapshot,
    /// Keep, create or destroy.
    pub action: SnapshotAction,
    /// Why it is kept (empty for destroyed snapshots).
    pub reasons: Vec<String>,
}

/// The planner's verdict on one backup (existing or to upload) on one remote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPlan {
    /// Remote id.
    pub remote: String,
    /// The object key for existing backups; `None` for uploads (the caller names them).
    pub key: Option<String>,
    /// The snapshot uuid (nil for the planned snapshot).
    pub uuid: Uuid,
    /// Local snapshot to send from (uploads) or that matches the backup, if any.
    pub snapshot_path: Option<PathBuf>,
    /// The send parent's uuid, `None` for a full backup.
    pub send_parent_uuid: Option<Uuid>,
    /// The send parent's local snapshot (uploads only).
    pub send_parent_path: Option<PathBuf>,
    /// ctransid of the snapshot.
    pub ctransid: u64,
    /// Time of the snapshot.
    pub time: DateTime<Utc>,
    /// Keep, upload or delete.
    pub action: BackupAction,
    /// Why it is kept (empty for deletions).
    pub reasons: Vec<String>,
    /// The longest timeframe whose preserved span it represents (selects the storage class).
    pub timeframe: Option<Timeframe>,
    /// When the policy stops preserving it (for S3 Object Lock); `None` when unknown or forever.
    pub retain_until: Option<DateTime<Utc>>,
    /// Size of the existing object.
    pub size: Option<u64>,
    /// Storage class of the existing object.
    pub storage_class: Option<String>,
    /// True when its send parent's object is missing from the remote.
    pub broken_chain: bool,
}

/// One step of the plan, in execution order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Take a read-only snapshot of the source at `path`.
    CreateSnapshot {
        /// Where the snapshot will be.
        path: PathBuf,
    },
    /// Send a snapshot (relative to a parent) and upload it.
    UploadBackup {
        /// Remote id.
        remote: String,
        /// Snapshot to send.
        snapshot_path: PathBuf,
        /// Snapshot uuid (nil when it is the snapshot this run creates).
        uuid: Uuid,
        /// Parent snapshot for `btrfs send -p`.
        send_parent_path: Option<PathBuf>,
        /// Parent uuid.
        send_parent_uuid: Option<Uuid>,
    },
    /// Destroy a snapshot no kept backup needs.
    DestroySnapshot {
        /// The snapshot's path.
        path: PathBuf,
        /// Its uuid.
        uuid: Uuid,
    },
    /// Delete a backup object no kept backup needs.
    DeleteBackup {
        /// Remote id.
        remote: String,
        /// Object key.
        key: String,
    },
}

/// The result of planning one source.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Every snapshot with its verdict, oldest first.
    pub snapshots: Vec<SnapshotPlan>,
    /// Every backup of this source with its verdict, per remote, oldest first.
    pub backups: Vec<BackupPlan>,
    /// The steps to take, in a safe order: create, upload, destroy, delete.
    pub actions: Vec<Action>,
    /// Problems found (broken chains), one line each.
    pub warnings: Vec<String>,
}

impl Plan {
    /// True when executing the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
    }
}

/// An item: a snapshot, a backup on the remote being planned, or both.
#[derive(Debug, Clone)]
struct Item<'a> {
    uuid: Uuid,
    ctransid: u64,
    time: DateTime<Utc>,
    snapshot: Option<&'a Snapshot>,
    backups: Vec<&'a Backup>,
}

impl Item<'_> {
    /// Sort key: ctransid first (content order), then time, then uuid for determinism.
    fn order(&self) -> (u64, DateTime<Utc>, Uuid) {
        (self.ctransid, self.time, self.uuid)
    }

    /// A snapshot that exists (planned snapshots cannot be send parents).
    fn sendable(&self) -> bool {
        self.snapshot.is_some_and(|s| !s.planned)
    }
}

/// Per-remote decisions, before they are merged with the other remotes'.
struct RemoteDecision {
    /// Item index -> reasons, for every kept item.
    kept: BTreeMap<usize, Vec<String>>,
    /// Item index -> parent item index (None = full), for uploads.
    upload_parent: BTreeMap<usize, Option<usize>>,
    /// Items whose existing backup's parent object is missing.
    broken: BTreeSet<usize>,
    /// Item index -> (longest preserved timeframe, retain-until).
    preservation: HashMap<usize, (Option<Timeframe>, Option<DateTime<Utc>>)>,
}

/// Options that change how a plan treats what it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Heal broken chains: a backup that cannot be restored (its chain does not
    /// reach a full backup on the remote) is treated as missing, so its snapshot
    /// is uploaded again (if it is kept and still on disk), and the broken object
    /// is deleted once its replacement is uploaded.
    pub heal: bool,
}

/// Plan one source with default options. Pure: the same input always gives the
/// same plan.
pub fn plan(input: &PlanInput) -> Plan {
    plan_with(input, PlanOptions::default())
}

/// Keys of the backups whose restore chain does not reach a full backup.
fn unrestorable(backups: &[&Backup]) -> HashSet<String> {
    let by_uuid: HashMap<Uuid, &Backup> = backups.iter().map(|b| (b.uuid, *b)).collect();
    let mut bad = HashSet::new();
    for b in backups {
        let mut cur = *b;
        let mut steps = 0;
        let ok = loop {
            match cur.send_parent_uuid {
                None => break true,
                Some(p) => match by_uuid.get(&p) {
                    Some(parent) if steps < backups.len() => {
                        cur = parent;
                        steps += 1;
                    }
                    _ => break false,
                },
            }
        };
        if !ok {
            bad.insert(b.key.clone());
        }
    }
    bad
}

/// Plan one source. Pure: the same input and options always give the same plan.
pub fn plan_with(input: &PlanInput, options: PlanOptions) -> Plan {
    if options.heal {
        return plan_healing(input);
    }
    plan_inner(input)
}

/// Healing: plan without the unrestorable backups, then delete each of them whose
/// snapshot gets a good backup in the same plan (uploaded first, deleted after).
fn plan_healing(input: &PlanInput) -> Plan {
    let mut healed_input = input.clone();
    let mut removed: Vec<(String, Backup)> = Vec::new();
    for remote in &mut healed_input.remotes {
        let mine: Vec<&Backup> = remote
            .backups
            .iter()
            .filter(|b| b.source_uuid == input.source_uuid)
            .collect();
        let bad = unrestorable(&mine);
        let (broken, good): (Vec<Backup>, Vec<Backup>) =
            remote.backups.drain(..).partition(|b| bad.contains(&b.key));
        remote.backups = good;
        removed.extend(broken.into_iter().map(|b| (remote.id.clone(), b)));
    }
    let mut plan = plan_inner(&healed_input);
    for (remote, b) in removed {
        let replacement = plan
            .backups
            .iter()
            .find(|p| p.remote == remote && p.uuid == b.uuid && p.action != BackupAction::Delete);
        // Same snapshot and parent: the new object gets the same key and the upload
        // replaces the broken one in place, so there is nothing to delete.
        if replacement.is_some_and(|p| p.send_parent_uuid == b.send_parent_uuid) {
            continue;
        }
        let action = if replacement.is_some() {
            plan.actions.push(Action::DeleteBackup {
                remote: remote.clone(),
                key: b.key.clone(),
            });
            plan.warnings.push(format!(
                "remote {remote}: healing: {} cannot be restored (its chain does not reach a full \
                 backup); it is uploaded again and the broken object deleted",
                b.key
            ));
            BackupAction::Delete
        } else {
            plan.warnings.push(format!(
                "remote {remote}: {} cannot be restored (its chain does not reach a full backup) \
                 and its snapshot is not kept, so it cannot be uploaded again",
                b.key
            ));
            BackupAction::Keep
        };
        plan.backups.push(BackupPlan {
            remote,
            key: Some(b.key.clone()),
            uuid: b.uuid,
            snapshot_path: None,
            send_parent_uuid: b.send_parent_uuid,
            send_parent_path: None,
            ctransid: b.ctransid,
            time: b.time,
            action,
            reasons: Vec::new(),
            timeframe: None,
            retain_until: None,
            size: b.size,
            storage_class: b.storage_class.clone(),
            broken_chain: true,
        });
    }
    plan
}

fn plan_inner(input: &PlanInput) -> Plan {
    let mut snapshots: Vec<&Snapshot> = input.snapshots.iter().collect();
    snapshots.sort_by_key(|s| (s.ctransid, s.time, s.uuid));
    let newest_snapshot = snapshots.last().map(|s| (s.uuid, s.planned));

    // Snapshot uuid (or "planned") -> reasons to keep, merged over remotes.
    let mut snapshot_reasons: HashMap<(Uuid, bool), BTreeSet<String>> = HashMap::new();
    if let Some(key) = newest_snapshot {
        snapshot_reasons
            .entry(key)
            .or_default()
            .insert(REASON_MOST_RECENT.to_string());
    }

    let mut backups_out = Vec::new();
    let mut uploads = Vec::new();
    let mut deletes = Vec::new();
    let mut warnings = Vec::new();

    for remote in &input.remotes {
        let items = collect_items(&snapshots, remote, input.source_uuid);
        let decision = decide_remote(&items, &remote.policy, input.now, input.tz);

        for (&idx, reasons) in &decision.kept {
            let item = &items[idx];
            let preserved = reasons
                .iter()
                .any(|r| r != REASON_ANCESTOR && r != REASON_MOST_RECENT);
            if let (Some(s), true) = (item.snapshot, preserved) {
                let entry = snapshot_reasons.entry((s.uuid, s.planned)).or_default();
                entry.extend(
                    reasons
                        .iter()
                        .filter(|r| {
                            r.as_str() != REASON_ANCESTOR && r.as_str() != REASON_MOST_RECENT
                        })
                        .cloned(),
                );
            }
        }
        for parent in decision.upload_parent.values() {
            if let Some(p) = parent.and_then(|p| items[p].snapshot) {
                snapshot_reasons
                    .entry((p.uuid, p.planned))
                    .or_default()
                    .insert(REASON_SEND_PARENT.to_string());
            }
        }

        for (idx, item) in items.iter().enumerate() {
            let kept = decision.kept.get(&idx);
            let (timeframe, retain_until) = decision
                .preservation
                .get(&idx)
                .copied()
                .unwrap_or((None, None));
            if let Some(parent) = decision.upload_parent.get(&idx) {
                let snap = item.snapshot.expect("uploads have a snapshot");
                let parent_item = parent.map(|p| &items[p]);
                let parent_path = parent_item.and_then(|p| p.snapshot).map(|s| s.path.clone());
                backups_out.push(BackupPlan {
                    remote: remote.id.clone(),
                    key: None,
                    uuid: item.uuid,
                    snapshot_path: Some(snap.path.clone()),
                    send_parent_uuid: parent_item.map(|p| p.uuid),
                    send_parent_path: parent_path.clone(),
                    ctransid: item.ctransid,
                    time: item.time,
                    action: BackupAction::Upload,
                    reasons: kept.cloned().unwrap_or_default(),
                    timeframe,
                    retain_until,
                    size: None,
                    storage_class: None,
                    broken_chain: false,
                });
                uploads.push(Action::UploadBackup {
                    remote: remote.id.clone(),
                    snapshot_path: snap.path.clone(),
                    uuid: item.uuid,
                    send_parent_path: parent_path,
                    send_parent_uuid: parent_item.map(|p| p.uuid),
                });
            }
            for backup in &item.backups {
                let broken = decision.broken.contains(&idx);
                if broken {
                    warnings.push(format!(
                        "remote {}: backup {} is sent relative to {}, which is missing from the remote: \
                         the backup is kept but cannot be restored",
                        remote.id,
                        backup.key,
                        backup.send_parent_uuid.unwrap_or_default()
                    ));
                }
                let action = if kept.is_some() {
                    BackupAction::Keep
                } else {
                    deletes.push(Action::DeleteBackup {
                        remote: remote.id.clone(),
                        key: backup.key.clone(),
                    });
                    BackupAction::Delete
                };
                backups_out.push(BackupPlan {
                    remote: remote.id.clone(),
                    key: Some(backup.key.clone()),
                    uuid: backup.uuid,
                    snapshot_path: item.snapshot.map(|s| s.path.clone()),
                    send_parent_uuid: backup.send_parent_uuid,
                    send_parent_path: None,
                    ctransid: backup.ctransid,
                    time: backup.time,
                    action,
                    reasons: kept.cloned().unwrap_or_default(),
                    timeframe,
                    retain_until,
                    size: backup.size,
                    storage_class: backup.storage_class.clone(),
                    broken_chain: broken,
                });
            }
        }
    }

    let mut actions = Vec::new();
    let mut destroys = Vec::new();
    let mut snapshots_out = Vec::new();
    for s in &snapshots {
        let reasons: Vec<String> = snapshot_reasons
            .get(&(s.uuid, s.planned))
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let action = if s.planned {
            actions.push(Action::CreateSnapshot {
                path: s.path.clone(),
            });
            SnapshotAction::Create
        } else if reasons.is_empty() {
            destroys.push(Action::DestroySnapshot {
                path: s.path.clone(),
                uuid: s.uuid,
            });
            SnapshotAction::Destroy
        } else {
            SnapshotAction::Keep
        };
        snapshots_out.push(SnapshotPlan {
            snapshot: (*s).clone(),
            action,
            reasons,
        });
    }
    actions.extend(uploads);
    actions.extend(destroys);
    actions.extend(deletes);

    Plan {
        snapshots: snapshots_out,
        backups: backups_out,
        actions,
        warnings,
    }
}

/// The items of one remote: every snapshot plus that remote's backups of this source,
/// merged by uuid, oldest first.
fn collect_items<'a>(
    snapshots: &[&'a Snapshot],
    remote: &'a RemoteInput,
    source_uuid: Uuid,
) -> Vec<Item<'a>> {
    let mut by_uuid: BTreeMap<Uuid, Item<'a>> = BTreeMap::new();
    let mut items: Vec<Item<'a>> = Vec::new();
    for s in snapshots {
        let item = Item {
            uuid: s.uuid,
            ctransid: s.ctransid,
            time: s.time,
            snapshot: Some(s),
            backups: Vec::new(),
        };
        if s.planned {
            items.push(item);
        } else {
            by_uuid.insert(s.uuid, item);
        }
    }
    for b in &remote.backups {
        if b.source_uuid != source_uuid || b.uuid.is_nil() {
            continue;
        }
        by_uuid
            .entry(b.uuid)
            .or_insert_with(|| Item {
                uuid: b.uuid,
                ctransid: b.ctransid,
                time: b.time,
                snapshot: None,
                backups: Vec::new(),
            })
            .backups
            .push(b);
    }
    items.extend(by_uuid.into_values());
    items.sort_by_key(|i| i.order());
    items
}

/// Decide what one remote keeps and uploads.
fn decide_remote(
    items: &[Item<'_>],
    policy: &Policy,
    now: DateTime<Utc>,
    tz: Tz,
) -> RemoteDecision {
    let timeframes = policy.timeframes();

    // For every timeframe: span -> representative (first item in it). Items are
    // sorted, so the first one seen in a span is its representative.
    let mut reps: Vec<HashMap<Span, usize>> = Vec::with_capacity(timeframes.len());
    // item -> spans it represents, one per timeframe at most, longest first.
    let mut represents: Vec<Vec<(usize, Span)>> = vec![Vec::new(); items.len()];
    // item -> the span of each timeframe that contains it.
    let mut containing: Vec<Vec<Span>> = vec![Vec::with_capacity(timeframes.len()); items.len()];
    for (ti, tf) in timeframes.iter().enumerate() {
        let mut map = HashMap::new();
        for (idx, item) in items.iter().enumerate() {
            let span = tf.span_containing(item.time, tz);
            containing[idx].push(span);
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(span) {
                e.insert(idx);
                represents[idx].push((ti, span));
            }
        }
        reps.push(map);
    }

    let mut kept: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut preservation = HashMap::new();
    for (idx, spans) in represents.iter().enumerate() {
        let mut reasons = Vec::new();
        let mut longest = None;
        let mut until: Option<DateTime<Utc>> = None;
        let mut forever = false;
        for (_, span) in spans {
            if policy.preserves(span, now, tz) {
                reasons.push(span.reason(tz));
                longest = longest.or(Some(span.timeframe));
                match policy.preserved_until(span, tz) {
                    Some(t) => until = Some(until.map_or(t, |u| u.max(t))),
                    None => forever = true,
                }
            }
        }
        if !reasons.is_empty() {
            kept.insert(idx, reasons);
            preservation.insert(idx, (longest, if forever { None } else { until }));
        }
    }
    // The newest item and the newest snapshot's item (they differ only when newer
    // snapshots were removed by hand) are always kept.
    let newest_snapshot = items.iter().rposition(|i| i.snapshot.is_some());
    for idx in items
        .len()
        .checked_sub(1)
        .into_iter()
        .chain(newest_snapshot)
    {
        let reasons = kept.entry(idx).or_default();
        if !reasons.iter().any(|r| r == REASON_MOST_RECENT) {
            reasons.push(REASON_MOST_RECENT.to_string());
        }
    }

    // Close over ancestors: walk each kept item's parent chain.
    let index_of: HashMap<Uuid, usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| !i.backups.is_empty())
        .map(|(idx, i)| (i.uuid, idx))
        .collect();
    let mut upload_parent: BTreeMap<usize, Option<usize>> = BTreeMap::new();
    let mut broken = BTreeSet::new();
    let mut stack: Vec<usize> = kept.keys().copied().collect();
    let mut visited = BTreeSet::new();
    while let Some(idx) = stack.pop() {
        if !visited.insert(idx) {
            continue;
        }
        let item = &items[idx];
        let parent = if let Some(backup) = item.backups.first() {
            // Reuse the existing backup as it is.
            match backup.send_parent_uuid {
                None => None,
                Some(p) => match index_of.get(&p) {
                    Some(&pidx) => Some(pidx),
                    None => {
                        broken.insert(idx);
                        None
                    }
                },
            }
        } else {
            let parent = choose_parent(idx, items, &represents, &containing, &reps);
            upload_parent.insert(idx, parent);
            parent
        };
        if let Some(p) = parent {
            let reasons = kept.entry(p).or_default();
            if reasons.is_empty() {
                reasons.push(REASON_ANCESTOR.to_string());
            }
            stack.push(p);
        }
    }

    RemoteDecision {
        kept,
        upload_parent,
        broken,
        preservation,
    }
}

/// The send parent for a new upload of item `idx`, or `None` for a full backup.
fn choose_parent(
    idx: usize,
    items: &[Item<'_>],
    represents: &[Vec<(usize, Span)>],
    containing: &[Vec<Span>],
    reps: &[HashMap<Span, usize>],
) -> Option<usize> {
    // Index of the longest timeframe this item represents; an item representing
    // nothing behaves as if it represented a span just below the shortest timeframe.
    let longest = represents[idx]
        .first()
        .map(|(ti, _)| *ti)
        .unwrap_or(reps.len());
    let item = &items[idx];
    (0..longest).rev().find_map(|ti| {
        let candidate = reps[ti][&containing[idx][ti]];
        let c = &items[candidate];
        (candidate != idx && c.sendable() && c.order() < item.order()).then_some(candidate)
    })
}

#[cfg(test)]
mod tests;
