//! Which backup to restore, and the chain of objects that rebuilds it.
//!
//! Pure functions over the listing of one remote: no I/O, so every rule here
//! (newest at or before a time, duplicates, broken chains) is unit-tested.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::core::model::Backup;

/// Which point to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The newest backup.
    Latest,
    /// The newest backup taken at or before this time.
    At(DateTime<Utc>),
    /// The backup of the snapshot with this uuid.
    Uuid(Uuid),
}

/// Why no chain could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Nothing to choose from.
    #[error("no backups found")]
    Empty,
    /// Every backup is newer than the requested time.
    #[error("no backup at or before {at}; the oldest is {oldest} ({key})")]
    NoneBefore {
        /// The requested time.
        at: DateTime<Utc>,
        /// The oldest backup's time.
        oldest: DateTime<Utc>,
        /// The oldest backup's key.
        key: String,
    },
    /// No backup has this snapshot uuid.
    #[error("no backup of snapshot {0} (see `subvault list` for the uuids)")]
    UnknownUuid(Uuid),
    /// A send parent is not in the listing.
    #[error("the chain is broken: {key} was sent relative to snapshot {parent}, but no object of that snapshot exists (missing chain object); restore another point (`subvault list` shows which are complete)")]
    MissingParent {
        /// The object whose parent is missing.
        key: String,
        /// The missing parent's uuid.
        parent: Uuid,
    },
    /// The send parents loop (only possible with hand-made keys).
    #[error("the chain of {0} loops back on itself (hand-edited keys?)")]
    Cycle(String),
}

/// The snapshot uuids that some chain of objects in `backups` restores: a
/// uuid with a full backup, or with a backup whose send parent's uuid is
/// restorable. Several copies of one uuid count if any one of them works.
/// Takes backups or references to them, so callers need not copy a listing.
pub fn restorable<B: Borrow<Backup>>(backups: &[B]) -> HashSet<Uuid> {
    let mut out: HashSet<Uuid> = HashSet::new();
    // Each pass adds the uuids one step further from a full backup; a chain
    // is at most as long as the listing.
    loop {
        let before = out.len();
        for b in backups.iter().map(Borrow::borrow) {
            if b.send_parent_uuid.map_or(true, |p| out.contains(&p)) {
                out.insert(b.uuid);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// One backup per snapshot uuid: when a uuid has several objects (say a
/// btrfs2s3 one and a subvault one, or a broken copy next to a good one), a
/// restorable one wins, then the one whose key names its codec, then the
/// smallest key, so the choice is stable.
pub fn by_uuid(backups: &[Backup]) -> HashMap<Uuid, &Backup> {
    let ok = restorable(backups);
    let rank = |b: &Backup| {
        let works = b.send_parent_uuid.map_or(true, |p| ok.contains(&p));
        (!works, b.codec.is_none())
    };
    // Keys are written out only to break a tie.
    let ranked = |a: &Backup, b: &Backup| rank(a).cmp(&rank(b)).then_with(|| a.key().cmp(&b.key()));
    let mut map: HashMap<Uuid, &Backup> = HashMap::new();
    for b in backups {
        match map.get(&b.uuid) {
            Some(old) if ranked(old, b).is_le() => {}
            _ => {
                map.insert(b.uuid, b);
            }
        }
    }
    map
}

/// Picks the backup `sel` asks for. Ties in time go to the higher ctransid.
pub fn select<'a>(backups: &'a [Backup], sel: Selector) -> Result<&'a Backup, ChainError> {
    let unique = by_uuid(backups);
    let newest = |it: &mut dyn Iterator<Item = &'a Backup>| {
        it.max_by(|a, b| {
            (a.time, a.ctransid)
                .cmp(&(b.time, b.ctransid))
                .then_with(|| a.key().cmp(&b.key()))
        })
    };
    match sel {
        Selector::Uuid(u) => unique.get(&u).copied().ok_or(ChainError::UnknownUuid(u)),
        Selector::Latest => newest(&mut unique.values().copied()).ok_or(ChainError::Empty),
        Selector::At(at) => {
            if let Some(b) = newest(&mut unique.values().copied().filter(|b| b.time <= at)) {
                return Ok(b);
            }
            let oldest = unique
                .values()
                .min_by_key(|b| (b.time, b.ctransid))
                .ok_or(ChainError::Empty)?;
            Err(ChainError::NoneBefore {
                at,
                oldest: oldest.time,
                key: oldest.key().to_string(),
            })
        }
    }
}

/// The objects to receive, root (a full backup) first and `leaf` last.
pub fn chain(backups: &[Backup], leaf: &Backup) -> Result<Vec<Backup>, ChainError> {
    let unique = by_uuid(backups);
    let mut out = vec![leaf.clone()];
    let mut cur = leaf;
    while let Some(parent) = cur.send_parent_uuid {
        let Some(p) = unique.get(&parent) else {
            return Err(ChainError::MissingParent {
                key: cur.key().to_string(),
                parent,
            });
        };
        if out.len() > unique.len() {
            return Err(ChainError::Cycle(leaf.key().to_string()));
        }
        out.push((*p).clone());
        cur = p;
    }
    out.reverse();
    Ok(out)
}

/// A backup whose send parent has no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenLink<'a> {
    /// The backup that cannot be restored as it is.
    pub backup: &'a Backup,
    /// The send parent's uuid, missing from the listing.
    pub missing_parent: Uuid,
}

/// Every object whose send parent is missing from `backups`.
pub fn broken(backups: &[Backup]) -> Vec<BrokenLink<'_>> {
    let unique = by_uuid(backups);
    backups
        .iter()
        .filter_map(|b| {
            let p = b.send_parent_uuid?;
            (!unique.contains_key(&p)).then_some(BrokenLink {
                backup: b,
                missing_parent: p,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Codec;
    use chrono::TimeZone;

    fn b(n: u128, parent: Option<u128>, day: u32) -> Backup {
        Backup {
            key_form: format!("p/s.{n}").into(),
            uuid: Uuid::from_u128(n),
            send_parent_uuid: parent.map(Uuid::from_u128),
            source_uuid: Uuid::from_u128(999),
            ctransid: n as u64,
            time: Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap(),
            size: Some(1),
            storage_class: None,
            codec: Some(Codec::Zstd),
        }
    }

    fn tree() -> Vec<Backup> {
        // yearly 1 <- monthly 2 <- daily 3, daily 4; hourly 5 <- daily 4
        vec![
            b(3, Some(2), 3),
            b(1, None, 1),
            b(5, Some(4), 5),
            b(2, Some(1), 2),
            b(4, Some(2), 4),
        ]
    }

    fn uuids(c: &[Backup]) -> Vec<u128> {
        c.iter().map(|b| b.uuid.as_u128()).collect()
    }

    #[test]
    fn chains_run_root_to_leaf() {
        let t = tree();
        let leaf = select(&t, Selector::Latest).unwrap();
        assert_eq!(uuids(&chain(&t, leaf).unwrap()), vec![1, 2, 4, 5]);
        let leaf = select(&t, Selector::Uuid(Uuid::from_u128(3))).unwrap();
        assert_eq!(uuids(&chain(&t, leaf).unwrap()), vec![1, 2, 3]);
        let leaf = select(&t, Selector::Uuid(Uuid::from_u128(1))).unwrap();
        assert_eq!(uuids(&chain(&t, leaf).unwrap()), vec![1]);
    }

    #[test]
    fn at_picks_the_newest_at_or_before() {
        let t = tree();
        let at = |d, h| Utc.with_ymd_and_hms(2026, 1, d, h, 0, 0).unwrap();
        assert_eq!(
            select(&t, Selector::At(at(3, 0))).unwrap().uuid.as_u128(),
            3
        );
        assert_eq!(
            select(&t, Selector::At(at(3, 23))).unwrap().uuid.as_u128(),
            3
        );
        assert_eq!(
            select(&t, Selector::At(at(31, 0))).unwrap().uuid.as_u128(),
            5
        );
        let err = select(&t[2..3], Selector::At(at(1, 0))).unwrap_err();
        assert!(matches!(err, ChainError::NoneBefore { ref key, .. } if key == "p/s.5"));
        assert!(err.to_string().contains("p/s.5"));
    }

    #[test]
    fn a_missing_parent_names_the_object_and_the_parent() {
        let t: Vec<Backup> = tree()
            .into_iter()
            .filter(|b| b.uuid.as_u128() != 2)
            .collect();
        let leaf = select(&t, Selector::Uuid(Uuid::from_u128(5))).unwrap();
        let err = chain(&t, leaf).unwrap_err();
        assert_eq!(
            err,
            ChainError::MissingParent {
                key: "p/s.4".into(),
                parent: Uuid::from_u128(2)
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("p/s.4") && msg.contains(&Uuid::from_u128(2).to_string()));
        let bad: Vec<u128> = broken(&t).iter().map(|l| l.backup.uuid.as_u128()).collect();
        assert_eq!(bad.len(), 2);
        assert!(bad.contains(&3) && bad.contains(&4));
    }

    #[test]
    fn unknown_uuid_and_empty_listing_are_errors() {
        assert_eq!(
            select(&[], Selector::Latest).unwrap_err(),
            ChainError::Empty
        );
        let u = Uuid::from_u128(77);
        assert_eq!(
            select(&tree(), Selector::Uuid(u)).unwrap_err(),
            ChainError::UnknownUuid(u)
        );
    }

    #[test]
    fn duplicates_prefer_keys_with_a_codec_and_loops_are_caught() {
        let mut plain = b(1, None, 1);
        plain.key_form = "p/a-first".into();
        plain.codec = None;
        let t = vec![plain, b(1, None, 1)];
        assert_eq!(&*select(&t, Selector::Latest).unwrap().key(), "p/s.1");

        let t = vec![b(1, Some(2), 1), b(2, Some(1), 2)];
        let leaf = select(&t, Selector::Latest).unwrap();
        assert!(matches!(chain(&t, leaf), Err(ChainError::Cycle(_))));
    }

    #[test]
    fn a_restorable_copy_is_chosen_over_a_broken_duplicate() {
        // Daily 3 has two objects: one relative to monthly 2 (good, but its
        // key names no codec, which alone would rank it lower) and one
        // relative to a snapshot that has no object.
        let mut good = b(3, Some(2), 3);
        good.codec = None;
        good.key_form = "p/s.3.good".into();
        let mut broken = b(3, Some(42), 3);
        broken.key_form = "p/s.3.broken".into();
        let backups = vec![b(1, None, 1), b(2, Some(1), 2), broken, good];
        let ok = restorable(&backups);
        assert!(ok.contains(&Uuid::from_u128(3)) && !ok.contains(&Uuid::from_u128(42)));
        let leaf = select(&backups, Selector::Uuid(Uuid::from_u128(3))).unwrap();
        assert_eq!(&*leaf.key(), "p/s.3.good");
        let keys: Vec<String> = chain(&backups, leaf)
            .unwrap()
            .into_iter()
            .map(|b| b.key().to_string())
            .collect();
        assert_eq!(keys, ["p/s.1", "p/s.2", "p/s.3.good"]);
        // A cycle (hand-made keys) is not restorable.
        let cycle = vec![b(7, Some(8), 1), b(8, Some(7), 2)];
        assert!(restorable(&cycle).is_empty());
    }
}
