//! WAL retention: which archived WAL objects no kept PostgreSQL backup can
//! use (docs/postgres.md, "WAL retention").
//!
//! Each kept backup records the segment recovery from it starts at (its
//! redo point, `.pgrs` in the key). Recovery from a backup reads WAL from
//! there on, on its timeline and the timelines after it, so on each timeline
//! the archive keeps every segment from the earliest start of the backups
//! that count ("anchors") and deletes the older ones:
//!
//! - without `pitr_window`, every kept backup is an anchor;
//! - with `pitr_window`, recovery is promised only to times within the window,
//!   so the anchors are the base backup such a recovery starts from (the
//!   newest backup consistent at or before the window's start), every backup
//!   newer than it, and every `backup`-mode backup (it needs the WAL from its
//!   start to its stop to become consistent at all). A `checkpoint`-mode
//!   backup is consistent from its own `pg_wal`, so an older one needs no
//!   archived WAL. The cut never makes a hole: everything from the earliest
//!   anchor on is kept.
//!
//! Safety first: when an anchor does not record its start (a key written
//! before `.pgrs`, or without a PostgreSQL record), when there is no kept
//! backup, or when the archive holds WAL of more than one cluster (backups
//! do not say which cluster they belong to), nothing is deleted and the
//! result says why. `.history` files are always kept; `.backup` files and
//! `.partial` segments older than the cut go with the segments.
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::model::Backup;
use super::pg_record::{self, PgRecord};
use super::wal::{SegmentName, WalFile};

/// One archived WAL object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    /// Its key.
    pub key: String,
    /// The cluster it belongs to.
    pub system_id: u64,
    /// The file it holds.
    pub file: WalFile,
    /// Bytes as stored.
    pub size: u64,
}

/// What retention decided for one source's archive on one remote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalRetention {
    /// Keys to delete, oldest first (by position in WAL, then timeline), so
    /// that deleting any first part of them leaves the archive without a gap.
    pub delete: Vec<String>,
    /// Their bytes as stored.
    pub delete_bytes: u64,
    /// WAL objects in the archive (the prune budget's base).
    pub existing: usize,
    /// Per timeline, the first segment kept (segments before it go).
    pub keep_from: BTreeMap<u32, String>,
    /// Why nothing is deleted, when retention cannot tell what is needed.
    pub held_back: Option<String>,
}

/// A kept backup as retention sees it.
struct Anchor<'a> {
    key: std::borrow::Cow<'a, str>,
    record: Option<PgRecord>,
}

impl WalRetention {
    /// The deletions one run may make with a budget of `allowed` objects:
    /// the oldest ones, so what stays has no gap; later runs take the rest.
    pub fn within(&self, allowed: usize) -> &[String] {
        &self.delete[..self.delete.len().min(allowed)]
    }
}

/// Decides which of `objects` (one source's archive on one remote) no backup
/// of `kept` (the source's backups there after this run) can use.
/// `window` is the source's `pitr_window`, measured back from `now`.
pub fn retain(
    objects: &[WalObject],
    kept: &[&Backup],
    window: Option<Duration>,
    now: DateTime<Utc>,
) -> WalRetention {
    let mut out = WalRetention {
        existing: objects.len(),
        ..Default::default()
    };
    if objects.is_empty() {
        return out;
    }
    let clusters: BTreeSet<u64> = objects.iter().map(|o| o.system_id).collect();
    if clusters.len() > 1 {
        out.held_back = Some(format!(
            "the archive holds WAL of {} clusters (system identifiers {}) and backups do not \
             say which is theirs; move the old cluster's folder away to prune",
            clusters.len(),
            clusters
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return out;
    }
    let anchors = match anchors(kept, window, now) {
        Ok(a) => a,
        Err(why) => {
            out.held_back = Some(why);
            return out;
        }
    };
    let mut starts = Vec::new();
    for a in &anchors {
        match a.record.as_ref().and_then(|r| r.wal_start.as_deref()) {
            Some(s) => starts.push(SegmentName::parse(s).expect("from_key checks the name")),
            None => {
                out.held_back = Some(format!(
                    "backup {} does not record where its WAL starts (written before subvault \
                     recorded `.pgrs`, or not a PostgreSQL backup), so all WAL is kept until \
                     it is pruned",
                    a.key
                ));
                return out;
            }
        }
    }
    let earliest = *starts
        .iter()
        .min_by_key(|s| (s.log, s.seg))
        .expect("anchors is not empty");
    let timelines: BTreeSet<u32> = objects.iter().map(|o| o.file.timeline()).collect();
    let cut: BTreeMap<u32, SegmentName> = timelines
        .into_iter()
        .map(|t| (t, cut_for(t, &starts, earliest)))
        .collect();
    out.keep_from = cut.iter().map(|(t, s)| (*t, s.to_string())).collect();
    let mut delete: Vec<&WalObject> = objects
        .iter()
        .filter(|o| {
            let seg = match o.file {
                WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup(s, _) => s,
                WalFile::History(_) => return false,
            };
            (seg.log, seg.seg) < (cut[&seg.timeline].log, cut[&seg.timeline].seg)
        })
        .collect();
    delete.sort_by_key(|o| {
        let s = match o.file {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup(s, _) => s,
            WalFile::History(_) => unreachable!("history files are kept"),
        };
        (s.log, s.seg, s.timeline, o.key.clone())
    });
    out.delete_bytes = delete.iter().map(|o| o.size).sum();
    out.delete = delete.into_iter().map(|o| o.key.clone()).collect();
    out
}

/// The first segment kept on timeline `t`: the earliest start of the anchors
/// on `t` or an earlier timeline (recovery follows timelines forward). A
/// timeline older than every anchor keeps from the earliest start of all, so
/// the segment a later timeline branched in stays.
fn cut_for(t: u32, starts: &[SegmentName], earliest: SegmentName) -> SegmentName {
    let pos = starts
        .iter()
        .filter(|s| s.timeline <= t)
        .map(|s| (s.log, s.seg))
        .min()
        .unwrap_or((earliest.log, earliest.seg));
    SegmentName {
        timeline: t,
        log: pos.0,
        seg: pos.1,
    }
}

/// The kept backups whose WAL must stay (see the module doc).
fn anchors<'a>(
    kept: &[&'a Backup],
    window: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Vec<Anchor<'a>>, String> {
    if kept.is_empty() {
        return Err("no PostgreSQL backup is kept on this remote, so no WAL is deleted".into());
    }
    let all: Vec<Anchor> = kept
        .iter()
        .map(|b| {
            let key = b.key();
            Anchor {
                record: pg_record::from_key(&key),
                key,
            }
        })
        .collect();
    let Some(window) = window else {
        return Ok(all);
    };
    let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    // The base a recovery to the window's start begins from, as `restore
    // --pitr` chooses it: the newest backup consistent by then.
    let base = all
        .iter()
        .filter_map(|a| Some((a.record.as_ref()?.consistent_at?, a.key.clone())))
        .filter(|(at, _)| *at <= since)
        .max();
    let Some((base_at, base_key)) = base else {
        // The window reaches back past every backup: all are needed.
        return Ok(all);
    };
    Ok(all
        .into_iter()
        .filter(|a| {
            let Some(r) = &a.record else { return true };
            a.key == base_key
                || r.mode != "checkpoint"
                || r.consistent_at.map_or(true, |at| at > base_at)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wal::WalArchive;
    use chrono::TimeDelta;
    use uuid::Uuid;

    const SYSID: u64 = 7434216734418238512;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn archive() -> WalArchive {
        WalArchive {
            prefix: "pg/".into(),
            source: "db".into(),
            system_id: SYSID,
        }
    }

    fn obj(name: &str) -> WalObject {
        let file = WalFile::parse(name).unwrap();
        WalObject {
            key: archive().key(&file),
            system_id: SYSID,
            file,
            size: 100,
        }
    }

    /// A backup key with a PostgreSQL record: mode, start segment (or none),
    /// consistency time.
    fn backup(mode: &str, start: Option<&str>, consistent: DateTime<Utc>) -> Backup {
        let rec = PgRecord {
            server_version_num: 150018,
            server_version: String::new(),
            mode: mode.into(),
            lsn: "0/3000060".into(),
            stop_lsn: None,
            timeline: start.and_then(SegmentName::parse).map_or(1, |s| s.timeline),
            consistent_at: Some(consistent),
            wal_start: start.map(String::from),
        };
        Backup {
            key_form: format!(
                "pg/db.ctim{}.ctid1.mdvn1.seqn0.cmprzstd{}",
                consistent.format("%Y-%m-%dT%H:%M:%S+00:00"),
                pg_record::key_suffix(&rec)
            )
            .into(),
            uuid: Uuid::from_u128(consistent.timestamp() as u128),
            send_parent_uuid: None,
            source_uuid: Uuid::nil(),
            ctransid: 1,
            time: consistent,
            size: Some(1),
            storage_class: None,
            codec: None,
        }
    }

    /// The deleted files' names, sorted.
    fn names(r: &WalRetention) -> Vec<String> {
        let mut n: Vec<String> = r
            .delete
            .iter()
            .map(|k| archive().parse_key(k).unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn segments_before_the_oldest_kept_start_go_history_files_stay() {
        let objects: Vec<WalObject> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000004",
            "000000010000000000000005.partial",
            "00000002.history",
            "000000020000000000000005",
            "000000020000000000000006",
        ]
        .iter()
        .map(|n| obj(n))
        .collect();
        let b1 = backup(
            "backup",
            Some("000000010000000000000003"),
            t("2026-01-01T01:00:00Z"),
        );
        let b2 = backup(
            "checkpoint",
            Some("000000020000000000000006"),
            t("2026-01-01T02:00:00Z"),
        );
        let r = retain(&objects, &[&b1, &b2], None, t("2026-01-02T00:00:00Z"));
        assert_eq!(r.held_back, None);
        assert_eq!(
            names(&r),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
            ]
        );
        assert_eq!(r.delete_bytes, 300);
        // Oldest first: the first object deleted is segment 1.
        assert!(r.delete[0].contains("000000010000000000000001.cmprzstd"));
        assert_eq!(r.existing, 10);
        // Timeline 2 keeps from the timeline-1 backup's start too: recovery
        // from it may follow the switch to timeline 2.
        assert_eq!(r.keep_from[&2], "000000020000000000000003");
        // Only the newer backup kept: timeline 1 keeps nothing before its
        // position, timeline 2 nothing before its start, history stays.
        let r = retain(&objects, &[&b2], None, t("2026-01-02T00:00:00Z"));
        assert_eq!(
            names(&r),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003",
                "000000010000000000000003.00000028.backup",
                "000000010000000000000004",
                "000000010000000000000005.partial",
                "000000020000000000000005",
            ]
        );
        assert!(!names(&r).contains(&"00000002.history".to_string()));
    }

    #[test]
    fn an_unknown_start_no_backup_or_two_clusters_delete_nothing() {
        let objects = vec![
            obj("000000010000000000000001"),
            obj("000000010000000000000002"),
        ];
        let now = t("2026-01-02T00:00:00Z");
        let old = backup("checkpoint", None, t("2026-01-01T00:00:00Z"));
        let new = backup(
            "checkpoint",
            Some("000000010000000000000002"),
            t("2026-01-01T01:00:00Z"),
        );
        let r = retain(&objects, &[&old, &new], None, now);
        assert!(r.delete.is_empty());
        assert!(r.held_back.as_ref().unwrap().contains(&*old.key()), "{r:?}");
        let r = retain(&objects, &[], None, now);
        assert!(r.delete.is_empty() && r.held_back.is_some());
        let mut other = obj("000000010000000000000001");
        other.system_id = 1;
        let r = retain(&[objects[0].clone(), other], &[&new], None, now);
        assert!(r.delete.is_empty());
        assert!(r.held_back.unwrap().contains("2 clusters"));
        // A backup without a PostgreSQL record is an unknown start too.
        let mut plain = new.clone();
        plain.key_form = "pg/db.ctim2026-01-01T00:00:00+00:00.ctid1.mdvn1.seqn0".into();
        assert!(retain(&objects, &[&plain, &new], None, now)
            .held_back
            .is_some());
        // With a window, an old checkpoint backup without a start no longer
        // matters: the window's base is known.
        let r = retain(
            &objects,
            &[&old, &new],
            Some(Duration::from_secs(3600)),
            now,
        );
        assert_eq!(names(&r), ["000000010000000000000001"]);
    }

    #[test]
    fn a_window_keeps_from_its_base_but_never_below_a_backup_mode_backup() {
        let objects: Vec<WalObject> = (1..=9)
            .map(|n| obj(&format!("0000000100000000000000{n:02X}")))
            .collect();
        let day = |d: u32| t(&format!("2026-01-{d:02}T00:00:00Z"));
        let seg = |n: u32| format!("0000000100000000000000{n:02X}");
        let b: Vec<Backup> = (1..=8)
            .map(|d| backup("checkpoint", Some(&seg(d)), day(d)))
            .collect();
        let kept: Vec<&Backup> = b.iter().collect();
        let now = day(9);
        // Three days back: the base is the backup of day 6 (consistent at
        // the window's start exactly).
        let r = retain(&objects, &kept, Some(Duration::from_secs(3 * 86400)), now);
        assert_eq!(r.keep_from[&1], seg(6));
        assert_eq!(r.delete.len(), 5);
        // A window longer than the history keeps what every backup needs.
        let r = retain(&objects, &kept, Some(Duration::from_secs(90 * 86400)), now);
        assert_eq!(r.keep_from[&1], seg(1));
        // A backup-mode backup before the window still needs its WAL.
        let mut kept2 = kept.clone();
        let bm = backup("backup", Some(&seg(2)), day(2) + TimeDelta::hours(1));
        kept2.push(&bm);
        let r = retain(&objects, &kept2, Some(Duration::from_secs(3 * 86400)), now);
        assert_eq!(r.keep_from[&1], seg(2));
        assert_eq!(names(&r), [seg(1)]);
    }

    /// 400 days: an hourly stream of WAL (one segment an hour, a timeline
    /// switch on day 200), a backup each day kept by a simple policy (30
    /// dailies, 12 monthlies), retention after each day. After each day
    /// every kept backup's WAL from its start to the newest is complete, and
    /// nothing older than the oldest kept backup's start is left.
    #[test]
    fn four_hundred_days_keep_exactly_what_the_kept_backups_need() {
        const SEG: u32 = 16 << 20;
        let start = t("2025-11-01T00:00:00Z");
        let mut archive_objs: Vec<WalObject> = vec![obj("00000001.history")];
        let mut backups: Vec<(Backup, u32, u64)> = Vec::new(); // backup, timeline, start position
        let mut tli = 1u32;
        let mut pos = 0u64; // segments written so far (LSN / SEG)
        let mut deleted_total = 0;
        for day in 0..400i64 {
            for _hour in 0..24 {
                pos += 1;
                let s = SegmentName::of_lsn(tli, pos * u64::from(SEG), SEG);
                archive_objs.push(obj(&s.to_string()));
            }
            if day == 200 {
                // Promotion: the old timeline's last segment goes as a
                // partial, the new one starts in the same position.
                let s = SegmentName::of_lsn(tli, pos * u64::from(SEG), SEG);
                archive_objs.retain(|o| o.file != WalFile::Segment(s));
                archive_objs.push(obj(&format!("{s}.partial")));
                tli = 2;
                archive_objs.push(obj("00000002.history"));
                let s2 = SegmentName::of_lsn(tli, pos * u64::from(SEG), SEG);
                archive_objs.push(obj(&s2.to_string()));
            }
            let now = start + TimeDelta::days(day) + TimeDelta::hours(23);
            // Today's backup starts at the current position.
            let s = SegmentName::of_lsn(tli, pos * u64::from(SEG), SEG);
            backups.push((backup("checkpoint", Some(&s.to_string()), now), tli, pos));
            // Policy: the last 30 days, and the first backup of each of
            // the last 12 months.
            let month = |b: &Backup| b.time.format("%Y-%m").to_string();
            let mut firsts: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
            for (b, _, _) in &backups {
                firsts.entry(month(b)).or_insert(b.time);
            }
            let months: Vec<String> = firsts.keys().rev().take(12).cloned().collect();
            backups.retain(|(b, _, _)| {
                now - b.time < TimeDelta::days(30)
                    || (months.contains(&month(b)) && firsts[&month(b)] == b.time)
            });
            let kept: Vec<&Backup> = backups.iter().map(|(b, _, _)| b).collect();
            let r = retain(&archive_objs, &kept, None, now);
            assert_eq!(r.held_back, None, "day {day}");
            deleted_total += r.delete.len();
            let gone: BTreeSet<&String> = r.delete.iter().collect();
            archive_objs.retain(|o| !gone.contains(&o.key));

            // What is left: per kept backup, its start..now on its
            // timeline and the later ones, complete.
            let have: BTreeSet<(u32, u64)> = archive_objs
                .iter()
                .filter_map(|o| match o.file {
                    WalFile::Segment(s) | WalFile::Partial(s) => {
                        Some((s.timeline, s.start_lsn(SEG) / u64::from(SEG)))
                    }
                    _ => None,
                })
                .collect();
            let tli_at = |p: u64| if p >= 201 * 24 { 2 } else { 1 };
            for (b, btli, bpos) in &backups {
                for p in *bpos..=pos {
                    let want = tli_at(p).max(*btli);
                    assert!(
                        have.contains(&(want, p)),
                        "day {day}: backup {} needs segment {p} of timeline {want}",
                        b.key()
                    );
                }
            }
            let oldest = backups.iter().map(|(_, _, p)| *p).min().unwrap();
            assert!(
                have.iter().all(|(_, p)| *p >= oldest),
                "day {day}: a segment older than the oldest kept start survived"
            );
            // Both history files stay.
            assert_eq!(
                archive_objs
                    .iter()
                    .filter(|o| matches!(o.file, WalFile::History(_)))
                    .count(),
                if day >= 200 { 2 } else { 1 }
            );
        }
        // 12 monthlies + 30 dailies remain; most of 400 days of WAL is gone.
        assert!(backups.len() <= 43, "{}", backups.len());
        assert!(deleted_total > 24 * 30, "{deleted_total}");
    }
}
