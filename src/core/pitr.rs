//! Point-in-time recovery: which base backup a recovery to a time starts
//! from, and the range of times the bucket can recover to
//! (docs/postgres.md, "Point-in-time recovery").
//!
//! A base backup can serve a target time T when it was consistent at or
//! before T (its `.pgct` suffix: taken after the snapshot in checkpoint mode,
//! after `pg_backup_stop` in backup mode; every commit in its WAL is older),
//! so replay never stops before the copy is consistent. The newest such backup
//! needs the least WAL. The archive's end is the newest WAL object's upload
//! time (to the end of its second, as S3 lists whole seconds): every record
//! in it is older.
//!
//! Pure: no I/O, no clock.

use chrono::{DateTime, Utc};

use crate::core::model::Backup;
use crate::core::pg_record;
use crate::core::wal::SegmentName;

/// Why no base backup serves a target time. Each names the possible range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PitrError {
    /// No backup of the source records when it became consistent.
    #[error("no backup of this source records when it became consistent (backups written before subvault recorded `.pgct`, or not PostgreSQL backups): point-in-time recovery needs a backup taken since; restore one with --at and replay by hand instead")]
    NoBase,
    /// The archive holds no WAL of the source.
    #[error("the remote holds no archived WAL of this source (is archive_command = 'subvault wal-push %p' set?): recoverable points are the backups themselves (--at)")]
    NoWal,
    /// The time is before the oldest usable backup.
    #[error("{target} is before the oldest backup that can serve it (consistent at {oldest}); possible: {oldest} .. {newest}")]
    BeforeOldest {
        /// The target time.
        target: DateTime<Utc>,
        /// The oldest consistency time.
        oldest: DateTime<Utc>,
        /// The end of the archive.
        newest: DateTime<Utc>,
    },
    /// The time is after the newest archived WAL.
    #[error("{target} is after the newest archived WAL (uploaded {newest}); possible: {oldest} .. {newest}")]
    AfterArchive {
        /// The target time.
        target: DateTime<Utc>,
        /// The oldest consistency time.
        oldest: DateTime<Utc>,
        /// The end of the archive.
        newest: DateTime<Utc>,
    },
}

/// The backups whose WAL the archive still holds from their start on: a
/// backup whose recorded start (`.pgrs`) lies before the archive's first
/// segment (`first_segment`; WAL retention with `pitr_window` deleted it)
/// cannot replay past its own snapshot, so it serves no recovery target.
/// Backups that do not record their start are kept (as before `.pgrs`).
pub fn reachable_by_archive(backups: Vec<Backup>, first_segment: Option<&str>) -> Vec<Backup> {
    let Some(first) = first_segment.and_then(SegmentName::parse) else {
        return backups;
    };
    backups
        .into_iter()
        .filter(|b| {
            let start = pg_record::from_key(&b.key())
                .and_then(|r| r.wal_start)
                .and_then(|s| SegmentName::parse(&s));
            start.map_or(true, |s| (s.log, s.seg) >= (first.log, first.seg))
        })
        .collect()
}

/// The base backup for a recovery to `target`, given the source's backups and
/// the time of its newest archived WAL object (`None`: none archived).
pub fn choose_base(
    backups: &[Backup],
    wal_end: Option<DateTime<Utc>>,
    target: DateTime<Utc>,
) -> Result<(&Backup, DateTime<Utc>), PitrError> {
    let mut bases: Vec<(&Backup, DateTime<Utc>)> = backups
        .iter()
        .filter_map(|b| Some((b, pg_record::from_key(&b.key())?.consistent_at?)))
        .collect();
    // Newest consistency first; ties by content order, like restore's choice.
    bases.sort_by_key(|b| std::cmp::Reverse((b.1, b.0.ctransid)));
    let oldest = bases.last().ok_or(PitrError::NoBase)?.1;
    let newest = wal_end.ok_or(PitrError::NoWal)?;
    // S3 listings give LastModified in whole seconds, cut down: an object
    // listed at 12:00:07 was stored before 12:00:08, so its records may be
    // that late. A time with a fraction came from a store that keeps one.
    let end = if newest.timestamp_subsec_nanos() == 0 {
        newest + chrono::TimeDelta::seconds(1)
    } else {
        newest + chrono::TimeDelta::nanoseconds(1)
    };
    if target >= end {
        return Err(PitrError::AfterArchive {
            target,
            oldest,
            newest,
        });
    }
    bases
        .into_iter()
        .find(|(_, at)| *at <= target)
        .ok_or(PitrError::BeforeOldest {
            target,
            oldest,
            newest,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn backup(n: u8, ctid: u64, consistent: Option<&str>) -> Backup {
        let pgct = consistent.map(|c| format!(".pgct{c}")).unwrap_or_default();
        Backup {
            key_form: format!("db.ctim2026-01-01T00:00:00+00:00.ctid{ctid}.pgvn150018.pgtl1.pgls0-3000060.pgmdcheckpoint{pgct}").into(),
            uuid: Uuid::from_u128(n.into()),
            send_parent_uuid: None,
            source_uuid: Uuid::from_u128(99),
            ctransid: ctid,
            time: t("2026-01-01T00:00:00Z"),
            size: Some(1),
            storage_class: None,
            codec: None,
        }
    }

    #[test]
    fn the_newest_backup_consistent_by_the_target_serves_it() {
        let b = [
            backup(1, 10, Some("2026-01-01T01:00:05Z")),
            backup(2, 20, Some("2026-01-01T02:00:05Z")),
            backup(3, 30, Some("2026-01-01T03:00:05Z")),
            backup(4, 25, None),
        ];
        let end = Some(t("2026-01-01T03:30:00Z"));
        let pick = |at: &str| choose_base(&b, end, t(at)).map(|(b, _)| b.uuid.as_u128());
        assert_eq!(pick("2026-01-01T01:30:00Z"), Ok(1));
        // Right at a consistency time, and one second before it.
        assert_eq!(pick("2026-01-01T02:00:05Z"), Ok(2));
        assert_eq!(pick("2026-01-01T02:00:04Z"), Ok(1));
        // Up to the end of the archive, inclusive.
        assert_eq!(pick("2026-01-01T03:30:00Z"), Ok(3));
        assert_eq!(
            choose_base(&b, end, t("2026-01-01T02:30:00Z")).unwrap().1,
            t("2026-01-01T02:00:05Z")
        );
    }

    #[test]
    fn backups_starting_before_the_archive_serve_no_target() {
        // `.pgrs<log>-<seg>`, timeline 1 from `.pgtl1`.
        let with_start = |n: u8, start: &str| {
            let mut b = backup(n, n.into(), Some("2026-01-01T01:00:05Z"));
            b.key_form = format!("{}.pgrs{start}", b.key()).into();
            b
        };
        let b = vec![
            with_start(1, "0-3"),
            with_start(2, "0-5"),
            backup(3, 3, None),
        ];
        let ids = |v: Vec<Backup>| v.iter().map(|b| b.uuid.as_u128()).collect::<Vec<_>>();
        assert_eq!(
            ids(reachable_by_archive(
                b.clone(),
                Some("000000010000000000000004")
            )),
            [2, 3]
        );
        assert_eq!(
            ids(reachable_by_archive(
                b.clone(),
                Some("000000010000000000000003")
            )),
            [1, 2, 3]
        );
        assert_eq!(ids(reachable_by_archive(b, None)), [1, 2, 3]);
    }

    #[test]
    fn times_out_of_range_name_the_possible_range() {
        let b = [
            backup(1, 10, Some("2026-01-01T01:00:05Z")),
            backup(2, 20, Some("2026-01-01T02:00:05Z")),
        ];
        let end = Some(t("2026-01-01T03:00:00Z"));
        let before = choose_base(&b, end, t("2026-01-01T01:00:04Z")).unwrap_err();
        assert!(matches!(before, PitrError::BeforeOldest { .. }));
        assert!(before
            .to_string()
            .contains("possible: 2026-01-01 01:00:05 UTC .. 2026-01-01 03:00:00 UTC"));
        // Listed in whole seconds: a time within the listed second is in range.
        assert!(choose_base(&b, end, t("2026-01-01T03:00:00.900Z")).is_ok());
        let after = choose_base(&b, end, t("2026-01-01T03:00:01Z")).unwrap_err();
        assert!(matches!(after, PitrError::AfterArchive { .. }), "{after}");
        assert!(after
            .to_string()
            .contains("possible: 2026-01-01 01:00:05 UTC"));
        assert_eq!(
            choose_base(&b, None, t("2026-01-01T02:30:00Z")).unwrap_err(),
            PitrError::NoWal
        );
        assert_eq!(
            choose_base(&[backup(1, 1, None)], end, t("2026-01-01T02:30:00Z")).unwrap_err(),
            PitrError::NoBase
        );
    }
}
