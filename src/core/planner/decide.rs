//! One remote's decision: which items its policy keeps (and why), and the send
//! parent of every upload it needs. The orchestration in `mod.rs` merges these
//! decisions over the remotes of a source.

use std::collections::{hash_map, BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use smallvec::{smallvec, SmallVec};
use uuid::Uuid;

use super::{KeepReason, RemoteInput};
use crate::core::model::{Backup, Snapshot};
use crate::core::policy::{Policy, Span, Timeframe};

/// An item: a snapshot, a backup on the remote being planned, or both. At
/// least one of them: its uuid, ctransid and time are the snapshot's, or
/// else the first backup's (read, not copied: 3.6 MiB at 100k, issue 21).
#[derive(Debug, Clone)]
pub(super) struct Item<'a> {
    pub snapshot: Option<&'a Snapshot>,
    /// Nearly always one: inline, not a heap allocation per item (issue 21).
    pub backups: SmallVec<[Listed<'a>; 1]>,
}

/// A backup and where it is in its remote's listing (which the plan's
/// verdicts point into).
#[derive(Debug, Clone, Copy)]
pub(super) struct Listed<'a> {
    pub index: u32,
    pub backup: &'a Backup,
}

impl Item<'_> {
    pub fn uuid(&self) -> Uuid {
        self.snapshot
            .map_or_else(|| self.backups[0].backup.uuid, |s| s.uuid)
    }

    pub fn ctransid(&self) -> u64 {
        self.snapshot
            .map_or_else(|| self.backups[0].backup.ctransid, |s| s.ctransid)
    }

    pub fn time(&self) -> DateTime<Utc> {
        self.snapshot
            .map_or_else(|| self.backups[0].backup.time, |s| s.time)
    }

    /// Sort key: ctransid first (content order), then time, then uuid for determinism.
    fn order(&self) -> (u64, DateTime<Utc>, Uuid) {
        (self.ctransid(), self.time(), self.uuid())
    }

    /// A snapshot that exists (planned snapshots cannot be send parents).
    fn sendable(&self) -> bool {
        self.snapshot.is_some_and(|s| !s.planned)
    }
}

/// How long an item's backup is preserved: the longest timeframe whose
/// preserved span it represents, and when the policy stops preserving it
/// (`None`: unknown, or forever).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Preservation {
    pub timeframe: Option<Timeframe>,
    pub retain_until: Option<DateTime<Utc>>,
}

/// Per-remote decisions, before they are merged with the other remotes'.
pub(super) struct RemoteDecision {
    /// Per item: why it is kept (empty: not kept). Dense, indexed by item:
    /// maps keyed by item were 9 MiB at 100k backups (issue 21).
    pub kept: Kept,
    /// Item index -> parent item index (None = full), for uploads.
    pub upload_parent: BTreeMap<usize, Option<usize>>,
    /// Listing indices of existing backups whose parent object is missing.
    pub broken: BTreeSet<u32>,
    /// Per item: how long it is preserved (the default for items no policy
    /// span keeps).
    pub preservation: Vec<Preservation>,
}

/// The items of one remote: every snapshot plus that remote's backups of this source,
/// merged by uuid, oldest first.
pub(super) fn collect_items<'a>(
    snapshots: &[&'a Snapshot],
    remote: &'a RemoteInput,
    source_uuid: Uuid,
) -> Vec<Item<'a>> {
    // An unreachable remote's backups are unknown: plan as if it had none.
    let backups = if remote.unreachable {
        &[][..]
    } else {
        &remote.backups[..]
    };
    // `as u32`: a listing of 4 billion keys would not fit in memory anyway.
    let mine = backups
        .iter()
        .enumerate()
        .filter(|(_, b)| b.source_uuid == source_uuid && !b.uuid.is_nil())
        .map(|(index, backup)| Listed {
            index: index as u32,
            backup,
        });
    // One item per snapshot and per backup, then merged by uuid after a sort:
    // a map from uuid to item held a second copy of every item (issue 21).
    // Sized once: grown by doubling it held 1.5 copies.
    let mut items: Vec<Item<'a>> = Vec::with_capacity(snapshots.len() + mine.clone().count());
    items.extend(snapshots.iter().filter(|s| !s.planned).map(|s| Item {
        snapshot: Some(s),
        backups: SmallVec::new(),
    }));
    items.extend(mine.map(|b| Item {
        snapshot: None,
        backups: smallvec![b],
    }));
    // Stable: a uuid's snapshot comes first, its backups in listing order.
    items.sort_by_key(|i| (i.uuid(), i.snapshot.is_none()));
    items.dedup_by(|later, first| {
        if later.uuid() != first.uuid() {
            return false;
        }
        first.backups.append(&mut later.backups);
        first.snapshot = first.snapshot.or(later.snapshot);
        true
    });
    items.extend(snapshots.iter().filter(|s| s.planned).map(|s| Item {
        snapshot: Some(s),
        backups: SmallVec::new(),
    }));
    items.sort_by_key(|i| i.order());
    items
}

/// Where every item stands in the calendar, per timeframe of the policy.
///
/// Compact on purpose: a `Vec` of spans per item was 27 MiB at 100k backups,
/// the planner's peak (issue 21). An item that represents a span represents
/// the span containing it, so "represents" is one bit per timeframe.
struct Spans {
    /// Number of timeframes (at most 8: one bit each in `represents`).
    timeframes: usize,
    /// Per timeframe: the distinct spans, each with its representative (the
    /// first item in it).
    spans: Vec<Vec<(Span, usize)>>,
    /// Per item, then per timeframe: the index in `spans[ti]` of the span
    /// containing the item.
    containing: Vec<u32>,
    /// Per item: bit `ti` set when it represents its span of timeframe `ti`.
    represents: Vec<u8>,
}

impl Spans {
    fn of(items: &[Item<'_>], timeframes: &[Timeframe], tz: Tz) -> Spans {
        let t = timeframes.len();
        debug_assert!(t <= 8, "one bit per timeframe");
        let mut spans = Spans {
            timeframes: t,
            spans: Vec::with_capacity(t),
            containing: vec![0; items.len() * t],
            represents: vec![0; items.len()],
        };
        for (ti, tf) in timeframes.iter().enumerate() {
            let mut list: Vec<(Span, usize)> = Vec::new();
            let mut index: HashMap<Span, u32> = HashMap::new();
            // Items are sorted, so the first one seen in a span is its representative.
            for (idx, item) in items.iter().enumerate() {
                let span = tf.span_containing(item.time(), tz);
                let si = match index.entry(span) {
                    hash_map::Entry::Occupied(e) => *e.get(),
                    hash_map::Entry::Vacant(e) => {
                        let si = u32::try_from(list.len()).expect("fewer than 2^32 spans");
                        list.push((span, idx));
                        spans.represents[idx] |= 1 << ti;
                        *e.insert(si)
                    }
                };
                spans.containing[idx * t + ti] = si;
            }
            list.shrink_to_fit();
            spans.spans.push(list);
        }
        spans
    }

    /// The span of timeframe `ti` that contains item `idx`, and its representative.
    fn containing(&self, idx: usize, ti: usize) -> (Span, usize) {
        self.spans[ti][self.containing[idx * self.timeframes + ti] as usize]
    }

    /// The spans item `idx` represents, longest timeframe first.
    fn represented(&self, idx: usize) -> impl Iterator<Item = Span> + '_ {
        (0..self.timeframes)
            .filter(move |ti| self.represents[idx] & (1 << ti) != 0)
            .map(move |ti| self.containing(idx, ti).0)
    }

    /// The index of the longest timeframe item `idx` represents a span of.
    fn longest_represented(&self, idx: usize) -> Option<usize> {
        let bits = self.represents[idx];
        (bits != 0).then(|| bits.trailing_zeros() as usize)
    }
}

/// Decide what one remote keeps and uploads.
pub(super) fn decide_remote<'a>(
    items: &[Item<'a>],
    policy: &Policy,
    now: DateTime<Utc>,
    tz: Tz,
) -> RemoteDecision {
    let spans = Spans::of(items, &policy.timeframes(), tz);
    let (mut kept, preservation) = preserved(&spans, policy, now, tz);
    keep_newest(items, &mut kept);
    let (upload_parent, broken) = close_over_ancestors(items, &spans, &mut kept);
    RemoteDecision {
        kept,
        upload_parent,
        broken,
        preservation,
    }
}

/// Per item: why it is kept; an item is kept exactly when it has a reason.
pub(super) type Kept = Vec<Vec<KeepReason>>;

/// The items that represent a span the policy preserves, with their reasons
/// and how long they are preserved.
fn preserved(
    spans: &Spans,
    policy: &Policy,
    now: DateTime<Utc>,
    tz: Tz,
) -> (Kept, Vec<Preservation>) {
    let mut kept: Kept = vec![Vec::new(); spans.represents.len()];
    let mut preservation = vec![Preservation::default(); spans.represents.len()];
    for idx in 0..spans.represents.len() {
        // Most items represent one span: a default Vec would reserve four
        // reasons each (7 MiB more at 100k backups, issue 21).
        let mut reasons = Vec::with_capacity(spans.represents[idx].count_ones() as usize);
        let mut longest = None;
        let mut until: Option<DateTime<Utc>> = None;
        let mut forever = false;
        for span in spans.represented(idx) {
            if policy.preserves(&span, now, tz) {
                reasons.push(KeepReason::Preserved(span, tz));
                longest = longest.or(Some(span.timeframe));
                match policy.preserved_until(&span, tz) {
                    Some(t) => until = Some(until.map_or(t, |u| u.max(t))),
                    None => forever = true,
                }
            }
        }
        if !reasons.is_empty() {
            kept[idx] = reasons;
            preservation[idx] = Preservation {
                timeframe: longest,
                retain_until: if forever { None } else { until },
            };
        }
    }
    (kept, preservation)
}

/// The newest item and the newest snapshot's item (they differ only when newer
/// snapshots were removed by hand) are always kept.
fn keep_newest(items: &[Item<'_>], kept: &mut Kept) {
    let newest_snapshot = items.iter().rposition(|i| i.snapshot.is_some());
    for idx in items
        .len()
        .checked_sub(1)
        .into_iter()
        .chain(newest_snapshot)
    {
        let reasons = &mut kept[idx];
        if !reasons.contains(&KeepReason::MostRecent) {
            reasons.push(KeepReason::MostRecent);
        }
    }
}

/// Walks each kept item's parent chains, keeping every ancestor. An item with
/// backups reuses them as they are: the parent of each copy (a snapshot may have
/// several objects, e.g. a heal whose delete failed) is kept, so every
/// restorable copy keeps its chain and a broken copy (its parent missing from
/// the remote) never costs the good copy its parent. An item without a backup
/// gets an upload whose parent [`choose_parent`] picks.
fn close_over_ancestors<'a>(
    items: &[Item<'a>],
    spans: &Spans,
    kept: &mut Kept,
) -> (BTreeMap<usize, Option<usize>>, BTreeSet<u32>) {
    let index_of: HashMap<Uuid, usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| !i.backups.is_empty())
        .map(|(idx, i)| (i.uuid(), idx))
        .collect();
    let mut upload_parent: BTreeMap<usize, Option<usize>> = BTreeMap::new();
    let mut broken = BTreeSet::new();
    let mut stack: Vec<usize> = (0..kept.len()).filter(|&i| !kept[i].is_empty()).collect();
    let mut visited = vec![false; items.len()];
    while let Some(idx) = stack.pop() {
        if std::mem::replace(&mut visited[idx], true) {
            continue;
        }
        let item = &items[idx];
        let parents: Vec<usize> = if item.backups.is_empty() {
            let parent = choose_parent(idx, items, spans);
            upload_parent.insert(idx, parent);
            parent.into_iter().collect()
        } else {
            let mut parents = Vec::new();
            for listed in &item.backups {
                let Some(p) = listed.backup.send_parent_uuid else {
                    continue;
                };
                match index_of.get(&p) {
                    Some(&pidx) => parents.push(pidx),
                    None => {
                        broken.insert(listed.index);
                    }
                }
            }
            parents
        };
        for p in parents {
            let reasons = &mut kept[p];
            if reasons.is_empty() {
                reasons.push(KeepReason::Ancestor);
            }
            stack.push(p);
        }
    }
    (upload_parent, broken)
}

/// The send parent for a new upload of item `idx`, or `None` for a full backup.
fn choose_parent(idx: usize, items: &[Item<'_>], spans: &Spans) -> Option<usize> {
    // Index of the longest timeframe this item represents; an item representing
    // nothing behaves as if it represented a span just below the shortest timeframe.
    let longest = spans.longest_represented(idx).unwrap_or(spans.timeframes);
    let item = &items[idx];
    (0..longest).rev().find_map(|ti| {
        let (_, candidate) = spans.containing(idx, ti);
        let c = &items[candidate];
        (candidate != idx && c.sendable() && c.order() < item.order()).then_some(candidate)
    })
}
