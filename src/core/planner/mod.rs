//! The planner: a pure function from (snapshots, backups, policies, now) to a [`Plan`].
//!
//! It decides which snapshots to keep, create or destroy, which backups to keep,
//! upload or delete, and the send parent of every new upload. It does no I/O, so
//! every rule here is tested without root, btrfs or object storage.
//!
//! # Rules (docs/design.md, "The backup tree")
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

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use uuid::Uuid;

use crate::core::model::{Backup, Snapshot};
use crate::core::policy::{Policy, Span, Timeframe};

mod decide;
mod heal;

use decide::{collect_items, decide_remote, Item, Preservation, RemoteDecision};

/// Why a snapshot or backup is kept. Displayed (and serialized) as the words
/// `plan` and `list` show: `2026 yearly`, `most recent`, `ancestor`, `send parent`.
/// Sorted reasons read the same as sorted text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepReason {
    /// It represents a span the policy preserves (shown in the zone the
    /// policy is aligned to, e.g. `2026-11 monthly`). The span, not its
    /// words: a string per kept backup was 3.5 MiB at 100k backups (issue 21).
    Preserved(Span, Tz),
    /// A kept backup is sent relative to it.
    Ancestor,
    /// The newest snapshot, and its backup.
    MostRecent,
    /// An upload of this plan is sent relative to this snapshot.
    SendParent,
}

impl KeepReason {
    /// True for a reason the policy gives (a preserved span), as opposed to one
    /// the tree's structure gives.
    pub fn is_preserved_span(&self) -> bool {
        matches!(self, KeepReason::Preserved(..))
    }

    /// The variants in the alphabetical order of their words (span labels
    /// start with a digit).
    fn rank(&self) -> u8 {
        match self {
            KeepReason::Preserved(..) => 0,
            KeepReason::Ancestor => 1,
            KeepReason::MostRecent => 2,
            KeepReason::SendParent => 3,
        }
    }
}

impl Ord for KeepReason {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            // Only snapshots' reasons are sorted (a few per snapshot), so
            // formatting here costs nothing that matters.
            (KeepReason::Preserved(..), KeepReason::Preserved(..)) => {
                self.to_string().cmp(&other.to_string())
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for KeepReason {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Preserved(span, tz) => f.write_str(&span.reason(*tz)),
            KeepReason::Ancestor => f.write_str("ancestor"),
            KeepReason::MostRecent => f.write_str("most recent"),
            KeepReason::SendParent => f.write_str("send parent"),
        }
    }
}

impl Serialize for KeepReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lets tests and callers compare reasons with the words they show.
impl PartialEq<&str> for KeepReason {
    fn eq(&self, other: &&str) -> bool {
        // Tests and callers only: formatting here is cheap enough.
        self.to_string().as_str() == *other
    }
}

/// What one remote contributes to planning a source.
#[derive(Debug, Clone)]
pub struct RemoteInput {
    /// The remote's id from the config.
    pub id: String,
    /// The preservation policy for this source on this remote.
    pub policy: Policy,
    /// The backups found on the remote. Backups of other sources are ignored,
    /// so callers pass the whole listing, shared: a copy of 100k backups
    /// cost 30 MiB (issue 21). The plan's verdicts share it too.
    pub backups: Arc<Vec<Backup>>,
    /// The remote could not be listed (or failed this run): nothing is
    /// uploaded to or deleted from it, its backups are unknown, and the
    /// snapshots its policy would keep or send from are kept for the next run.
    /// Bounded: at most the spans its policy preserves (plus their send
    /// parents), however long it stays unreachable.
    pub unreachable: bool,
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
    pub reasons: Vec<KeepReason>,
}

/// The planner's verdict on one backup (existing or to upload) on one remote.
///
/// An existing backup is not copied into its verdict: the verdict points
/// into the remote's listing (a copy per verdict made `plan`'s verdicts
/// 160 bytes each, 16 MiB at 100k backups; issue 21). Read what the backup
/// says through the methods.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    /// Remote id (one string shared by the remote's verdicts).
    pub remote: Arc<str>,
    subject: Subject,
    /// Keep, upload or delete.
    pub action: BackupAction,
    /// Why it is kept (empty for deletions).
    pub reasons: Vec<KeepReason>,
    /// The longest timeframe whose preserved span it represents (selects the storage class).
    pub timeframe: Option<Timeframe>,
    /// When the policy stops preserving it (for S3 Object Lock); `None` when unknown or forever.
    pub retain_until: Option<DateTime<Utc>>,
    /// True when its send parent's object is missing from the remote.
    pub broken_chain: bool,
}

/// What a verdict is about: a backup in a listing, or one to upload.
#[derive(Debug, Clone)]
enum Subject {
    Listed {
        listing: Arc<Vec<Backup>>,
        index: u32,
    },
    /// Boxed: uploads are few, and the other variant is a third of its size.
    Upload(Box<Planned>),
}

/// What a verdict says about its backup (an upload's, or read from the
/// listing).
#[derive(Debug, Clone, Copy)]
struct Planned {
    uuid: Uuid,
    send_parent_uuid: Option<Uuid>,
    ctransid: u64,
    time: DateTime<Utc>,
}

impl BackupPlan {
    /// A verdict on the backup at `index` of `listing`, with no reasons.
    pub(crate) fn listed(
        remote: Arc<str>,
        listing: &Arc<Vec<Backup>>,
        index: u32,
        action: BackupAction,
    ) -> Self {
        BackupPlan {
            remote,
            subject: Subject::Listed {
                listing: listing.clone(),
                index,
            },
            action,
            reasons: Vec::new(),
            timeframe: None,
            retain_until: None,
            broken_chain: false,
        }
    }

    /// The existing backup; `None` for an upload.
    pub fn backup(&self) -> Option<&Backup> {
        match &self.subject {
            Subject::Listed { listing, index } => Some(&listing[*index as usize]),
            Subject::Upload(_) => None,
        }
    }

    /// The object key of an existing backup; `None` for an upload (the
    /// caller names it).
    pub fn key(&self) -> Option<Cow<'_, str>> {
        self.backup().map(Backup::key)
    }

    /// The snapshot uuid (nil for the planned snapshot).
    pub fn uuid(&self) -> Uuid {
        self.planned().uuid
    }

    /// The send parent's uuid, `None` for a full backup.
    pub fn send_parent_uuid(&self) -> Option<Uuid> {
        self.planned().send_parent_uuid
    }

    /// ctransid of the snapshot.
    pub fn ctransid(&self) -> u64 {
        self.planned().ctransid
    }

    /// Time of the snapshot.
    pub fn time(&self) -> DateTime<Utc> {
        self.planned().time
    }

    fn planned(&self) -> Planned {
        match &self.subject {
            Subject::Upload(p) => **p,
            Subject::Listed { listing, index } => {
                let b = &listing[*index as usize];
                Planned {
                    uuid: b.uuid,
                    send_parent_uuid: b.send_parent_uuid,
                    ctransid: b.ctransid,
                    time: b.time,
                }
            }
        }
    }

    /// Size of the existing object.
    pub fn size(&self) -> Option<u64> {
        self.backup().and_then(|b| b.size)
    }

    /// Storage class of the existing object.
    pub fn storage_class(&self) -> Option<&str> {
        self.backup().and_then(|b| b.storage_class.as_deref())
    }
}

/// The fields in the order (and with the names) `plan --json` has always
/// shown them.
impl Serialize for BackupPlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("BackupPlan", 13)?;
        st.serialize_field("remote", &*self.remote)?;
        st.serialize_field("key", &self.key())?;
        st.serialize_field("uuid", &self.uuid())?;
        st.serialize_field("send_parent_uuid", &self.send_parent_uuid())?;
        st.serialize_field("ctransid", &self.ctransid())?;
        st.serialize_field("time", &self.time())?;
        st.serialize_field("action", &self.action)?;
        st.serialize_field("reasons", &self.reasons)?;
        st.serialize_field("timeframe", &self.timeframe)?;
        st.serialize_field("retain_until", &self.retain_until)?;
        st.serialize_field("size", &self.size())?;
        st.serialize_field("storage_class", &self.storage_class())?;
        st.serialize_field("broken_chain", &self.broken_chain)?;
        st.end()
    }
}

/// A backup to upload: everything the executor needs to send the snapshot and
/// to name and store its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upload {
    /// Remote id.
    pub remote: String,
    /// Snapshot to send.
    pub snapshot_path: PathBuf,
    /// Snapshot uuid (nil when it is the snapshot this run creates).
    pub uuid: Uuid,
    /// Parent snapshot for `btrfs send -p`.
    pub send_parent_path: Option<PathBuf>,
    /// Parent uuid.
    pub send_parent_uuid: Option<Uuid>,
    /// ctransid of the snapshot (for the key).
    #[serde(skip)]
    pub ctransid: u64,
    /// Time of the snapshot (for the key).
    #[serde(skip)]
    pub time: DateTime<Utc>,
    /// The longest timeframe whose preserved span it represents (selects the storage class).
    #[serde(skip)]
    pub timeframe: Option<Timeframe>,
    /// When the policy stops preserving it (S3 Object Lock); `None` when unknown or forever.
    #[serde(skip)]
    pub retain_until: Option<DateTime<Utc>>,
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
    UploadBackup(Upload),
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

    /// The uploads, in plan order (parents before children).
    pub fn uploads(&self) -> impl Iterator<Item = &Upload> {
        self.actions.iter().filter_map(|a| match a {
            Action::UploadBackup(u) => Some(u),
            _ => None,
        })
    }
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

/// Plan one source. Pure: the same input and options always give the same plan.
pub fn plan_with(input: &PlanInput, options: PlanOptions) -> Plan {
    if options.heal {
        return heal::plan_healing(input);
    }
    plan_inner(input)
}

/// A snapshot, by uuid and whether it is the planned one (which has a nil uuid).
type SnapshotId = (Uuid, bool);

/// What the remotes' decisions add up to, before the snapshots get their verdicts.
#[derive(Default)]
struct Merged {
    snapshot_reasons: HashMap<SnapshotId, BTreeSet<KeepReason>>,
    backups: Vec<BackupPlan>,
    uploads: Vec<Action>,
    deletes: Vec<Action>,
    warnings: Vec<String>,
}

fn plan_inner(input: &PlanInput) -> Plan {
    let mut snapshots: Vec<&Snapshot> = input.snapshots.iter().collect();
    snapshots.sort_by_key(|s| (s.ctransid, s.time, s.uuid));

    let mut merged = Merged::default();
    if let Some(newest) = snapshots.last() {
        merged
            .snapshot_reasons
            .entry((newest.uuid, newest.planned))
            .or_default()
            .insert(KeepReason::MostRecent);
    }
    for remote in &input.remotes {
        let items = collect_items(&snapshots, remote, input.source_uuid);
        let decision = decide_remote(&items, &remote.policy, input.now, input.tz);
        merged.keep_snapshots(&items, &decision);
        if !remote.unreachable {
            merged.add_backups(remote, &items, decision);
        }
    }

    let mut actions = Vec::new();
    let mut destroys = Vec::new();
    let snapshots_out = snapshots
        .iter()
        .map(|s| {
            let reasons: Vec<KeepReason> = merged
                .snapshot_reasons
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
            SnapshotPlan {
                snapshot: (*s).clone(),
                action,
                reasons,
            }
        })
        .collect();
    actions.extend(merged.uploads);
    actions.extend(destroys);
    actions.extend(merged.deletes);

    Plan {
        snapshots: snapshots_out,
        backups: merged.backups,
        actions,
        warnings: merged.warnings,
    }
}

impl Merged {
    /// A snapshot is kept for the spans a remote's policy preserves its item
    /// for (not for `ancestor` or `most recent`, which concern that remote's
    /// backups), and as the send parent of an upload.
    fn keep_snapshots(&mut self, items: &[Item<'_>], decision: &RemoteDecision) {
        for (idx, reasons) in decision.kept.iter().enumerate() {
            let Some(s) = items[idx].snapshot else {
                continue;
            };
            let spans: Vec<&KeepReason> =
                reasons.iter().filter(|r| r.is_preserved_span()).collect();
            if !spans.is_empty() {
                self.snapshot_reasons
                    .entry((s.uuid, s.planned))
                    .or_default()
                    .extend(spans.into_iter().cloned());
            }
        }
        for parent in decision.upload_parent.values() {
            if let Some(p) = parent.and_then(|p| items[p].snapshot) {
                self.snapshot_reasons
                    .entry((p.uuid, p.planned))
                    .or_default()
                    .insert(KeepReason::SendParent);
            }
        }
    }

    /// Every backup of the remote with its verdict, the uploads it needs and
    /// the objects it no longer keeps.
    fn add_backups(
        &mut self,
        remote: &RemoteInput,
        items: &[Item<'_>],
        mut decision: RemoteDecision,
    ) {
        let id: Arc<str> = Arc::from(remote.id.as_str());
        // Reserved up front: growing by doubling held 1.5 copies of the
        // verdicts at once (25 MiB more at 100k backups, issue 21).
        let count: usize = items.iter().map(|i| i.backups.len().max(1)).sum();
        self.backups.reserve(count);
        for (idx, item) in items.iter().enumerate() {
            // Moved into the verdicts, not copied: a copy held every reason
            // twice at the planner's peak (issue 21).
            let mut reasons = std::mem::take(&mut decision.kept[idx]);
            let kept = !reasons.is_empty();
            let preserved = decision.preservation[idx];
            if let Some(parent) = decision.upload_parent.get(&idx) {
                let r = kept.then_some(&reasons);
                self.add_upload(&id, item, parent.map(|p| &items[p]), r, preserved);
            }
            let copies = item.backups.len();
            for (copy, listed) in item.backups.iter().enumerate() {
                let backup = listed.backup;
                let broken = decision.broken.contains(&listed.index);
                if broken {
                    self.warnings.push(format!(
                        "remote {id}: backup {} is sent relative to {}, which is missing from the remote: \
                         the backup is kept but cannot be restored",
                        backup.key(),
                        backup.send_parent_uuid.unwrap_or_default()
                    ));
                }
                let action = if kept {
                    BackupAction::Keep
                } else {
                    self.deletes.push(Action::DeleteBackup {
                        remote: id.to_string(),
                        key: backup.key().into_owned(),
                    });
                    BackupAction::Delete
                };
                let mut verdict =
                    BackupPlan::listed(id.clone(), &remote.backups, listed.index, action);
                verdict.reasons = if copy + 1 == copies {
                    std::mem::take(&mut reasons)
                } else {
                    reasons.clone()
                };
                verdict.timeframe = preserved.timeframe;
                verdict.retain_until = preserved.retain_until;
                verdict.broken_chain = broken;
                self.backups.push(verdict);
            }
        }
    }

    fn add_upload(
        &mut self,
        remote: &Arc<str>,
        item: &Item<'_>,
        parent: Option<&Item<'_>>,
        reasons: Option<&Vec<KeepReason>>,
        preserved: Preservation,
    ) {
        let snap = item.snapshot.expect("uploads have a snapshot");
        let upload = Upload {
            remote: remote.to_string(),
            snapshot_path: snap.path.clone(),
            uuid: item.uuid(),
            send_parent_path: parent.and_then(|p| p.snapshot).map(|s| s.path.clone()),
            send_parent_uuid: parent.map(|p| p.uuid()),
            ctransid: item.ctransid(),
            time: item.time(),
            timeframe: preserved.timeframe,
            retain_until: preserved.retain_until,
        };
        self.backups.push(BackupPlan {
            remote: remote.clone(),
            subject: Subject::Upload(Box::new(Planned {
                uuid: upload.uuid,
                send_parent_uuid: upload.send_parent_uuid,
                ctransid: upload.ctransid,
                time: upload.time,
            })),
            action: BackupAction::Upload,
            reasons: reasons.cloned().unwrap_or_default(),
            timeframe: upload.timeframe,
            retain_until: upload.retain_until,
            broken_chain: false,
        });
        self.uploads.push(Action::UploadBackup(upload));
    }
}

#[cfg(test)]
mod tests;
