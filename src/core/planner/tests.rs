//! Planner tests: hand-worked cases and property tests over simulated histories.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::core::model::{Backup, Snapshot};
use crate::core::policy::{Count, Policy, Timeframe};

const SOURCE: Uuid = Uuid::from_u128(0x5000);

fn utc(s: &str) -> DateTime<Utc> {
    let s = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else if s.ends_with('Z') {
        s.to_string()
    } else {
        format!("{s}Z")
    };
    DateTime::parse_from_rfc3339(&s)
        .unwrap()
        .with_timezone(&Utc)
}

/// Snapshot uuids are derived from ctransids so assertions can speak in ctransids.
fn uuid(ctransid: u64) -> Uuid {
    Uuid::from_u128(ctransid as u128)
}

fn snap(time: DateTime<Utc>, ctransid: u64) -> Snapshot {
    Snapshot {
        path: PathBuf::from(format!("/snaps/s{ctransid}")),
        uuid: uuid(ctransid),
        parent_uuid: SOURCE,
        ctransid,
        time,
        planned: false,
    }
}

fn backup(s: &Snapshot, parent: Option<u64>) -> Backup {
    Backup {
        // Like real keys, the key names the parent too.
        key_form: match parent {
            None => format!("b{}", s.ctransid),
            Some(p) => format!("b{}p{p}", s.ctransid),
        }
        .into(),
        uuid: s.uuid,
        send_parent_uuid: parent.map(uuid),
        source_uuid: SOURCE,
        ctransid: s.ctransid,
        time: s.time,
        size: Some(1),
        storage_class: None,
        codec: None,
    }
}

/// A simulated host: runs the planner like `subvault run` would and applies the
/// plan's actions to in-memory snapshots and backups.
struct Sim {
    tz: Tz,
    snapshots: Vec<Snapshot>,
    remotes: Vec<RemoteInput>,
    /// (time, ctransid) of every snapshot ever taken, oldest first: what
    /// [`check_coverage`] holds the remotes to.
    history: Vec<(DateTime<Utc>, u64)>,
}

impl Sim {
    fn new(tz: Tz, policies: &[&str]) -> Sim {
        Sim {
            tz,
            snapshots: Vec::new(),
            remotes: policies
                .iter()
                .enumerate()
                .map(|(i, p)| RemoteInput {
                    id: format!("r{i}"),
                    policy: p.parse().unwrap(),
                    backups: Vec::new().into(),
                    unreachable: false,
                })
                .collect(),
            history: Vec::new(),
        }
    }

    fn input(&self, now: DateTime<Utc>, new: Option<u64>) -> PlanInput {
        let mut snapshots = self.snapshots.clone();
        if let Some(c) = new {
            snapshots.push(Snapshot::planned(
                PathBuf::from(format!("/snaps/s{c}")),
                SOURCE,
                c,
                now,
            ));
        }
        PlanInput {
            tz: self.tz,
            now,
            source_uuid: SOURCE,
            snapshots,
            remotes: self.remotes.clone(),
        }
    }

    /// One run at `now` taking a snapshot with ctransid `new` (if any); returns the plan.
    fn run(&mut self, now: DateTime<Utc>, new: Option<u64>) -> Plan {
        let plan = plan(&self.input(now, new));
        check_invariants(&plan, &self.remotes);
        self.apply(&plan, now, new);
        plan
    }

    fn apply(&mut self, plan: &Plan, now: DateTime<Utc>, new: Option<u64>) {
        let by_path: HashMap<PathBuf, Uuid> = self
            .snapshots
            .iter()
            .map(|s| (s.path.clone(), s.uuid))
            .collect();
        for action in &plan.actions {
            match action {
                Action::CreateSnapshot { .. } => {
                    self.snapshots.push(snap(now, new.unwrap()));
                    self.history.push((now, new.unwrap()));
                }
                Action::UploadBackup(Upload {
                    remote,
                    snapshot_path,
                    send_parent_path,
                    ..
                }) => {
                    let s = self
                        .snapshots
                        .iter()
                        .find(|s| &s.path == snapshot_path)
                        .unwrap()
                        .clone();
                    let parent = send_parent_path.as_ref().map(|p| {
                        let u = by_path[p];
                        self.snapshots
                            .iter()
                            .find(|s| s.uuid == u)
                            .unwrap()
                            .ctransid
                    });
                    let r = self.remotes.iter_mut().find(|r| &r.id == remote).unwrap();
                    let new = backup(&s, parent);
                    // An upload under an existing key replaces that object.
                    std::sync::Arc::make_mut(&mut r.backups).retain(|b| b.key() != new.key());
                    std::sync::Arc::make_mut(&mut r.backups).push(new);
                }
                Action::DestroySnapshot { uuid, .. } => self.snapshots.retain(|s| s.uuid != *uuid),
                Action::DeleteBackup { remote, key } => {
                    let r = self.remotes.iter_mut().find(|r| &r.id == remote).unwrap();
                    std::sync::Arc::make_mut(&mut r.backups).retain(|b| *b.key() != **key);
                }
            }
        }
    }

    fn snapshot_ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.snapshots.iter().map(|s| s.ctransid).collect();
        v.sort();
        v
    }

    /// (ctransid, parent ctransid) of each backup on a remote.
    fn backup_ids(&self, remote: usize) -> Vec<(u64, Option<u64>)> {
        self.backup_ids_of(&self.remotes[remote])
    }

    fn backup_ids_of(&self, remote: &RemoteInput) -> Vec<(u64, Option<u64>)> {
        let mut v: Vec<_> = remote
            .backups
            .iter()
            .map(|b| (b.ctransid, b.send_parent_uuid.map(|u| u.as_u128() as u64)))
            .collect();
        v.sort();
        v
    }
}

/// The invariants every plan must satisfy (docs/design.md, "The backup tree").
fn check_invariants(plan: &Plan, remotes: &[RemoteInput]) {
    let destroyed: HashSet<&PathBuf> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DestroySnapshot { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    // Safe order: creates, then uploads, then destroys and deletes.
    let rank = |a: &Action| match a {
        Action::CreateSnapshot { .. } => 0,
        Action::UploadBackup { .. } => 1,
        _ => 2,
    };
    assert!(
        plan.actions.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
        "unsafe order: {:?}",
        plan.actions
    );

    for remote in remotes {
        let kept: Vec<&BackupPlan> = plan
            .backups
            .iter()
            .filter(|b| *b.remote == *remote.id && b.action != BackupAction::Delete)
            .collect();
        let by_uuid: HashMap<Uuid, &BackupPlan> = kept.iter().map(|b| (b.uuid(), *b)).collect();
        let timeframes = remote.policy.timeframes().len();
        for b in &kept {
            // Every kept backup's ancestors are kept, and each parent precedes its child.
            let mut chain = 1;
            let mut cur = *b;
            while let Some(p) = cur.send_parent_uuid().filter(|_| !cur.broken_chain) {
                let parent = by_uuid
                    .get(&p)
                    .unwrap_or_else(|| panic!("kept backup {:?} lost its parent {p}", cur.uuid()));
                assert!(
                    parent.ctransid() < cur.ctransid(),
                    "parent must precede its child"
                );
                chain += 1;
                assert!(
                    chain <= timeframes + 1,
                    "restore chain longer than {} for {:?}",
                    timeframes + 1,
                    b.uuid()
                );
                cur = parent;
            }
        }
    }
    for u in plan.uploads() {
        if let Some(p) = &u.send_parent_path {
            assert!(
                !destroyed.contains(p),
                "send parent {p:?} destroyed by the same plan"
            );
        }
    }
    // The newest snapshot is never destroyed.
    if let Some(newest) = plan.snapshots.iter().max_by_key(|s| s.snapshot.ctransid) {
        assert_ne!(newest.action, SnapshotAction::Destroy);
    }
}

/// The retention rule from the policy's spans alone ([`crate::core::coverage`]),
/// checked against what each remote holds after a run at `now`: the first
/// snapshot of every preserved span has its backup, and every other backup is
/// the newest snapshot's or an ancestor of a required one.
fn check_coverage(sim: &Sim, now: DateTime<Utc>) {
    let times: Vec<DateTime<Utc>> = sim.history.iter().map(|(t, _)| *t).collect();
    for r in &sim.remotes {
        let parents: HashMap<u64, Option<u64>> = r
            .backups
            .iter()
            .map(|b| (b.ctransid, b.send_parent_uuid.map(|u| u.as_u128() as u64)))
            .collect();
        let required: Vec<u64> =
            crate::core::coverage::required_items(&r.policy, sim.tz, now, &times)
                .into_iter()
                .map(|i| sim.history[i].1)
                .collect();
        for c in &required {
            assert!(
                parents.contains_key(c),
                "remote {} ({}) at {now} in {}: the backup of snapshot {c} (taken {}) is \
                 its span's first and must be kept; kept {:?}",
                r.id,
                r.policy,
                sim.tz,
                sim.history.iter().find(|(_, x)| x == c).unwrap().0,
                sim.backup_ids_of(r)
            );
        }
        let mut allowed: HashSet<u64> = required.iter().copied().collect();
        allowed.extend(sim.history.last().map(|(_, c)| *c));
        let mut todo: Vec<u64> = allowed.iter().copied().collect();
        while let Some(c) = todo.pop() {
            if let Some(Some(p)) = parents.get(&c) {
                if allowed.insert(*p) {
                    todo.push(*p);
                }
            }
        }
        for c in parents.keys() {
            assert!(
                allowed.contains(c),
                "remote {} ({}) at {now} in {}: backup {c} is kept but is no preserved span's \
                 first, not the newest and no ancestor of one; kept {:?}",
                r.id,
                r.policy,
                sim.tz,
                sim.backup_ids_of(r)
            );
        }
    }
}

#[test]
fn each_new_daily_or_monthly_replaces_the_last_and_chains_to_the_yearly() {
    // `1y 1m 1d`: 01-01T00:00[100], 01-01T06:00[110], 01-02T00:00[120], 02-01T00:00[140].
    let mut sim = Sim::new(Tz::UTC, &["1y 1m 1d"]);
    sim.run(utc("2025-01-01T00:00:00"), Some(100));
    assert_eq!(sim.backup_ids(0), vec![(100, None)]);
    sim.run(utc("2025-01-01T06:00:00"), Some(110));
    assert_eq!(sim.backup_ids(0), vec![(100, None), (110, Some(100))]);
    sim.run(utc("2025-01-02T00:00:00"), Some(120));
    assert_eq!(sim.backup_ids(0), vec![(100, None), (120, Some(100))]);
    assert_eq!(sim.snapshot_ids(), vec![100, 120]);
    sim.run(utc("2025-02-01T00:00:00"), Some(140));
    assert_eq!(sim.backup_ids(0), vec![(100, None), (140, Some(100))]);
    assert_eq!(sim.snapshot_ids(), vec![100, 140]);
}

#[test]
fn hourlies_chain_to_their_daily_and_only_span_representatives_are_kept() {
    // `1y 1m 1d 1h`: 00:00[10], 00:30[20], 01:00[30], 01:20[40], now 01:20.
    let mut sim = Sim::new(Tz::UTC, &["1y 1m 1d 1h"]);
    for (t, c) in [("00:00", 10), ("00:30", 20), ("01:00", 30), ("01:20", 40)] {
        sim.snapshots
            .push(snap(utc(&format!("2025-05-05T{t}:00")), c));
    }
    let plan = sim.run(utc("2025-05-05T01:20:00"), None);
    assert_eq!(
        sim.backup_ids(0),
        vec![(10, None), (30, Some(10)), (40, Some(30))]
    );
    assert_eq!(sim.snapshot_ids(), vec![10, 30, 40]);
    let reasons = |c: u64| {
        plan.backups
            .iter()
            .find(|b| b.ctransid() == c)
            .unwrap()
            .reasons
            .clone()
    };
    assert_eq!(
        reasons(10),
        vec!["2025 yearly", "2025-05 monthly", "2025-05-05 daily"]
    );
    assert_eq!(reasons(30), vec!["2025-05-05T01 hourly"]);
    assert_eq!(reasons(40), vec![KeepReason::MostRecent]);
    assert!(plan
        .backups
        .iter()
        .all(|b| b.ctransid() != 20 || b.action == BackupAction::Delete));
}

#[test]
fn a_week_that_crosses_a_month_boundary_chains_to_its_own_month() {
    // `2m 2w`: 03-01[10], Monday 03-31[20], 04-01[30], 04-02[40].
    let mut sim = Sim::new(Tz::UTC, &["2m 2w"]);
    for (d, c) in [
        ("2025-03-01", 10),
        ("2025-03-31", 20),
        ("2025-04-01", 30),
        ("2025-04-02", 40),
    ] {
        sim.snapshots.push(snap(utc(d), c));
    }
    sim.run(utc("2025-04-02T00:00:00"), None);
    assert_eq!(
        sim.backup_ids(0),
        vec![(10, None), (20, Some(10)), (30, None), (40, Some(20))]
    );
}

#[test]
fn years_begin_at_midnight_in_the_configured_zone() {
    // `2y` in America/Los_Angeles: 2025-01-01T07:30Z is still 2024 there.
    let la: Tz = "America/Los_Angeles".parse().unwrap();
    let mut sim = Sim::new(la, &["2y"]);
    for (t, c) in [
        ("2024-12-15T00:00:00", 1),
        ("2025-01-01T07:30:00", 2),
        ("2025-01-01T08:30:00", 3),
    ] {
        sim.snapshots.push(snap(utc(t), c));
    }
    let plan = sim.run(utc("2025-01-01T09:00:00"), None);
    assert_eq!(sim.backup_ids(0), vec![(1, None), (3, None)]);
    assert_eq!(sim.snapshot_ids(), vec![1, 3]);
    let b1 = plan.backups.iter().find(|b| b.ctransid() == 1).unwrap();
    assert_eq!(b1.reasons, vec!["2024 yearly"]);
    let b3 = plan.backups.iter().find(|b| b.ctransid() == 3).unwrap();
    assert_eq!(b3.reasons, vec!["2025 yearly", "most recent"]);
}

#[test]
fn a_new_year_keeps_last_years_full_as_the_ancestor_of_a_kept_monthly() {
    // `1y 2m`: 2006-01-01[1] full, 2006-12-01[2] relative to 1; at 2007-01-01 a new [3].
    let mut sim = Sim::new(Tz::UTC, &["1y 2m"]);
    sim.run(utc("2006-01-01"), Some(1));
    sim.run(utc("2006-12-01"), Some(2));
    assert_eq!(sim.backup_ids(0), vec![(1, None), (2, Some(1))]);
    let plan = sim.run(utc("2007-01-01"), Some(3));
    assert_eq!(sim.backup_ids(0), vec![(1, None), (2, Some(1)), (3, None)]);
    assert_eq!(sim.snapshot_ids(), vec![2, 3], "snapshot 1 is destroyed");
    let b1 = plan.backups.iter().find(|b| b.ctransid() == 1).unwrap();
    assert_eq!(b1.reasons, vec![KeepReason::Ancestor]);
    let b2 = plan.backups.iter().find(|b| b.ctransid() == 2).unwrap();
    assert_eq!(b2.reasons, vec!["2006-12 monthly"]);
}

#[test]
fn existing_backup_is_reused_with_its_own_parent() {
    let mut sim = Sim::new(Tz::UTC, &["1y 1m 1d 1h"]);
    let s: Vec<Snapshot> = [("00:00", 10), ("01:00", 30), ("01:20", 40)]
        .iter()
        .map(|(t, c)| snap(utc(&format!("2025-05-05T{t}:00")), *c))
        .collect();
    sim.snapshots = s.clone();
    // 40 was sent relative to 10 (e.g. under an older policy); the planner would now pick 30.
    sim.remotes[0].backups = vec![backup(&s[0], None), backup(&s[2], Some(10))].into();
    let plan = sim.run(utc("2025-05-05T01:20:00"), None);
    let uploads: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::UploadBackup { .. }))
        .collect();
    assert_eq!(uploads.len(), 1, "only 30 is new: {uploads:?}");
    assert_eq!(
        sim.backup_ids(0),
        vec![(10, None), (30, Some(10)), (40, Some(10))]
    );
    assert!(plan.warnings.is_empty());
}

#[test]
fn broken_chain_is_kept_and_reported() {
    let mut sim = Sim::new(Tz::UTC, &["1d 24h"]);
    let a = snap(utc("2025-05-05T00:00:00"), 10);
    let b = snap(utc("2025-05-05T03:00:00"), 40);
    sim.snapshots = vec![a.clone(), b.clone()];
    // 40's parent (99) is not on the remote.
    sim.remotes[0].backups = vec![backup(&a, None), backup(&b, Some(99))].into();
    let plan = sim.run(utc("2025-05-05T03:00:00"), None);
    let b40 = plan.backups.iter().find(|x| x.ctransid() == 40).unwrap();
    assert_eq!(b40.action, BackupAction::Keep);
    assert!(b40.broken_chain);
    assert_eq!(plan.warnings.len(), 1);
    assert!(
        plan.warnings[0].contains("b40") && plan.warnings[0].contains("missing"),
        "{}",
        plan.warnings[0]
    );
    assert!(plan
        .actions
        .iter()
        .all(|a| !matches!(a, Action::DeleteBackup { .. })));
}

#[test]
fn all_zero_policy_keeps_only_the_newest_as_full() {
    let mut sim = Sim::new(Tz::UTC, &["0y 0m 0d"]);
    let s1 = snap(utc("2025-01-01"), 1);
    let s2 = snap(utc("2025-01-02"), 2);
    sim.snapshots = vec![s1.clone(), s2.clone()];
    sim.remotes[0].backups = vec![backup(&s1, None), backup(&s2, Some(1))].into();
    sim.run(utc("2025-01-03"), Some(3));
    assert_eq!(sim.backup_ids(0), vec![(3, None)]);
    assert_eq!(sim.snapshot_ids(), vec![3]);
}

#[test]
fn backups_of_other_sources_and_nil_uuids_are_never_touched() {
    let mut sim = Sim::new(Tz::UTC, &["1d"]);
    let mut foreign = backup(&snap(utc("2020-01-01"), 5), None);
    foreign.source_uuid = Uuid::from_u128(0x6000);
    sim.remotes[0].backups = vec![foreign].into();
    let plan = sim.run(utc("2025-01-03"), Some(7));
    assert!(plan
        .actions
        .iter()
        .all(|a| !matches!(a, Action::DeleteBackup { .. })));
    assert!(plan
        .backups
        .iter()
        .all(|b| b.key().as_deref() != Some("b5")));
}

#[test]
fn second_run_with_nothing_new_does_nothing() {
    let mut sim = Sim::new(Tz::UTC, &["1y 3m 30d 24h", "2y 12m"]);
    let mut t = utc("2025-01-01T00:00:00");
    for c in 1..=50u64 {
        t += Duration::hours(7);
        sim.run(t, Some(c * 10));
    }
    let plan = sim.run(t, None);
    assert!(plan.is_noop(), "{:?}", plan.actions);
}

#[test]
fn snapshot_is_kept_when_any_remote_preserves_it() {
    let mut sim = Sim::new(Tz::UTC, &["1d", "3d"]);
    sim.run(utc("2025-01-01"), Some(1));
    sim.run(utc("2025-01-02"), Some(2));
    sim.run(utc("2025-01-03"), Some(3));
    // r0 keeps only day 3; r1 keeps days 1..3.
    assert_eq!(sim.backup_ids(0), vec![(3, None)]);
    assert_eq!(sim.backup_ids(1), vec![(1, None), (2, None), (3, None)]);
    assert_eq!(sim.snapshot_ids(), vec![1, 2, 3]);
    let plan = sim.run(utc("2025-01-04"), Some(4));
    assert_eq!(sim.snapshot_ids(), vec![2, 3, 4]);
    assert!(plan
        .snapshots
        .iter()
        .any(|s| s.snapshot.ctransid == 1 && s.action == SnapshotAction::Destroy));
}

#[test]
fn falls_back_to_a_longer_parent_when_the_snapshot_is_gone() {
    let mut sim = Sim::new(Tz::UTC, &["1y 12m 30d"]);
    let y = snap(utc("2025-01-01"), 1);
    let m = snap(utc("2025-03-01"), 2);
    sim.remotes[0].backups = vec![backup(&y, None), backup(&m, Some(1))].into();
    // The March monthly's snapshot was removed by hand; only the yearly is local.
    sim.snapshots = vec![y.clone()];
    sim.run(utc("2025-03-05"), Some(3));
    assert_eq!(
        sim.backup_ids(0),
        vec![(1, None), (2, Some(1)), (3, Some(1))]
    );
}

#[test]
fn retain_until_and_timeframe_follow_the_longest_preserved_span() {
    let sim = {
        let mut sim = Sim::new(Tz::UTC, &["2y 3m"]);
        sim.run(utc("2025-02-10"), Some(1));
        sim
    };
    let plan = plan(&sim.input(utc("2025-03-01"), Some(2)));
    let b2 = plan.backups.iter().find(|b| b.ctransid() == 2).unwrap();
    assert_eq!(b2.timeframe, Some(Timeframe::Month));
    assert_eq!(b2.retain_until, Some(utc("2025-06-01")));
    let b1 = plan.backups.iter().find(|b| b.ctransid() == 1).unwrap();
    assert_eq!(b1.timeframe, Some(Timeframe::Year));
    assert_eq!(b1.retain_until, Some(utc("2027-01-01")));
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    prop::collection::vec(
        prop_oneof![Just(None), (0u32..4).prop_map(Some), Just(Some(u32::MAX))],
        6,
    )
    .prop_map(|counts| {
        let tfs = [
            Timeframe::Year,
            Timeframe::Quarter,
            Timeframe::Month,
            Timeframe::Week,
            Timeframe::Day,
            Timeframe::Hour,
        ];
        Policy::new(
            tfs.iter()
                .zip(counts)
                .filter_map(|(tf, c)| {
                    c.map(|c| {
                        (
                            *tf,
                            if c == u32::MAX {
                                Count::All
                            } else {
                                Count::N(c)
                            },
                        )
                    })
                })
                .collect(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// Simulated histories: runs at random intervals (minutes to weeks), sometimes
    /// with the source unchanged, on two remotes with random policies. Every plan
    /// passes `check_invariants`, and a repeated run converges to doing nothing.
    #[test]
    fn simulated_histories_keep_the_tree_consistent(
        p0 in arb_policy(),
        p1 in arb_policy(),
        steps in prop::collection::vec((1i64..20_000, any::<bool>()), 1..300),
        zone in prop_oneof![Just("UTC"), Just("America/New_York"), Just("Europe/Berlin"), Just("Australia/Lord_Howe")],
    ) {
        let tz: Tz = zone.parse().unwrap();
        let mut sim = Sim::new(tz, &[]);
        sim.remotes = vec![
            RemoteInput { id: "a".into(), policy: p0, backups: vec![].into(), unreachable: false },
            RemoteInput { id: "b".into(), policy: p1, backups: vec![].into(), unreachable: false },
        ];
        let mut t = utc("2024-10-01T00:00:00");
        let mut ctransid = 100;
        for (minutes, changed) in steps {
            t += Duration::minutes(minutes);
            let new = if changed || sim.snapshots.is_empty() { ctransid += 7; Some(ctransid) } else { None };
            sim.run(t, new);
            check_coverage(&sim, t);
        }
        sim.run(t, None);
        let plan = sim.run(t, None);
        prop_assert!(plan.is_noop(), "not converged: {:?}", plan.actions);
    }

    /// One plan over a long history that was never backed up (a few thousand snapshots).
    #[test]
    fn large_histories_plan_consistently(
        policy in arb_policy(),
        gaps in prop::collection::vec(1i64..600, 500..3000),
    ) {
        let mut sim = Sim::new(Tz::UTC, &[]);
        sim.remotes = vec![RemoteInput { id: "a".into(), policy, backups: vec![].into(), unreachable: false }];
        let mut t = utc("2023-01-01T00:00:00");
        for (i, g) in gaps.iter().enumerate() {
            t += Duration::minutes(*g);
            sim.snapshots.push(snap(t, 10 + i as u64));
            sim.history.push((t, 10 + i as u64));
        }
        sim.run(t, None);
        check_coverage(&sim, t);
    }
}

#[test]
fn healing_reuploads_a_broken_chain_and_deletes_the_broken_object_after() {
    let mut sim = Sim::new(Tz::UTC, &["1y 1m 3d"]);
    sim.run(utc("2025-01-01"), Some(1));
    sim.run(utc("2025-01-05"), Some(2));
    sim.run(utc("2025-01-06"), Some(3));
    // The yearly full object is lost and its snapshot is gone: 2 (relative to 1)
    // and 3 (relative to 2) cannot be restored, and 1 cannot be sent again.
    std::sync::Arc::make_mut(&mut sim.remotes[0].backups).retain(|b| b.ctransid != 1);
    sim.snapshots.retain(|s| s.ctransid != 1);
    let plain = plan(&sim.input(utc("2025-01-06T01:00:00"), None));
    assert!(!plain.warnings.is_empty());
    assert!(
        plain.actions.is_empty(),
        "without healing nothing is re-uploaded: {:?}",
        plain.actions
    );

    let healed = plan_with(
        &sim.input(utc("2025-01-06T01:00:00"), None),
        PlanOptions { heal: true },
    );
    check_invariants(&healed, &sim.remotes);
    let uploads: Vec<_> = healed
        .backups
        .iter()
        .filter(|b| b.action == BackupAction::Upload)
        .map(|b| {
            (
                b.ctransid(),
                b.send_parent_uuid().map(|u| u.as_u128() as u64),
            )
        })
        .collect();
    assert!(
        uploads.contains(&(2, None)),
        "2 becomes the new full: {uploads:?}"
    );
    assert!(
        uploads.contains(&(3, Some(2))),
        "3 is sent again relative to it: {uploads:?}"
    );
    let deletes: Vec<&Action> = healed
        .actions
        .iter()
        .filter(|a| matches!(a, Action::DeleteBackup { .. }))
        .collect();
    // Both old objects were relative to the lost 1; their replacements have other
    // parents (other keys), so the broken ones are deleted after the uploads.
    assert_eq!(
        deletes,
        vec![
            &Action::DeleteBackup {
                remote: "r0".into(),
                key: "b2p1".into()
            },
            &Action::DeleteBackup {
                remote: "r0".into(),
                key: "b3p1".into()
            }
        ]
    );
    let first_delete = healed
        .actions
        .iter()
        .position(|a| matches!(a, Action::DeleteBackup { .. }))
        .unwrap();
    let last_upload = healed
        .actions
        .iter()
        .rposition(|a| matches!(a, Action::UploadBackup { .. }))
        .unwrap();
    assert!(
        last_upload < first_delete,
        "broken objects are deleted only after the uploads"
    );
    sim.apply(&healed, utc("2025-01-06T01:00:00"), None);
    let after = plan(&sim.input(utc("2025-01-06T01:00:00"), None));
    assert!(after.warnings.is_empty(), "{:?}", after.warnings);
    check_invariants(&after, &sim.remotes);
}

/// The reason for the span of `timeframe` that contains `at` (UTC).
fn preserved(timeframe: Timeframe, at: &str) -> KeepReason {
    KeepReason::Preserved(timeframe.span_containing(utc(at), Tz::UTC), Tz::UTC)
}

#[test]
fn keep_reasons_sort_like_the_words_they_show() {
    let mut reasons = vec![
        KeepReason::SendParent,
        KeepReason::MostRecent,
        preserved(Timeframe::Day, "2025-05-05T00:00:00"),
        KeepReason::Ancestor,
        preserved(Timeframe::Year, "2025-01-01T00:00:00"),
        preserved(Timeframe::Month, "2025-05-01T00:00:00"),
    ];
    let mut words: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    reasons.sort();
    words.sort();
    assert_eq!(
        reasons,
        words.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        serde_json::to_value(&reasons).unwrap(),
        serde_json::json!(words)
    );
}

#[test]
fn a_broken_duplicate_never_costs_the_good_copy_its_parent() {
    // `1y 1d`: last year's full 1 and this year's 2 relative to it; 2 has a second
    // object whose parent is missing (a heal whose delete failed, or a
    // btrfs2s3 duplicate). Its key sorts first, so a planner that looked at one
    // copy only would see 2 as broken and let 1 go.
    let s1 = snap(utc("2024-06-01T00:00:00"), 1);
    let s2 = snap(utc("2025-06-01T00:00:00"), 2);
    let good = backup(&s2, Some(1));
    let mut broken = backup(&s2, Some(77));
    broken.key_form = "a-broken-copy".into();
    let input = PlanInput {
        tz: Tz::UTC,
        now: utc("2025-06-01T12:00:00"),
        source_uuid: SOURCE,
        snapshots: vec![s2.clone()],
        remotes: vec![RemoteInput {
            id: "r".into(),
            policy: "1y 1d".parse().unwrap(),
            backups: vec![broken.clone(), good.clone(), backup(&s1, None)].into(),
            unreachable: false,
        }],
    };
    let plan = plan(&input);
    let verdict = |key: &str| {
        plan.backups
            .iter()
            .find(|b| b.key().as_deref() == Some(key))
            .unwrap()
    };
    assert_ne!(
        verdict("b1").action,
        BackupAction::Delete,
        "the good copy's parent is kept"
    );
    assert!(verdict("a-broken-copy").broken_chain);
    assert!(!verdict(&good.key()).broken_chain);
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(!plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::DeleteBackup { key, .. } if key == "b1")));
}

#[test]
fn an_unreachable_remote_gets_nothing_but_keeps_what_its_policy_needs() {
    // Daily snapshots at noon, 2025-01-01 .. 2025-02-09. Remote `live` keeps
    // `1d`; remote `dead` (`1y 3m 30d`) cannot be listed.
    let snapshots: Vec<Snapshot> = (0..40)
        .map(|d| {
            snap(
                utc("2025-01-01T12:00:00") + Duration::days(d),
                10 + d as u64,
            )
        })
        .collect();
    let remote = |id: &str, policy: &str, unreachable| RemoteInput {
        id: id.into(),
        policy: policy.parse().unwrap(),
        backups: Vec::new().into(),
        unreachable,
    };
    let input = PlanInput {
        tz: Tz::UTC,
        now: utc("2025-02-09T13:00:00"),
        source_uuid: SOURCE,
        snapshots: snapshots.clone(),
        remotes: vec![
            remote("live", "1d", false),
            remote("dead", "1y 3m 30d", true),
        ],
    };
    let plan = plan(&input);
    assert!(plan.actions.iter().all(|a| match a {
        Action::UploadBackup(u) => u.remote == "live",
        Action::DeleteBackup { remote, .. } => remote == "live",
        _ => true,
    }));
    assert!(plan.backups.iter().all(|b| &*b.remote == "live"));
    // Kept for `dead`: the last 30 days (Jan 11 .. Feb 9) and the first of
    // January (its yearly and monthly); nothing else.
    let kept: Vec<u64> = plan
        .snapshots
        .iter()
        .filter(|s| s.action == SnapshotAction::Keep)
        .map(|s| s.snapshot.ctransid)
        .collect();
    let mut want: Vec<u64> = vec![10];
    want.extend(20..50);
    assert_eq!(kept, want);
    // Reachable again (with nothing uploaded yet), it would upload exactly those.
    let mut input = input;
    input.remotes[1].unreachable = false;
    let uploads: Vec<u64> = plan_uploads_to(&crate::core::planner::plan(&input), "dead");
    assert_eq!(uploads, want);
}

fn plan_uploads_to(plan: &Plan, remote: &str) -> Vec<u64> {
    let mut v: Vec<u64> = plan
        .uploads()
        .filter(|u| u.remote == remote)
        .map(|u| u.ctransid)
        .collect();
    v.sort();
    v
}

/// Scale (issue 21): 100,000 hourly backups of one source, chained as
/// `*y *m *d *h` chains them, are all kept and nothing is deleted. A bound on
/// correctness only; the speed lives in bench/scale.sh.
#[test]
fn a_hundred_thousand_backups_are_planned_and_all_kept() {
    const N: u64 = 100_000;
    let now = utc("2026-12-03T00:30:00Z");
    let mut first: HashMap<(i32, u32, u32, u8), u64> = HashMap::new();
    let mut backups = Vec::with_capacity(N as usize);
    for i in 1..=N {
        let s = snap(now - Duration::hours((N - i + 1) as i64), i);
        let t = s.time;
        use chrono::Datelike;
        let (y, m, d) = (t.year(), t.month(), t.day());
        let parent = if !first.contains_key(&(y, 0, 0, 0)) {
            None
        } else if !first.contains_key(&(y, m, 0, 1)) {
            Some(first[&(y, 0, 0, 0)])
        } else if !first.contains_key(&(y, m, d, 2)) {
            Some(first[&(y, m, 0, 1)])
        } else {
            Some(first[&(y, m, d, 2)])
        };
        for k in [(y, 0, 0, 0), (y, m, 0, 1), (y, m, d, 2)] {
            first.entry(k).or_insert(i);
        }
        backups.push(backup(&s, parent));
    }
    let input = PlanInput {
        tz: chrono_tz::UTC,
        now,
        source_uuid: SOURCE,
        snapshots: Vec::new(),
        remotes: vec![RemoteInput {
            id: "r".into(),
            policy: "*y *m *d *h".parse().unwrap(),
            backups: backups.into(),
            unreachable: false,
        }],
    };
    let p = plan(&input);
    let kept = p
        .backups
        .iter()
        .filter(|b| b.action == BackupAction::Keep)
        .count();
    assert_eq!(kept, N as usize, "{:?}", p.warnings);
    assert!(!p
        .actions
        .iter()
        .any(|a| matches!(a, Action::DeleteBackup { .. })));
    assert!(p.backups.iter().all(|b| !b.broken_chain));
}
