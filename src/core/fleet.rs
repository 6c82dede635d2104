//! The fleet view: many hosts writing into one bucket, each under its own
//! prefix `<root><host>/` (docs/fleet.md). From one host's listing this
//! groups the keys into sources (by base name) and the rest (foreign keys,
//! reported, never an error), and judges each source: fresh, stale, broken
//! (a backup whose send parent is missing), or empty.
//!
//! Pure: the caller lists (`ops::fleet`) and passes the clock in.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::core::inventory::{ClassTotal, Inventory};
use crate::core::object_key;
use crate::units::short_duration;

/// How many foreign keys a report names as examples.
const FOREIGN_EXAMPLES: usize = 3;

/// One listed object, as the fleet view needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The full key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its storage class, when the listing says (`STANDARD` otherwise).
    pub storage_class: Option<String>,
}

/// Keys under a prefix that are not subvault's layout (not a backup key, or
/// nested deeper than a host's prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Foreign {
    /// How many.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The first few, sorted, to name in a report.
    pub examples: Vec<String>,
}

impl Foreign {
    /// Counts one foreign key.
    pub fn add(&mut self, key: &str, size: u64) {
        self.count += 1;
        self.bytes += size;
        self.examples.push(key.to_string());
        self.examples.sort();
        self.examples.truncate(FOREIGN_EXAMPLES);
    }
}

/// What one host's prefix holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostInventory {
    /// Every object under the host's prefix, backup or not.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Count and bytes per storage class, of every object.
    pub by_storage_class: BTreeMap<String, ClassTotal>,
    /// Backups per source (the key's base name).
    pub sources: BTreeMap<String, Inventory>,
    /// Keys that are not backup keys directly under the host's prefix.
    pub foreign: Foreign,
}

/// The host name of a sub-prefix of the fleet's root: `fleet/host-a/` under
/// `fleet/` is `host-a`.
pub fn host_name<'a>(root: &str, host_prefix: &'a str) -> &'a str {
    let rest = host_prefix.strip_prefix(root).unwrap_or(host_prefix);
    rest.strip_suffix('/').unwrap_or(rest)
}

/// Groups one host's listing (every key under `host_prefix`) into sources
/// and foreign keys.
pub fn inventory(host_prefix: &str, objects: impl IntoIterator<Item = Listed>) -> HostInventory {
    let mut out = HostInventory::default();
    let mut backups: BTreeMap<String, Vec<crate::core::model::Backup>> = BTreeMap::new();
    let mut classes = crate::core::model::Interner::default();
    // One stem string per source, not one per key.
    let mut forms = object_key::KeyForms::default();
    for o in objects {
        out.objects += 1;
        out.bytes += o.size;
        let class = o.storage_class.as_deref().map(|c| classes.intern(c));
        ClassTotal::add(&mut out.by_storage_class, class.as_deref(), o.size);
        match object_key::parse_key(host_prefix, &o.key) {
            Ok(info) => {
                let form = forms.form(&o.key, &info);
                let b = object_key::into_backup(form, &info, Some(o.size), class);
                backups.entry(info.basename).or_default().push(b);
            }
            Err(_) => out.foreign.add(&o.key, o.size),
        }
    }
    out.sources = backups
        .into_iter()
        .map(|(name, list)| (name, Inventory::of(&list)))
        .collect();
    out
}

/// How a source, or a host, stands. Ordered from best to worst, so a host's
/// verdict is the worst of its sources'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fresh and restorable.
    Ok,
    /// A host prefix holding no backup at all, only keys of another layout:
    /// reported, not a failure (someone else's data may share the bucket).
    Foreign,
    /// The newest restorable backup is older than the max age.
    Stale,
    /// No restorable backup.
    Empty,
    /// A backup's chain does not reach a full backup (a send parent is missing).
    Broken,
    /// The host's prefix could not be listed.
    Unreachable,
}

impl Verdict {
    /// True when this verdict makes `status --fleet` exit 1.
    pub fn fails(self) -> bool {
        !matches!(self, Verdict::Ok | Verdict::Foreign)
    }

    /// The word a report shows (upper case for failures).
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Foreign => "foreign",
            Verdict::Stale => "STALE",
            Verdict::Empty => "EMPTY",
            Verdict::Broken => "BROKEN",
            Verdict::Unreachable => "UNREACHABLE",
        }
    }
}

/// One source of one host, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceVerdict {
    /// The source (the keys' base name).
    pub source: String,
    /// The judgement.
    pub health: Verdict,
    /// Age of the newest restorable backup, in seconds.
    pub newest_age_seconds: Option<i64>,
    /// One line per problem.
    pub problems: Vec<String>,
    /// What the host's prefix holds of the source.
    pub inventory: Inventory,
}

/// Judges one source: broken over empty over stale over ok.
pub fn judge_source(
    source: &str,
    inv: Inventory,
    max_age: Duration,
    now: DateTime<Utc>,
) -> SourceVerdict {
    let age = inv.newest.as_ref().map(|n| (now - n.time).num_seconds());
    let mut problems = Vec::new();
    let mut health = Verdict::Ok;
    let limit = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    if let Some(age) = age.filter(|a| *a > limit) {
        health = Verdict::Stale;
        problems.push(format!(
            "the newest restorable backup is {} old, more than the max age {}",
            short_duration(age),
            short_duration(limit)
        ));
    }
    if inv.newest.is_none() {
        health = Verdict::Empty;
        problems.push("no restorable backup".to_string());
    }
    if let Some(first) = inv.broken.first() {
        health = Verdict::Broken;
        problems.push(format!(
            "{} backup(s) whose chain is broken (a send parent's object is missing), e.g. {}; \
             `subvault run --heal` on that host uploads them again where its snapshots are kept",
            inv.broken.len(),
            first.key
        ));
    }
    SourceVerdict {
        source: source.to_string(),
        health,
        newest_age_seconds: age,
        problems,
        inventory: inv,
    }
}

/// A host's verdict: the worst of its sources'; `Foreign` when it holds no
/// backup but keys of another layout, `Empty` when it holds nothing.
pub fn host_verdict(sources: &[SourceVerdict], foreign: &Foreign) -> Verdict {
    match sources.iter().map(|s| s.health).max() {
        Some(v) => v,
        None if foreign.count > 0 => Verdict::Foreign,
        None => Verdict::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::object_key::{format_key, KeyInfo};
    use uuid::Uuid;

    fn now() -> DateTime<Utc> {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    fn key(prefix: &str, base: &str, n: u128, parent: Option<u128>, hours_ago: i64) -> String {
        format_key(
            prefix,
            &KeyInfo {
                basename: base.into(),
                time: (now() - chrono::Duration::hours(hours_ago)).fixed_offset(),
                ctransid: n as u64,
                uuid: Uuid::from_u128(n),
                send_parent_uuid: parent.map(Uuid::from_u128),
                source_uuid: Uuid::from_u128(1000),
                codec: None,
            },
        )
    }

    fn listed(key: String, size: u64, class: Option<&str>) -> Listed {
        Listed {
            key,
            size,
            storage_class: class.map(str::to_string),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn host_names_come_from_the_sub_prefix() {
        assert_eq!(host_name("fleet/", "fleet/host-a/"), "host-a");
        assert_eq!(host_name("", "web1/"), "web1");
    }

    #[test]
    fn keys_group_into_sources_and_foreign_keys() {
        let p = "fleet/h/";
        let inv = inventory(
            p,
            [
                listed(key(p, "home", 1, None, 30), 100, Some("GLACIER")),
                listed(key(p, "home", 2, Some(1), 2), 10, None),
                listed(key(p, "db", 3, None, 1), 50, None),
                listed("fleet/h/notes.txt".into(), 7, None),
                listed(
                    format!("fleet/h/old/{}", &key(p, "home", 4, None, 1)[p.len()..]),
                    5,
                    None,
                ),
            ],
        );
        assert_eq!((inv.objects, inv.bytes), (5, 172));
        assert_eq!(inv.by_storage_class["GLACIER"].bytes, 100);
        assert_eq!(inv.by_storage_class["STANDARD"].count, 4);
        assert_eq!(inv.sources.keys().collect::<Vec<_>>(), vec!["db", "home"]);
        assert_eq!(inv.sources["home"].backups, 2);
        assert_eq!(inv.sources["home"].bytes, 110);
        assert_eq!(inv.foreign.count, 2, "a nested backup key is foreign too");
        assert_eq!(inv.foreign.bytes, 12);
        assert_eq!(inv.foreign.examples[0], "fleet/h/notes.txt");
    }

    #[test]
    fn sources_are_judged_fresh_stale_broken_and_empty() {
        let p = "h/";
        let judge = |objects: Vec<Listed>| {
            let mut inv = inventory(p, objects);
            let (name, src) = inv.sources.pop_first().unwrap();
            judge_source(&name, src, DAY, now())
        };
        let fresh = judge(vec![listed(key(p, "s", 1, None, 2), 1, None)]);
        assert_eq!(fresh.health, Verdict::Ok);
        assert_eq!(fresh.newest_age_seconds, Some(7200));
        assert!(fresh.problems.is_empty());

        let stale = judge(vec![listed(key(p, "s", 1, None, 49), 1, None)]);
        assert_eq!(stale.health, Verdict::Stale);
        assert!(
            stale.problems[0].contains("2d 1h old"),
            "{:?}",
            stale.problems
        );

        // The newest is an incremental whose parent is gone: broken, and the
        // newest restorable backup is the older full.
        let broken = judge(vec![
            listed(key(p, "s", 1, None, 20), 1, None),
            listed(key(p, "s", 2, Some(9), 1), 1, None),
        ]);
        assert_eq!(broken.health, Verdict::Broken);
        assert_eq!(broken.newest_age_seconds, Some(20 * 3600));
        assert!(broken.problems[0].contains(".uuid00000000-0000-0000-0000-000000000002"));

        let empty = judge(vec![listed(key(p, "s", 2, Some(9), 1), 1, None)]);
        assert_eq!(empty.health, Verdict::Broken, "broken wins over empty");
        assert!(empty.problems.iter().any(|l| l == "no restorable backup"));
    }

    #[test]
    fn a_host_is_its_worst_source_and_foreign_only_hosts_do_not_fail() {
        let v = |health| SourceVerdict {
            source: "s".into(),
            health,
            newest_age_seconds: None,
            problems: vec![],
            inventory: Inventory::default(),
        };
        let none = Foreign::default();
        assert_eq!(
            host_verdict(&[v(Verdict::Ok), v(Verdict::Stale)], &none),
            Verdict::Stale
        );
        assert_eq!(
            host_verdict(&[v(Verdict::Broken), v(Verdict::Stale)], &none),
            Verdict::Broken
        );
        let mut foreign = Foreign::default();
        foreign.add("h/x", 1);
        assert_eq!(host_verdict(&[], &foreign), Verdict::Foreign);
        assert!(!Verdict::Foreign.fails());
        assert!(Verdict::Stale.fails());
        assert_eq!(host_verdict(&[], &none), Verdict::Empty);
    }

    #[test]
    fn foreign_examples_stay_few_and_sorted() {
        let mut f = Foreign::default();
        for k in ["e", "d", "c", "b", "a"] {
            f.add(k, 2);
        }
        assert_eq!((f.count, f.bytes), (5, 10));
        assert_eq!(f.examples, vec!["a", "b", "c"]);
    }
}
