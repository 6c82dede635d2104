//! The executor's rules, without root: a fake [`Subvolumes`] (snapshots in
//! memory, synthetic send streams) and a local store in a temp dir.

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
    let source = &config.sources[0];
    let remotes = remotes::open_for_sources(config, &[source]).await;
    run_source(config, source, &remotes, now, false, subvols, &NoProgress).await
}

async fn keys(config: &Config) -> Vec<String> {
    let remotes = remotes::open_for_sources(config, &[&config.sources[0]]).await;
    let open = remotes["disk"].as_ref().unwrap();
    let mut keys: Vec<String> = open.backups.iter().map(|b| b.key.clone()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_failed_upload_destroys_and_deletes_nothing() {
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path(), "2d");
    let subvols = FakeSubvols::new(Vec::new());
    for day in 1..=2 {
        subvols.write();
        run(&config, &subvols, at(day)).await.unwrap();
    }
    let keys_before = keys(&config).await;
    let snapshots_before = subvols.snapshot_names();
    assert_eq!(keys_before.len(), 2, "{keys_before:?}");

    // Day 4: `2d` keeps days 3 and 4, so a successful run would prune days 1
    // and 2; the new snapshot's send fails, so nothing may be pruned.
    subvols.write();
    let failing = config.sources[0]
        .snapshots
        .join(crate::sys::btrfs::snapshot_name("data", at(4)));
    let subvols = FakeSubvols {
        failing_sends: vec![failing],
        ..subvols
    };
    let err = run(&config, &subvols, at(4)).await.unwrap_err();
    assert!(
        crate::errors::one_line(&err).contains("the send broke off (injected)"),
        "{err:#}"
    );
    assert!(subvols.destroyed.lock().unwrap().is_empty());
    assert_eq!(
        keys(&config).await,
        keys_before,
        "no object deleted, none added"
    );
    assert_eq!(subvols.snapshot_names().len(), snapshots_before.len() + 1);

    // The next run (the send works again) uploads and prunes.
    let subvols = FakeSubvols {
        failing_sends: Vec::new(),
        ..subvols
    };
    let report = run(&config, &subvols, at(4)).await.unwrap();
    assert_eq!((report.uploaded, report.deleted), (1, 2), "{report:?}");
    assert_eq!(subvols.destroyed.lock().unwrap().len(), 2);
    assert_eq!(keys(&config).await.len(), 1);
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
    }];
    let mut report = SourceReport::default();
    prune::prune(
        &config.sources[0],
        &plan,
        &remotes,
        &uploaded,
        &subvols,
        &mut report,
    )
    .await
    .unwrap();
    assert_eq!(report.deleted, 0);
    assert_eq!(keys(&config).await, vec![key.clone()]);

    // The same plan without that upload deletes it: the guard is what kept it.
    prune::prune(
        &config.sources[0],
        &plan,
        &remotes,
        &[],
        &subvols,
        &mut report,
    )
    .await
    .unwrap();
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
    let err = run(&config, &subvols, at(1)).await.unwrap_err();
    let line = crate::errors::one_line(&err);
    assert!(line.contains("changed since this run listed it"), "{line}");
    assert!(keys(&config).await.is_empty());
    let subvols = FakeSubvols {
        deduped: Vec::new(),
        ..subvols
    };
    let report = run(&config, &subvols, at(1)).await.unwrap();
    assert_eq!(report.uploaded, 1, "{report:?}");
}
