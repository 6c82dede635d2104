//! The rules that keep one run from losing history, as pure functions: a run
//! whose clock lies before what exists is refused, a prune above a budget is
//! held back, and backups of this source that this host cannot explain (a
//! cloned machine writing the same prefix) stop the pruning of that remote.
//!
//! `ops::run` applies them; they are here so each is tested without root.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::model::{Backup, Snapshot};

/// The newest thing a source already has: its time and what it is, for the
/// refusal's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    /// The snapshot's or backup's time.
    pub time: DateTime<Utc>,
    /// What it is, e.g. `snapshot data.2026-11-27T04:00:00Z` or `backup KEY on remote R`.
    pub what: String,
}

/// A run's time lies before the newest snapshot or backup of its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to run at {} (UTC): the source already has a {} from {} (UTC), {} later; a run \
     at an earlier time would take its spans for the past and prune them. Fix the system clock \
     (or --now); nothing was snapshotted, uploaded or deleted",
    .now.format("%Y-%m-%d %H:%M:%S"),
    .newest.what,
    .newest.time.format("%Y-%m-%d %H:%M:%S"),
    ahead(.newest.time, *.now)
)]
pub struct ClockBehind {
    /// The run's time.
    pub now: DateTime<Utc>,
    /// What exists that is newer.
    pub newest: Newest,
}

fn ahead(later: DateTime<Utc>, earlier: DateTime<Utc>) -> String {
    let d = later - earlier;
    if d.num_days() >= 2 {
        format!("{} days", d.num_days())
    } else if d.num_hours() >= 2 {
        format!("{} hours", d.num_hours())
    } else {
        format!("{} minutes", d.num_minutes().max(1))
    }
}

/// Refuses `now` when it lies more than `tolerance` before the newest of the
/// source's snapshots and backups (a clock that steps back a little, as NTP
/// may, is tolerated).
pub fn check_clock(
    now: DateTime<Utc>,
    newest: Option<Newest>,
    tolerance: Duration,
) -> Result<(), ClockBehind> {
    let Some(newest) = newest else {
        return Ok(());
    };
    let tolerance = chrono::Duration::from_std(tolerance).unwrap_or(chrono::Duration::MAX);
    if now + tolerance < newest.time {
        return Err(ClockBehind { now, newest });
    }
    Ok(())
}

/// The newest of `snapshots` and `backups` (of one source, any remote).
pub fn newest<'a>(
    snapshots: &[Snapshot],
    backups: impl IntoIterator<Item = (&'a str, &'a Backup)>,
) -> Option<Newest> {
    let snap = snapshots.iter().max_by_key(|s| s.time).map(|s| Newest {
        time: s.time,
        what: format!(
            "snapshot {}",
            s.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| s.path.display().to_string())
        ),
    });
    let backup = backups
        .into_iter()
        .max_by_key(|(_, b)| b.time)
        .map(|(remote, b)| Newest {
            time: b.time,
            what: format!("backup on remote {remote} ({})", b.key()),
        });
    match (snap, backup) {
        (Some(s), Some(b)) => Some(if b.time > s.time { b } else { s }),
        (s, b) => s.or(b),
    }
}

/// How much one run may prune: a share of what exists, and always two (the
/// one or two a normal run replaces).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneBudget {
    /// The share of what exists (0 to 1).
    pub share: f64,
}

/// What a run always may delete, whatever the share.
pub const ALWAYS_ALLOWED: usize = 2;

impl PruneBudget {
    /// How many of `existing` one run may delete.
    pub fn allowed(&self, existing: usize) -> usize {
        ((self.share * existing as f64).floor() as usize).max(ALWAYS_ALLOWED)
    }

    /// Whether deleting `deleting` of `existing` fits.
    pub fn allows(&self, deleting: usize, existing: usize) -> bool {
        deleting <= self.allowed(existing)
    }
}

/// Backups of this source on one remote that no snapshot of this host explains
/// and that are newer than this host's newest snapshot: another machine (a
/// cloned VM, a restored disk on a second host) is writing the same source to
/// the same place, and pruning here would delete its history. Backups older
/// than the newest snapshot are normal (their snapshots were pruned locally).
pub fn unexplained_newer<'a>(
    snapshots: &[Snapshot],
    backups: impl IntoIterator<Item = &'a Backup>,
) -> Vec<&'a Backup> {
    let newest = snapshots
        .iter()
        .filter(|s| !s.planned)
        .map(|s| s.time)
        .max();
    backups
        .into_iter()
        .filter(|b| !snapshots.iter().any(|s| s.uuid == b.uuid))
        .filter(|b| newest.map_or(true, |t| b.time > t))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use uuid::Uuid;

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn snap(n: u128, time: &str) -> Snapshot {
        Snapshot {
            path: PathBuf::from(format!("/snaps/data.{time}")),
            uuid: Uuid::from_u128(n),
            parent_uuid: Uuid::nil(),
            ctransid: n as u64,
            time: t(time),
            planned: false,
        }
    }

    fn backup(n: u128, time: &str) -> Backup {
        Backup {
            key_form: format!("k{n}").into(),
            uuid: Uuid::from_u128(n),
            send_parent_uuid: None,
            source_uuid: Uuid::nil(),
            ctransid: n as u64,
            time: t(time),
            size: Some(1),
            storage_class: None,
            codec: None,
        }
    }

    #[test]
    fn a_run_before_the_newest_snapshot_or_backup_is_refused_beyond_the_tolerance() {
        let snaps = [snap(1, "2026-11-01T00:00:00Z")];
        let backups = [backup(2, "2026-11-27T04:00:00Z")];
        let newest = newest(&snaps, backups.iter().map(|b| ("r", b))).unwrap();
        assert_eq!(newest.time, t("2026-11-27T04:00:00Z"));
        assert!(newest.what.contains("remote r (k2)"), "{}", newest.what);
        let tol = Duration::from_secs(15 * 60);
        // A year early: refused, and the line names both times.
        let err = check_clock(t("2025-11-27T04:00:00Z"), Some(newest.clone()), tol).unwrap_err();
        let line = err.to_string();
        assert!(line.contains("2025-11-27 04:00:00"), "{line}");
        assert!(line.contains("2026-11-27 04:00:00"), "{line}");
        assert!(line.contains("365 days"), "{line}");
        // Ten minutes back is a clock step: tolerated; twenty is not.
        assert!(check_clock(t("2026-11-27T03:50:00Z"), Some(newest.clone()), tol).is_ok());
        assert!(check_clock(t("2026-11-27T03:40:00Z"), Some(newest.clone()), tol).is_err());
        // Later than everything, or nothing yet: fine.
        assert!(check_clock(t("2026-11-28T00:00:00Z"), Some(newest), tol).is_ok());
        assert!(check_clock(t("2000-01-01T00:00:00Z"), None, tol).is_ok());
        // A newer snapshot wins over an older backup.
        let snaps = [snap(3, "2026-12-01T00:00:00Z")];
        let n = super::newest(&snaps, backups.iter().map(|b| ("r", b))).unwrap();
        assert!(n.what.starts_with("snapshot data."), "{}", n.what);
    }

    #[test]
    fn the_prune_budget_is_a_share_but_always_two() {
        let half = PruneBudget { share: 0.5 };
        assert_eq!(half.allowed(30), 15);
        assert!(half.allows(15, 30) && !half.allows(16, 30));
        assert!(!half.allows(30, 30), "the wrong-clock case: everything");
        assert!(
            half.allows(2, 2),
            "a run that replaces a daily and an hourly"
        );
        assert!(half.allows(2, 3) && !half.allows(3, 3));
        let none = PruneBudget { share: 0.0 };
        assert!(none.allows(2, 100) && !none.allows(3, 100));
        let all = PruneBudget { share: 1.0 };
        assert!(all.allows(100, 100));
    }

    #[test]
    fn only_unexplained_backups_newer_than_the_newest_snapshot_are_foreign() {
        let snaps = [
            snap(1, "2026-11-01T00:00:00Z"),
            snap(2, "2026-11-02T00:00:00Z"),
        ];
        let backups = [
            backup(1, "2026-11-01T00:00:00Z"),  // ours
            backup(9, "2026-10-01T00:00:00Z"),  // ours, its snapshot pruned
            backup(10, "2026-11-02T00:30:00Z"), // someone else's, newer
        ];
        let foreign: Vec<String> = unexplained_newer(&snaps, &backups)
            .iter()
            .map(|b| b.key().into_owned())
            .collect();
        assert_eq!(foreign, ["k10"]);
        // No snapshot at all: every backup of the source is unexplained.
        assert_eq!(unexplained_newer(&[], &backups).len(), 3);
    }
}
