//! The executor's rules, without root: a fake [`Subvolumes`] (snapshots in
//! memory, synthetic send streams) and a local store in a temp dir.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll};

use anyhow::Result;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, ReadBuf};
use uuid::Uuid;

use super::*;
use crate::config::Config;
use crate::core::model::Snapshot;
use crate::core::planner::{Action, Plan};
use crate::ops::remotes;
use crate::ops::subvols::SendSource;
use crate::progress::NoProgress;
use crate::remote::ObjectStore;
use crate::stream::send_format::synthetic;
use crate::sys::btrfs::SubvolInfo;

const SOURCE: Uuid = Uuid::from_u128(0x50);

/// Snapshots in memory; every send is a small valid stream, and the sends of
/// the snapshots listed in `failing_sends` fail at their end (as a btrfs send
/// that broke off part way does).
struct FakeSubvols {
    ctransid: Mutex<u64>,
    snapshots: Mutex<Vec<Snapshot>>,
    failing_sends: Vec<PathBuf>,
    /// Snapshots whose ctransid moved on since they were listed (deduped).
    deduped: Vec<PathBuf>,
    destroyed: Mutex<Vec<PathBuf>>,
}

impl FakeSubvols {
    fn new(failing_sends: Vec<PathBuf>) -> Self {
        FakeSubvols {
            ctransid: Mutex::new(100),
            snapshots: Mutex::new(Vec::new()),
            failing_sends,
            deduped: Vec::new(),
            destroyed: Mutex::new(Vec::new()),
        }
    }

    /// A change to the source: the next run takes a snapshot.
    fn write(&self) {
        *self.ctransid.lock().unwrap() += 1;
    }

    fn snapshot_names(&self) -> Vec<String> {
        let snaps = self.snapshots.lock().unwrap();
        snaps
            .iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

impl Subvolumes for FakeSubvols {
    type SourceGuard = ();

    fn lock_source(&self, _uuid: Uuid, _name: &str) -> Result<()> {
        Ok(())
    }

    fn read_source(&self, _source: &Source, _flush: bool) -> Result<SourceState> {
        let ctransid = *self.ctransid.lock().unwrap();
        let t = DateTime::<Utc>::UNIX_EPOCH;
        Ok(SourceState {
            info: SubvolInfo {
                id: 256,
                name: "data".into(),
                uuid: SOURCE,
                parent_uuid: None,
                received_uuid: None,
                generation: ctransid,
                ctransid,
                otransid: 1,
                ctime: t,
                otime: t,
                readonly: false,
            },
            snapshots: self.snapshots.lock().unwrap().clone(),
        })
    }

    fn take_snapshot(
        &self,
        _source: &Source,
        path: &Path,
    ) -> impl Future<Output = Result<()>> + Send {
        let ctransid = *self.ctransid.lock().unwrap();
        let mut snaps = self.snapshots.lock().unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let time = crate::sys::btrfs::parse_snapshot_time("data", &name).expect("a run's name");
        let uuid = Uuid::from_u128(0x1000 + snaps.len() as u128);
        snaps.push(Snapshot {
            path: path.to_path_buf(),
            uuid,
            parent_uuid: SOURCE,
            ctransid,
            time,
            planned: false,
        });
        std::future::ready(Ok(()))
    }

    async fn send(
        &self,
        snapshot: &Path,
        _uuid: Uuid,
        _parent: Option<(&Path, Uuid)>,
    ) -> Result<Box<dyn SendSource>> {
        let listed = self.snapshots.lock().unwrap();
        let ctransid = listed.iter().find(|s| s.path == snapshot).unwrap().ctransid;
        let moved = self.deduped.iter().any(|p| p == snapshot);
        Ok(Box::new(FakeSend {
            data: Cursor::new(synthetic::stream(&[b"some file data"])),
            fails: self.failing_sends.iter().any(|p| p == snapshot),
            ctransid: ctransid + u64::from(moved),
        }))
    }

    fn destroy_snapshot(&self, path: &Path) -> Result<()> {
        self.snapshots.lock().unwrap().retain(|s| s.path != path);
        self.destroyed.lock().unwrap().push(path.to_path_buf());
        Ok(())
    }
}

struct FakeSend {
    data: Cursor<Vec<u8>>,
    fails: bool,
    ctransid: u64,
}

impl AsyncRead for FakeSend {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

impl SendSource for FakeSend {
    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let fails = self.fails;
        Box::pin(async move {
            if fails {
                Err("the send broke off (injected)".into())
            } else {
                Ok(())
            }
        })
    }

    fn ctransid(&self) -> Option<u64> {
        Some(self.ctransid)
    }
}

/// A config with one source uploading to a local remote in `store`.
fn config(store: &Path, preserve: &str) -> Config {
    let text = format!(
        "timezone: UTC\n\
         sources:\n\
         \x20 - path: /nonexistent/data\n\
         \x20   snapshots: /nonexistent/snapshots\n\
         \x20   upload_to_remotes:\n\
         \x20     - id: disk\n\
         \x20       preserve: {preserve}\n\
         remotes:\n\
         \x20 - id: disk\n\
         \x20   local:\n\
         \x20     path: {}\n",
        store.display()
    );
    Config::from_str_at(&text, Path::new("test.yaml")).expect("a valid config")
}

fn at(day: u32) -> DateTime<Utc> {
    format!("2026-01-{day:02}T12:00:00Z").parse().unwrap()
}

/// One run at `now`, as `subvault run` does it.
async fn run(config: &Config, subvols: &FakeSubvols, now: DateTime<Utc>) -> Result<SourceReport> {
    run_with(config, subvols, now, RunOptions::default()).await
}

async fn run_with(
    config: &Config,
    subvols: &FakeSubvols,
    now: DateTime<Utc>,
    opts: RunOptions,
) -> Result<SourceReport> {
    let source = &config.sources[0];
    let remotes = remotes::open_for_sources(config, &[source]).await;
    run_source(config, source, &remotes, now, opts, subvols, &NoProgress).await
}

async fn keys(config: &Config) -> Vec<String> {
    let remotes = remotes::open_for_sources(config, &[&config.sources[0]]).await;
    let open = remotes["disk"].as_ref().unwrap();
    let mut keys: Vec<String> = open.backups.iter().map(|b| b.key().to_string()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_failed_upload_deletes_nothing_there_and_keeps_what_its_retry_needs() {
    let store = tempfile::tempdir().unwrap();
    // `1m 2d`: the month's first snapshot is a full, each daily is sent
    // relative to it.
    let config = config(store.path(), "1m 2d");
    let subvols = FakeSubvols::new(Vec::new());
    for day in 1..=2 {
        subvols.write();
        run(&config, &subvols, at(day)).await.unwrap();
    }
    let keys_before = keys(&config).await;
    assert_eq!(keys_before.len(), 2, "{keys_before:?}");
    let name = |day| crate::sys::btrfs::snapshot_name("data", at(day));

    // Day 4: `2d` keeps days 3 and 4, so a successful run would delete day 2's
    // backup. The new snapshot's send fails: nothing may be deleted on that
    // remote, and the snapshot the retry sends relative to (day 1) stays.
    subvols.write();
    let subvols = FakeSubvols {
        failing_sends: vec![config.sources[0].snapshots.join(name(4))],
        ..subvols
    };
    let report = run(&config, &subvols, at(4)).await.unwrap();
    assert!(
        report.problems.len() == 1 && report.problems[0].contains("the send broke off (injected)"),
        "{report:?}"
    );
    assert_eq!(
        keys(&config).await,
        keys_before,
        "no object deleted, none added"
    );
    assert_eq!(
        subvols.snapshot_names(),
        [name(1), name(4)],
        "day 2 is not needed"
    );

    // The next run (the send works again) uploads and prunes.
    let subvols = FakeSubvols {
        failing_sends: Vec::new(),
        ..subvols
    };
    let report = run(&config, &subvols, at(4)).await.unwrap();
    assert_eq!((report.uploaded, report.deleted), (1, 1), "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(keys(&config).await.len(), 2);
}

#[tokio::test]
async fn a_prune_over_the_budget_is_held_back_unless_allowed() {
    let store = tempfile::tempdir().unwrap();
    let subvols = FakeSubvols::new(Vec::new());
    let long = config(store.path(), "30d");
    for day in 1..=10 {
        subvols.write();
        run(&long, &subvols, at(day)).await.unwrap();
    }
    assert_eq!(keys(&long).await.len(), 10);
    // A new policy keeps one day: this run would delete 9 of 10 backups and
    // destroy 9 of 10 snapshots, more than half.
    let short = config(store.path(), "1d");
    let report = run(&short, &subvols, at(10)).await.unwrap();
    assert_eq!((report.deleted, report.destroyed), (0, 0), "{report:?}");
    assert_eq!(report.problems.len(), 2, "{report:?}");
    assert!(report
        .problems
        .iter()
        .all(|p| p.contains("--allow-large-prune")));
    assert!(report.problems[0].contains("destroy 9 of the 10 snapshots"));
    assert!(report.problems[1].contains("delete 9 of the 10 backups"));
    assert_eq!(keys(&short).await.len(), 10);
    let allowed = RunOptions {
        allow_large_prune: true,
        ..RunOptions::default()
    };
    let report = run_with(&short, &subvols, at(10), allowed).await.unwrap();
    assert_eq!((report.deleted, report.destroyed), (9, 9), "{report:?}");
    assert!(report.problems.is_empty());
}

#[tokio::test]
async fn a_key_uploaded_by_this_run_is_never_deleted() {
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path(), "2d");
    let subvols = FakeSubvols::new(Vec::new());
    subvols.write();
    run(&config, &subvols, at(1)).await.unwrap();
    let [key] = keys(&config).await.try_into().unwrap();

    // A plan that deletes the object this run wrote (an upload that replaced a
    // broken object in place, under the same key) must leave it alone.
    let plan = Plan {
        snapshots: Vec::new(),
        backups: Vec::new(),
        actions: vec![Action::DeleteBackup {
            remote: "disk".into(),
            key: key.clone(),
        }],
        warnings: Vec::new(),
    };
    let remotes = remotes::open_for_sources(&config, &[&config.sources[0]]).await;
    let uploaded = [Uploaded {
        remote: "disk".into(),
        key: key.clone(),
        stored_bytes: 1,
        raw_bytes: 1,
        seconds: 0.1,
        storage_class: "STANDARD".into(),
        full: true,
        resumed_bytes: 0,
    }];
    let no_prune = BTreeSet::new();
    let prune = |uploaded| prune::Prune {
        source: &config.sources[0],
        remotes: &remotes,
        budget: None,
        no_prune: &no_prune,
        uploaded,
        snapshots_existing: 1,
    };
    let mut report = SourceReport::default();
    prune(&uploaded)
        .run(&plan, &plan, &subvols, &mut report)
        .await;
    assert_eq!(report.deleted, 0);
    assert_eq!(keys(&config).await, vec![key.clone()]);

    // The same plan without that upload deletes it: the guard is what kept it.
    prune(&[]).run(&plan, &plan, &subvols, &mut report).await;
    assert_eq!(report.deleted, 1);
    assert!(keys(&config).await.is_empty());
    let open = remotes["disk"].as_ref().unwrap();
    assert!(open.store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_run_with_nothing_new_does_nothing() {
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path(), "1y 3m 30d");
    let subvols = FakeSubvols::new(Vec::new());
    subvols.write();
    let first = run(&config, &subvols, at(1)).await.unwrap();
    assert!(first.created.is_some());
    assert_eq!(first.uploaded, 1);
    let second = run(&config, &subvols, at(2)).await.unwrap();
    assert_eq!(
        (
            second.created,
            second.uploaded,
            second.deleted,
            second.destroyed
        ),
        (None, 0, 0, 0)
    );
    assert_eq!(keys(&config).await.len(), 1);
}

#[tokio::test]
async fn a_run_at_a_time_before_the_newest_snapshot_changes_nothing() {
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path(), "1y 3m 30d");
    let subvols = FakeSubvols::new(Vec::new());
    for day in 1..=5 {
        subvols.write();
        run(&config, &subvols, at(day)).await.unwrap();
    }
    let (keys_before, snaps_before) = (keys(&config).await, subvols.snapshot_names());
    subvols.write();
    let a_year_early: DateTime<Utc> = "2025-01-03T12:00:00Z".parse().unwrap();
    let err = run(&config, &subvols, a_year_early).await.unwrap_err();
    let line = crate::errors::one_line(&err);
    assert!(
        line.contains("refusing to run at 2025-01-03 12:00:00"),
        "{line}"
    );
    assert!(line.contains("2026-01-05 12:00:00"), "{line}");
    assert_eq!(keys(&config).await, keys_before);
    assert_eq!(
        subvols.snapshot_names(),
        snaps_before,
        "no snapshot taken or destroyed"
    );
}

#[tokio::test]
async fn backups_another_machine_writes_stop_the_prune_of_that_remote() {
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path(), "1d");
    let subvols = FakeSubvols::new(Vec::new());
    subvols.write();
    run(&config, &subvols, at(1)).await.unwrap();
    // A clone of this machine wrote a backup of the same source (same source
    // uuid, a snapshot uuid this host does not have) after our newest snapshot.
    let planted = crate::core::object_key::format_key(
        "",
        &crate::core::object_key::KeyInfo {
            basename: "data".into(),
            time: at(1).fixed_offset() + chrono::Duration::hours(1),
            ctransid: 500,
            uuid: Uuid::from_u128(0xc10e),
            send_parent_uuid: None,
            source_uuid: SOURCE,
            codec: Some(crate::core::model::Codec::Zstd),
        },
    );
    std::fs::write(store.path().join(&planted), b"theirs").unwrap();
    let ours = keys(&config).await;
    // Day 2: `1d` would delete day 1's backup (and the planted one).
    subvols.write();
    let report = run(&config, &subvols, at(2)).await.unwrap();
    assert_eq!((report.uploaded, report.deleted), (1, 0), "{report:?}");
    assert!(
        report.problems.len() == 1 && report.problems[0].contains("another machine"),
        "{report:?}"
    );
    let now = keys(&config).await;
    assert!(ours.iter().all(|k| now.contains(k)) && now.contains(&planted));
}

#[tokio::test]
async fn unfinished_uploads_older_than_the_limit_are_aborted() {
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path(), "1d");
    let subvols = FakeSubvols::new(Vec::new());
    let old = store.path().join(".tmp-0000000000000001");
    let fresh = store.path().join(".tmp-0000000000000002");
    for p in [&old, &fresh] {
        std::fs::write(p, b"part of an upload").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(two_days_ago))
        .unwrap();
    subvols.write();
    let source = &config.sources[0];
    let outcome = run_sources(
        &config,
        &[source],
        at(1),
        RunOptions::default(),
        &subvols,
        &NoProgress,
        |r| assert!(r.result.is_ok()),
    )
    .await;
    assert_eq!(outcome.failed, 0);
    assert!(!old.exists(), "a day-old temp file is removed");
    assert!(
        fresh.exists(),
        "an upload that may still be under way is left alone"
    );
}

#[tokio::test]
async fn a_snapshot_deduped_since_it_was_listed_is_left_for_the_next_run() {
    // Its stream would carry another ctransid than the key the run planned,
    // and restore refuses such an object: nothing is uploaded.
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path(), "2d");
    let subvols = FakeSubvols::new(Vec::new());
    subvols.write();
    let snapshot = config.sources[0]
        .snapshots
        .join(crate::sys::btrfs::snapshot_name("data", at(1)));
    let subvols = FakeSubvols {
        deduped: vec![snapshot],
        ..subvols
    };
    let report = run(&config, &subvols, at(1)).await.unwrap();
    assert!(
        report.problems.len() == 1
            && report.problems[0].contains("changed since this run listed it"),
        "{report:?}"
    );
    assert!(keys(&config).await.is_empty());
    let subvols = FakeSubvols {
        deduped: Vec::new(),
        ..subvols
    };
    let report = run(&config, &subvols, at(1)).await.unwrap();
    assert_eq!(report.uploaded, 1, "{report:?}");
}
