//! End-to-end tests of `subvault restore`, `list` and `verify` on real btrfs and a
//! real S3 server (moto on 127.0.0.1, started by integration/with-services.sh).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use crate::common::{
    append_line, block_on, get_object, new_bucket, put_object, run, s3_client, s3_endpoint,
    set_xattr, subvault, tool, tree_hash, TestFs,
};
use crate::common::{expect_success as ok, output_text as text};
use chrono::{DateTime, Duration, Utc};
use subvault::core::object_key::parse_key;

fn list_keys(bucket: &str) -> Vec<String> {
    crate::common::bucket_objects(bucket).into_keys().collect()
}

fn delete_object(bucket: &str, key: &str) {
    let (bucket, key) = (bucket.to_string(), key.to_string());
    block_on(async move {
        s3_client()
            .delete_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
    })
}

/// A source subvolume on a fresh btrfs, its snapshot dir and a config file.
struct Setup {
    _fs: TestFs,
    source: PathBuf,
    snapshots: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(size_mib: u64, bucket: &str, policy: &str) -> Setup {
    let fs = TestFs::new(size_mib);
    let source = fs.subvolume("data");
    let snapshots = fs.path().join("snapshots");
    fs::create_dir(&snapshots).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "timezone: Europe/Berlin\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n      - id: main\n        preserve: {policy}\nremotes:\n  - id: main\n    s3:\n      bucket: {bucket}\n      endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n",
        source.display(),
        snapshots.display(),
        s3_endpoint()
    );
    fs::write(&config, yaml).unwrap();
    Setup {
        _fs: fs,
        source,
        snapshots,
        config,
        _dir: dir,
    }
}

/// The path in restore's final "restored PATH (...)" line.
fn restored_path(out: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("restored "))
        .unwrap_or_else(|| panic!("no result line: {}", text(out)));
    PathBuf::from(line.split(" (").next().unwrap())
}

/// Every kind of thing a backup must reproduce.
fn build_source(src: &Path) {
    fs::write(src.join("plain"), "plain text\n").unwrap();
    fs::write(src.join("empty"), "").unwrap();
    fs::create_dir_all(src.join("dir/sub/deeper")).unwrap();
    fs::create_dir(src.join("empty-dir")).unwrap();
    fs::write(src.join("dir/sub/secret"), "s3cr3t").unwrap();
    fs::set_permissions(
        src.join("dir/sub/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(src.join("dir/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("dir/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("dir/sub"), fs::Permissions::from_mode(0o2770)).unwrap();
    std::os::unix::fs::chown(src.join("dir/sub/secret"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(src.join("dir"), Some(42), Some(43)).unwrap();
    std::os::unix::fs::symlink("../plain", src.join("dir/link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    std::os::unix::fs::lchown(src.join("dangling"), Some(7), Some(8)).unwrap();
    fs::hard_link(src.join("plain"), src.join("dir/hardlink")).unwrap();
    set_xattr(&src.join("plain"), "user.color", b"blue");
    set_xattr(&src.join("dir"), "user.empty", b"");
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(16 << 20).unwrap();
    drop(f);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(src.join("sparse"))
        .unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
    f.write_all(b"an island in the hole").unwrap();
    let big: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(src.join("big"), big).unwrap();
}

/// Changes the source a little, deterministically from `n`.
fn mutate(src: &Path, n: u64) {
    append_line(&src.join("log.txt"), &format!("step {n}"));
    let body: Vec<u8> = (0..(2000 + n * 17) as usize)
        .map(|i| ((i as u64 * 7 + n) % 251) as u8)
        .collect();
    fs::write(src.join(format!("dir/sub/deeper/f{}", n % 5)), body).unwrap();
    if n % 4 == 0 {
        let _ = fs::remove_file(src.join(format!("dir/sub/deeper/f{}", (n + 2) % 5)));
    }
    if n % 6 == 0 {
        fs::hard_link(src.join("log.txt"), src.join(format!("log-link-{n}"))).unwrap();
    }
}

fn newest_snapshot(dir: &Path) -> String {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .max()
        .unwrap()
}

/// Subvolume names (all entries) in a directory.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn snapshot_name_of(key: &str) -> String {
    let info = parse_key("", key).unwrap();
    format!(
        "data.{}",
        info.time.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// Number of objects in the chain of `key` (1 for a full).
fn depth(key: &str, keys: &[String]) -> usize {
    let mut n = 1;
    let mut info = parse_key("", key).unwrap();
    while let Some(p) = info.send_parent_uuid {
        let pk = keys
            .iter()
            .find(|k| parse_key("", k).unwrap().uuid == p)
            .expect("parent");
        info = parse_key("", pk).unwrap();
        n += 1;
    }
    n
}

/// The 400-day history that the restore tests below share: built once (it takes
/// minutes), used by each of them, and dropped (unmounted) when the last one
/// is done, passed or failed.
struct History {
    s: Setup,
    /// Every object in the bucket.
    keys: Vec<String>,
    /// Snapshot name -> tree hash of the snapshot when it was taken.
    hashes: BTreeMap<String, String>,
    /// The end of the simulated time.
    end: DateTime<Utc>,
}

impl History {
    /// The keys whose chain is `depth` objects long (1 = full, 2 = monthly, ...).
    fn at_depth(&self, depth_: usize) -> Vec<&String> {
        self.keys
            .iter()
            .filter(|k| depth(k, &self.keys) == depth_)
            .collect()
    }

    /// Snapshot times of every backup, oldest first.
    fn times(&self) -> Vec<DateTime<Utc>> {
        let mut times: Vec<DateTime<Utc>> = self
            .keys
            .iter()
            .map(|k| parse_key("", k).unwrap().time.with_timezone(&Utc))
            .collect();
        times.sort();
        times
    }

    /// Restores with `args` into `dir` and checks the result is exactly the
    /// snapshot `want` (content, metadata, sparseness, read-only).
    fn restore_exactly(&self, dir: &Path, want: &str, args: &[String]) {
        fs::create_dir(dir).unwrap();
        let mut a = vec!["restore", "--to", dir.to_str().unwrap()];
        a.extend(args.iter().map(String::as_str));
        let out = ok(subvault(&self.s.config, &a));
        let got = restored_path(&out);
        assert_eq!(
            got.file_name().unwrap().to_string_lossy(),
            want,
            "{args:?}: {}",
            text(&out)
        );
        assert_eq!(
            &tree_hash(&got),
            self.hashes.get(want).expect("hash recorded"),
            "restore {args:?} differs from {want}"
        );
        let sparse = fs::metadata(got.join("sparse")).unwrap();
        assert!(
            sparse.blocks() * 512 < 1 << 20,
            "the sparse file was restored dense"
        );
        assert!(subvault::sys::btrfs::subvol_info(&got).unwrap().readonly);
    }
}

/// How many tests use the shared history (each holds a [`HistoryUse`]). When a
/// test filter leaves some of them out, the history stays mounted until the
/// process ends and `integration/with-services.sh` cleans up what it left.
const HISTORY_USERS: usize = 5;

struct SharedHistory {
    history: Option<Arc<History>>,
    /// Tests that have not yet finished with it.
    users_left: usize,
}

static HISTORY: Mutex<SharedHistory> = Mutex::new(SharedHistory {
    history: None,
    users_left: HISTORY_USERS,
});

/// One test's use of the shared history; the last use to end drops it.
struct HistoryUse(Arc<History>);

impl std::ops::Deref for HistoryUse {
    type Target = History;
    fn deref(&self) -> &History {
        &self.0
    }
}

impl Drop for HistoryUse {
    fn drop(&mut self) {
        let mut shared = HISTORY.lock().unwrap_or_else(|e| e.into_inner());
        shared.users_left = shared.users_left.saturating_sub(1);
        if shared.users_left == 0 {
            // The mounts go with the last reference (this guard's, just after).
            shared.history = None;
        }
    }
}

/// The shared history, built by the first test that asks (the others wait).
fn history() -> HistoryUse {
    let mut shared = HISTORY.lock().unwrap_or_else(|e| e.into_inner());
    let h = shared
        .history
        .get_or_insert_with(|| Arc::new(build_history()))
        .clone();
    HistoryUse(h)
}

/// The 400-day history of the run tests: 2025-06-01 .. 2026-07-05, a run
/// every day at 08:00 UTC, a few extra runs later on every 37th day, and
/// hourly runs on the last day, so the newest hourly chains yearly ->
/// monthly -> daily -> hourly. `1y` keeps the current year's full only.
fn build_history() -> History {
    let bucket = new_bucket("restore-hist");
    let s = setup(1024, &bucket, "1y 3m 30d 24h");
    build_source(&s.source);
    const DAYS: i64 = 400;
    let start: DateTime<Utc> = "2025-06-01T08:00:00Z".parse().unwrap();
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let mut n = 0;
    for day in 0..DAYS {
        let hours: Vec<i64> = match day {
            d if d == DAYS - 1 => (0..6).collect(),
            d if d % 37 == 3 => vec![0, 1, 2, 5],
            _ => vec![0],
        };
        for hour in hours {
            n += 1;
            mutate(&s.source, n);
            let now = (start + Duration::days(day) + Duration::hours(hour)).to_rfc3339();
            ok(subvault(&s.config, &["run", "--now", &now]));
            let newest = newest_snapshot(&s.snapshots);
            hashes
                .entry(newest.clone())
                .or_insert_with(|| tree_hash(&s.snapshots.join(&newest)));
        }
    }
    let keys = list_keys(&bucket);
    let h = History {
        s,
        keys,
        hashes,
        end: start + Duration::days(DAYS),
    };
    let (fulls, monthlies, dailies, hourlies) =
        (h.at_depth(1), h.at_depth(2), h.at_depth(3), h.at_depth(4));
    assert!(
        fulls.len() == 1 && !monthlies.is_empty() && !dailies.is_empty() && !hourlies.is_empty(),
        "history lacks a timeframe: {:#?}",
        h.keys
    );
    h
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn the_latest_and_each_timeframes_backups_restore_exactly() {
    let h = history();
    let target = TestFs::new(1024);
    let newest = h
        .keys
        .iter()
        .max_by_key(|k| parse_key("", k).unwrap().time)
        .unwrap();
    h.restore_exactly(
        &target.path().join("latest"),
        &snapshot_name_of(newest),
        &["--latest".into()],
    );
    let (fulls, monthlies, dailies, hourlies) =
        (h.at_depth(1), h.at_depth(2), h.at_depth(3), h.at_depth(4));
    for (i, k) in [
        fulls[0],
        monthlies[0],
        monthlies[monthlies.len() - 1],
        dailies[0],
        dailies[dailies.len() / 2],
        hourlies[0],
    ]
    .into_iter()
    .enumerate()
    {
        let uuid = parse_key("", k).unwrap().uuid.to_string();
        h.restore_exactly(
            &target.path().join(format!("p{i}")),
            &snapshot_name_of(k),
            &["--uuid".into(), uuid],
        );
    }
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn restore_at_a_time_gives_the_newest_backup_at_or_before_it() {
    let h = history();
    let target = TestFs::new(1024);
    let times = h.times();
    let newest_before = |at: DateTime<Utc>| {
        let want = times.iter().filter(|t| **t <= at).max().unwrap();
        format!("data.{}", want.format("%Y-%m-%dT%H:%M:%SZ"))
    };
    // Random times between the oldest kept backup and the end of the history.
    let span = (h.end - times[0]).num_minutes();
    for i in 0..4 {
        let at = times[0] + Duration::minutes(fastrand::i64(0..span));
        h.restore_exactly(
            &target.path().join(format!("t{i}")),
            &newest_before(at),
            &["--at".into(), at.to_rfc3339()],
        );
    }
    // A local time in the configured zone: 00:30 Berlin is 23:30 UTC the day before.
    let at: DateTime<Utc> = "2026-01-31T23:30:00Z".parse().unwrap();
    h.restore_exactly(
        &target.path().join("local"),
        &newest_before(at),
        &["--at".into(), "2026-02-01T00:30".into()],
    );
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_second_point_in_one_dir_reuses_its_received_steps_and_a_point_already_there_is_refused() {
    let h = history();
    let target = TestFs::new(1024);
    // The second daily of the month reuses the yearly and monthly received for
    // the first, downloading one object.
    let shared = target.path().join("shared");
    fs::create_dir(&shared).unwrap();
    let dailies = h.at_depth(3);
    let d = dailies
        .iter()
        .filter(|k| {
            parse_key("", k).unwrap().send_parent_uuid
                == parse_key("", dailies[0]).unwrap().send_parent_uuid
        })
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(d.len(), 2, "two dailies of one month");
    for (i, k) in d.iter().enumerate() {
        let uuid = parse_key("", k).unwrap().uuid.to_string();
        let out = ok(subvault(
            &h.s.config,
            &["restore", "--to", shared.to_str().unwrap(), "--uuid", &uuid],
        ));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(if i == 0 { "3 object(s)" } else { "1 object(s)" }),
            "{}",
            text(&out)
        );
        assert_eq!(
            tree_hash(&restored_path(&out)),
            h.hashes[&snapshot_name_of(k)]
        );
    }
    // Restoring a point that is already in DIR is refused and changes nothing.
    let before = entries(&shared);
    let uuid = parse_key("", d[0]).unwrap().uuid.to_string();
    let out = subvault(
        &h.s.config,
        &["restore", "--to", shared.to_str().unwrap(), "--uuid", &uuid],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds"),
        "{}",
        text(&out)
    );
    assert_eq!(entries(&shared), before);
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_dry_run_restore_prints_the_chain_and_receives_nothing() {
    let h = history();
    let target = TestFs::new(256);
    let newest = h
        .keys
        .iter()
        .max_by_key(|k| parse_key("", k).unwrap().time)
        .unwrap();
    let dry = target.path().join("dry");
    fs::create_dir(&dry).unwrap();
    let out = ok(subvault(
        &h.s.config,
        &["restore", "--to", dry.to_str().unwrap(), "--dry-run"],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(newest.as_str()) && stdout.contains("to download"),
        "{stdout}"
    );
    assert!(entries(&dry).is_empty());
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn list_shows_every_object_once_and_verify_all_passes() {
    let h = history();
    let out = ok(subvault(&h.s.config, &["list", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = v[0]["backups"].as_array().unwrap();
    assert_eq!(listed.len(), h.keys.len());
    assert!(v[0]["orphans"].as_array().unwrap().is_empty());
    assert!(listed
        .iter()
        .any(|e| e["reasons"].to_string().contains("yearly")));
    let out = ok(subvault(&h.s.config, &["verify", "--all"]));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains(&format!("{} object(s) checked, 0 bad", h.keys.len())));
}

/// A source with 3 backups (full, monthly, daily) of a few MiB each.
fn small_chain(bucket: &str) -> (Setup, Vec<String>) {
    let s = setup(512, bucket, "1y 3m 30d");
    build_source(&s.source);
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (fastrand::u8(..) & 0x0f) ^ (i as u8);
    }
    fs::write(s.source.join("noise"), &data).unwrap();
    for (n, now) in [
        "2026-01-05T10:00:00Z",
        "2026-02-03T10:00:00Z",
        "2026-02-10T10:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        mutate(&s.source, n as u64 + 1);
        fs::write(
            s.source.join(format!("more-{n}")),
            &data[n << 20..(n + 3) << 20],
        )
        .unwrap();
        ok(subvault(&s.config, &["run", "--now", now]));
    }
    let mut keys = list_keys(bucket);
    keys.sort_by_key(|k| parse_key("", k).unwrap().time);
    assert_eq!(keys.len(), 3, "{keys:?}");
    (s, keys)
}

/// Runs a restore into a fresh DIR that must fail naming `key` and `phrase`,
/// leaving no half-received subvolume (only finished earlier steps).
fn expect_failure(s: &Setup, target: &TestFs, case: &str, key: &str, phrases: &[&str]) {
    let dir = target.path().join(case);
    fs::create_dir(&dir).unwrap();
    let out = subvault(&s.config, &["restore", "--to", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("subvault: ") && last.contains(key),
        "{case}: error line does not name {key}: {}",
        text(&out)
    );
    assert!(
        phrases.iter().any(|p| last.contains(p)),
        "{case}: expected one of {phrases:?}: {}",
        text(&out)
    );
    for name in entries(&dir) {
        let info = subvault::sys::btrfs::subvol_info(&dir.join(&name)).unwrap();
        assert!(
            info.readonly && info.received_uuid.is_some(),
            "{case}: partial subvolume {name} left behind"
        );
        assert!(
            !key.contains(&format!("uuid{}", info.received_uuid.unwrap())),
            "{case}: the failed object's subvolume {name} is left"
        );
    }
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn corrupt_objects_fail_with_one_clear_line_and_leave_nothing_half_received() {
    let bucket = new_bucket("restore-corrupt");
    let (s, keys) = small_chain(&bucket);
    let target = TestFs::new(512);
    let out = ok(subvault(&s.config, &["verify", "--all"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 object(s) checked, 0 bad"),
        "{}",
        text(&out)
    );
    let originals: Vec<Vec<u8>> = keys.iter().map(|k| get_object(&bucket, k)).collect();
    let (full, monthly, daily) = (&keys[0], &keys[1], &keys[2]);

    // A flipped byte in the middle of the full.
    let mut bad = originals[0].clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    put_object(&bucket, full, bad);
    expect_failure(
        &s,
        &target,
        "flipped",
        full,
        &["corrupt", "damaged", "mismatch"],
    );

    // verify --all names exactly the corrupted objects.
    let mut cut = originals[2].clone();
    cut.truncate(cut.len() * 2 / 3);
    put_object(&bucket, daily, cut);
    let out = subvault(&s.config, &["verify", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named: Vec<&str> = stderr
        .lines()
        .skip(1)
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    assert_eq!(named, vec![full.as_str(), daily.as_str()], "{}", text(&out));

    // A truncated object (the daily; full and monthly are received and stay).
    put_object(&bucket, full, originals[0].clone());
    expect_failure(&s, &target, "truncated", daily, &["truncated"]);
    put_object(&bucket, daily, originals[2].clone());

    // A deleted chain object.
    delete_object(&bucket, monthly);
    expect_failure(&s, &target, "deleted", daily, &["missing chain object"]);
    let out = subvault(&s.config, &["verify", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{daily}: its send parent")),
        "{}",
        text(&out)
    );
    put_object(&bucket, monthly, originals[1].clone());

    // A wrong codec suffix.
    let renamed = full.replace(".cmprzstd", ".cmprgzip");
    delete_object(&bucket, full);
    put_object(&bucket, &renamed, originals[0].clone());
    expect_failure(&s, &target, "codec", &renamed, &["codec suffix is wrong"]);
    delete_object(&bucket, &renamed);
    put_object(&bucket, full, originals[0].clone());

    // An object that is not a btrfs stream: gzip of text under a key without
    // .cmpr (so it is sniffed, like a btrfs2s3 object), and zstd of text under
    // the subvault key.
    let plain = daily.trim_end_matches(".cmprzstd").to_string();
    delete_object(&bucket, daily);
    put_object(
        &bucket,
        &plain,
        compress("gzip", b"this is not a btrfs send stream\n"),
    );
    expect_failure(
        &s,
        &target,
        "not-a-stream",
        &plain,
        &["btrfs send", "send stream"],
    );
    delete_object(&bucket, &plain);
    put_object(&bucket, daily, compress("zstd", &[b'x'; 100_000]));
    expect_failure(
        &s,
        &target,
        "not-a-stream-zstd",
        daily,
        &["trailer", "send stream", "btrfs send"],
    );
    put_object(&bucket, daily, originals[2].clone());

    // Repaired: the restore works and matches the source.
    let dir = target.path().join("repaired");
    fs::create_dir(&dir).unwrap();
    let out = ok(subvault(
        &s.config,
        &["restore", "--to", dir.to_str().unwrap()],
    ));
    let got = restored_path(&out);
    assert_eq!(
        tree_hash(&got),
        tree_hash(&s.snapshots.join(newest_snapshot(&s.snapshots)))
    );
    drop(target);
    drop(s);
}

fn compress(tool_name: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool(tool_name))
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn objects_written_like_btrfs2s3_restore() {
    let bucket = new_bucket("restore-b2s3");
    let s = setup(512, &bucket, "1y 3m");
    build_source(&s.source);
    let info = subvault::sys::btrfs::subvol_info(&s.source).unwrap();
    let btrfs = tool("btrfs");
    let mut prev: Option<(PathBuf, uuid::Uuid)> = None;
    let mut last = None;
    for (i, time) in ["2026-01-01T00:00:00+01:00", "2026-02-01T00:00:00+01:00"]
        .iter()
        .enumerate()
    {
        mutate(&s.source, 10 + i as u64);
        let snap = s.snapshots.join(format!("b2s3-{i}"));
        run(Command::new(&btrfs)
            .args(["subvolume", "snapshot", "-r"])
            .arg(&s.source)
            .arg(&snap));
        let si = subvault::sys::btrfs::subvol_info(&snap).unwrap();
        // The real pipeline btrfs2s3 runs with `pipe_through: [[gzip]]`.
        let parent_arg = prev
            .as_ref()
            .map(|(p, _)| format!("-p {}", p.display()))
            .unwrap_or_default();
        let sh = format!(
            "{} send -q {parent_arg} {} | gzip -c",
            btrfs.display(),
            snap.display()
        );
        let out = run(Command::new("sh").args(["-c", &sh]));
        let sndp = prev.as_ref().map(|(_, u)| *u).unwrap_or_default();
        let key = format!(
            "b2s3.ctim{time}.ctid{}.uuid{}.sndp{sndp}.prnt{}.mdvn1.seqn0",
            si.ctransid, si.uuid, info.uuid
        );
        put_object(&bucket, &key, out.stdout);
        prev = Some((snap.clone(), si.uuid));
        last = Some(snap);
    }
    let target = TestFs::new(512);
    let out = ok(subvault(
        &s.config,
        &["restore", "--to", target.path().to_str().unwrap()],
    ));
    let got = restored_path(&out);
    assert_eq!(tree_hash(&got), tree_hash(&last.unwrap()));
    let out = ok(subvault(&s.config, &["verify", "--all"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 object(s) checked, 0 bad"),
        "{}",
        text(&out)
    );
    let out = ok(subvault(&s.config, &["list"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gzip")
            || String::from_utf8_lossy(&out.stdout).contains("sniffed")
    );
    drop(target);
    drop(s);
}
