//! End-to-end tests of `subvault run` and `subvault plan` on real btrfs and a real
//! S3 server (moto on 127.0.0.1, started by integration/with-services.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::common::{
    append_line, get_object, new_bucket, put_object, run, s3_endpoint, subvault, subvault_command,
    tool, tree_hash, TestFs,
};
use crate::common::{expect_success as ok, multipart_uploads};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use subvault::core::object_key::parse_key;

use crate::common::proxy::FaultProxy;

/// A source subvolume with its snapshot dir on a fresh btrfs, and a config file.
struct Setup {
    fs: TestFs,
    source: PathBuf,
    snapshots: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// `remotes`: (id, bucket, policy, extra upload yaml lines).
fn setup(size_mib: u64, remotes: &[(&str, &str, &str, &str)], endpoint: &str) -> Setup {
    let fs = TestFs::new(size_mib);
    let source = fs.subvolume("data");
    let snapshots = fs.path().join("snapshots");
    fs::create_dir(&snapshots).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    write_config(&config, &source, &snapshots, remotes, endpoint);
    Setup {
        fs,
        source,
        snapshots,
        config,
        _dir: dir,
    }
}

fn write_config(
    config: &Path,
    source: &Path,
    snapshots: &Path,
    remotes: &[(&str, &str, &str, &str)],
    endpoint: &str,
) {
    let mut yaml = format!(
        "timezone: Europe/Berlin\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n",
        source.display(),
        snapshots.display()
    );
    for (id, _, policy, extra) in remotes {
        yaml.push_str(&format!(
            "      - id: {id}\n        preserve: {policy}\n{extra}"
        ));
    }
    yaml.push_str("remotes:\n");
    for (id, bucket, _, _) in remotes {
        yaml.push_str(&format!(
            "  - id: {id}\n    single_put_max: 8MiB\n    s3:\n      bucket: {bucket}\n      endpoint:\n        endpoint_url: {endpoint}\n        region_name: us-east-1\n"
        ));
    }
    fs::write(config, yaml).unwrap();
}

/// `subvault run --now NOW` on the setup's config, which must succeed.
fn run_at(s: &Setup, now: &str) -> Output {
    ok(subvault(&s.config, &["run", "--now", now]))
}

fn plan_json(config: &Path, now: &str) -> Value {
    let out = ok(subvault(
        config,
        &["plan", "--dry-run", "--json", "--now", now],
    ));
    serde_json::from_slice(&out.stdout).expect("plan --json prints JSON")
}

fn snapshot_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Changes a few files of the source, deterministically from `day`.
fn mutate(source: &Path, day: u64) {
    append_line(&source.join("log.txt"), &format!("day {day}"));
    let name = source.join(format!("file-{}", day % 7));
    let body: Vec<u8> = (0..(4096 + day * 13) as usize)
        .map(|i| ((i as u64 * 31 + day) % 251) as u8)
        .collect();
    fs::write(name, body).unwrap();
    if day % 5 == 0 {
        let _ = fs::remove_file(source.join(format!("file-{}", (day + 3) % 7)));
    }
}

/// After a run: the bucket holds exactly what the plan keeps, every object's parent
/// exists, the snapshot dir holds exactly the planned snapshots, nothing is left to do.
fn check_converged(s: &Setup, buckets: &[(&str, &str)], now: &str) {
    let plan = plan_json(&s.config, now);
    let actions = plan["actions"].as_array().unwrap();
    assert!(
        actions.is_empty(),
        "at {now} a second run would still act: {actions:#?}"
    );
    for (remote, bucket) in buckets {
        let listed: BTreeSet<String> = crate::common::bucket_objects(bucket).into_keys().collect();
        let planned: BTreeSet<String> = plan["backups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["remote"] == *remote)
            .map(|b| b["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            listed, planned,
            "at {now}: bucket of {remote} differs from the plan"
        );
        let uuids: BTreeSet<String> = listed
            .iter()
            .map(|k| parse_key("", k).unwrap().uuid.to_string())
            .collect();
        for key in &listed {
            if let Some(p) = parse_key("", key).unwrap().send_parent_uuid {
                assert!(
                    uuids.contains(&p.to_string()),
                    "at {now}: {key} lost its parent"
                );
            }
        }
    }
    let planned: BTreeSet<String> = plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["action"], "keep");
            Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        snapshot_names(&s.snapshots),
        planned,
        "at {now}: snapshot dir differs from the plan"
    );
}

/// The retention rule from the policies' spans alone
/// ([`subvault::core::coverage`]), against the buckets: every preserved span's
/// first snapshot (of `history`, every snapshot the runs took) has its object,
/// and every other object is the newest snapshot's or an ancestor of one that
/// must be kept. Unlike [`check_converged`], this does not ask the planner.
fn check_coverage(buckets: &[(&str, &str, &str)], history: &[DateTime<Utc>], now: &str) {
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let now_t: DateTime<Utc> = now.parse().unwrap();
    for (remote, bucket, policy) in buckets {
        let policy: subvault::core::policy::Policy = policy.parse().unwrap();
        // Object time -> its parent's time, through the uuids in the keys.
        let infos: Vec<_> = crate::common::bucket_objects(bucket)
            .into_keys()
            .map(|k| parse_key("", &k).unwrap())
            .collect();
        let time_of = |u: uuid::Uuid| {
            infos
                .iter()
                .find(|i| i.uuid == u)
                .map(|i| i.time.with_timezone(&Utc))
        };
        let kept: BTreeMap<DateTime<Utc>, Option<DateTime<Utc>>> = infos
            .iter()
            .map(|i| {
                (
                    i.time.with_timezone(&Utc),
                    i.send_parent_uuid.and_then(time_of),
                )
            })
            .collect();
        let required: Vec<DateTime<Utc>> =
            subvault::core::coverage::required_items(&policy, tz, now_t, history)
                .into_iter()
                .map(|i| history[i])
                .collect();
        assert!(!required.is_empty());
        for t in &required {
            assert!(
                kept.contains_key(t),
                "at {now}: {remote} ({policy}) lost the backup of {t}, the first of a \
                 preserved span; it holds {:?}",
                kept.keys().collect::<Vec<_>>()
            );
        }
        let mut allowed: BTreeSet<DateTime<Utc>> = required.iter().copied().collect();
        allowed.extend(history.last().copied());
        let mut todo: Vec<DateTime<Utc>> = allowed.iter().copied().collect();
        while let Some(t) = todo.pop() {
            if let Some(Some(p)) = kept.get(&t) {
                if allowed.insert(*p) {
                    todo.push(*p);
                }
            }
        }
        for t in kept.keys() {
            assert!(
                allowed.contains(t),
                "at {now}: {remote} ({policy}) keeps the backup of {t}, which no preserved \
                 span, newest snapshot or ancestor needs"
            );
        }
    }
}

/// Restores the chain of `key` by hand (`zstd -d | btrfs receive`, no subvault)
/// into a fresh dir under `into` and returns the received subvolume's path.
fn restore_by_hand(
    bucket: &str,
    key: &str,
    all: &BTreeMap<String, (i64, String)>,
    into: &Path,
) -> PathBuf {
    let mut chain = vec![key.to_string()];
    loop {
        let info = parse_key("", chain.last().unwrap()).unwrap();
        let Some(parent) = info.send_parent_uuid else {
            break;
        };
        let pk = all
            .keys()
            .find(|k| parse_key("", k).unwrap().uuid == parent)
            .unwrap_or_else(|| panic!("parent of {key} missing"))
            .clone();
        chain.push(pk);
    }
    chain.reverse();
    let dir = into.join(format!("r{}", fastrand::u32(..)));
    fs::create_dir(&dir).unwrap();
    let mut last = None;
    for k in &chain {
        let obj = get_object(bucket, k);
        let file = dir.join("obj.zst");
        fs::write(&file, obj).unwrap();
        let sh = format!(
            "zstd -d -q -c {} | {} receive {}",
            file.display(),
            tool("btrfs").display(),
            dir.display()
        );
        let out = run(Command::new("sh").args(["-c", &sh]));
        fs::remove_file(&file).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        let name = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix("At subvol ")
                    .or_else(|| l.strip_prefix("At snapshot "))
            })
            .unwrap_or_else(|| panic!("no subvolume name in receive output: {stderr}"))
            .trim()
            .to_string();
        last = Some(dir.join(name));
    }
    last.unwrap()
}

fn day_time(start: DateTime<Utc>, day: i64, hour: i64, minute: i64) -> String {
    (start + Duration::days(day) + Duration::hours(hour) + Duration::minutes(minute)).to_rfc3339()
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn simulated_400_days_keep_bucket_and_snapshots_exactly_as_planned() {
    let b1 = new_bucket("run-hist-a");
    let b2 = new_bucket("run-hist-b");
    let s = setup(
        1024,
        &[
            ("main", &b1, "1y 3m 30d 24h", ""),
            (
                "archive",
                &b2,
                "2y 12m",
                "        compression: {codec: zstd, level: 5}\n",
            ),
        ],
        &s3_endpoint(),
    );
    fs::write(s.source.join("readme"), "hello").unwrap();
    std::os::unix::fs::symlink("readme", s.source.join("link")).unwrap();
    let start: DateTime<Utc> = "2025-06-01T08:00:00Z".parse().unwrap();
    let buckets = [("main", b1.as_str()), ("archive", b2.as_str())];
    let policies = [
        ("main", b1.as_str(), "1y 3m 30d 24h"),
        ("archive", b2.as_str(), "2y 12m"),
    ];
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    // The time of every snapshot the runs took, oldest first.
    let mut history: Vec<DateTime<Utc>> = Vec::new();
    for day in 0..400i64 {
        let mut runs = vec![(0, 0)];
        if day % 37 == 3 {
            runs.extend([(1, 0), (1, 30), (5, 10)]);
        }
        for (hour, minute) in runs {
            mutate(&s.source, (day * 10 + hour) as u64);
            let now = day_time(start, day, hour, minute);
            run_at(&s, &now);
            let newest = snapshot_names(&s.snapshots).into_iter().max().unwrap();
            hashes.insert(newest.clone(), tree_hash(&s.snapshots.join(&newest)));
            let taken: DateTime<Utc> = newest["data.".len()..].parse().unwrap();
            assert_eq!(taken, now.parse::<DateTime<Utc>>().unwrap(), "{newest}");
            history.push(taken);
            if day % 10 == 0 || day > 390 || hour > 0 {
                check_converged(&s, &buckets, &now);
                check_coverage(&policies, &history, &now);
            }
        }
        // A run without changes does nothing and says so.
        if day % 50 == 0 {
            let now = day_time(start, day, 0, 5);
            let out = run_at(&s, &now);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("nothing to do"), "{stdout}");
        }
    }
    // Each kept backup whose snapshot is still here restores by hand to that snapshot.
    let target = TestFs::new(1024);
    let all = crate::common::bucket_objects(&b1);
    let mut restored = 0;
    for key in all.keys() {
        let info = parse_key("", key).unwrap();
        let name = format!(
            "data.{}",
            info.time.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%SZ")
        );
        let Some(want) = hashes.get(&name) else {
            continue;
        };
        if !s.snapshots.join(&name).exists() {
            continue;
        }
        let got = restore_by_hand(&b1, key, &all, target.path());
        assert_eq!(
            &tree_hash(&got),
            want,
            "restore of {key} differs from snapshot {name}"
        );
        restored += 1;
        if restored >= 8 {
            break;
        }
    }
    assert!(restored >= 5, "only {restored} backups could be checked");
    drop(s);
}

/// An in-place rewrite of an existing file changes no btrfs tree until its data
/// is written out (up to 30 s later), so the source's ctransid still matches the
/// newest snapshot's. A run right after the rewrite must see it anyway.
#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_file_rewritten_in_place_just_before_a_run_is_backed_up() {
    let bucket = new_bucket("run-inplace");
    let s = setup(
        256,
        &[("main", &bucket, "1y 1m 30d 24h", "")],
        &s3_endpoint(),
    );
    let db = s.source.join("db");
    fs::write(&db, vec![b'a'; 64 << 10]).unwrap();
    run_at(&s, "2026-01-01T10:00:00Z");

    // No create, truncate or rename: only data written into the middle.
    let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&[b'b'; 4096]).unwrap();
    drop(f);
    let out = run_at(&s, "2026-01-01T11:00:00Z");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("nothing to do"), "{stdout}");

    let names = snapshot_names(&s.snapshots);
    assert_eq!(names.len(), 2, "{names:?}");
    let newest = s.snapshots.join(names.iter().max().unwrap());
    let got = fs::read(newest.join("db")).unwrap();
    assert!(
        got[4096..8192].iter().all(|&b| b == b'b'),
        "the rewrite is in the snapshot"
    );
    assert!(got[..4096].iter().all(|&b| b == b'a'));
    assert_eq!(
        crate::common::bucket_objects(&bucket).len(),
        2,
        "the rewrite was uploaded"
    );
}

/// Missing credentials are a setup error: the run says which settings to add at
/// once (no retries with backoff) and touches neither the source nor the bucket.
#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_run_without_credentials_says_what_to_set_and_uploads_nothing() {
    let bucket = new_bucket("run-nocreds");
    let s = setup(256, &[("main", &bucket, "1y 1d", "")], &s3_endpoint());
    fs::write(s.source.join("f"), "x").unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = subvault_command(&s.config, &["run", "--now", "2026-01-01T10:00:00Z"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no S3 credentials found"), "{stderr}");
    assert!(stderr.contains("aws_access_key_id"), "{stderr}");
    assert!(!stderr.contains("attempt 2/"), "not retried: {stderr}");
    // The remote fails alone: the local restore point is still taken.
    assert_eq!(snapshot_names(&s.snapshots).len(), 1);
    assert!(crate::common::bucket_objects(&bucket).is_empty());
}

/// A snapshot directory that does not exist yet: `plan` shows the first backup
/// without creating anything, and the first run creates the directory.
#[test]
#[ignore = "needs root + btrfs + S3"]
fn the_first_run_creates_a_missing_snapshot_directory() {
    let bucket = new_bucket("run-mkdir");
    let s = setup(256, &[("main", &bucket, "1y 1d", "")], &s3_endpoint());
    fs::remove_dir(&s.snapshots).unwrap();
    fs::write(s.source.join("f"), "x").unwrap();
    let plan = plan_json(&s.config, "2026-01-01T10:00:00Z");
    assert!(
        !plan["actions"].as_array().unwrap().is_empty(),
        "the plan has work to do: {plan}"
    );
    assert!(
        !s.snapshots.exists(),
        "plan --dry-run created the directory"
    );
    run_at(&s, "2026-01-01T10:00:00Z");
    assert_eq!(snapshot_names(&s.snapshots).len(), 1);
    assert_eq!(crate::common::bucket_objects(&bucket).len(), 1);
}

/// Writes `mib` MiB of incompressible data into the source.
fn fill_random(source: &Path, name: &str, mib: usize) {
    let mut f = fs::File::create(source.join(name)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        fastrand::fill(&mut buf);
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_stream_killed_midway_leaves_no_object_and_no_multipart_upload() {
    let bucket = new_bucket("run-kill");
    let dir = tempfile::tempdir().unwrap();
    // A pipe_through command that dies after 20 MB: the stream ends mid-upload.
    let killer = dir.path().join("die-midway.sh");
    fs::write(&killer, "#!/bin/sh\nhead -c 20000000\nkill -KILL $$\n").unwrap();
    fs::set_permissions(&killer, fs::Permissions::from_mode(0o755)).unwrap();
    let extra = format!(
        "        compression: none\n        pipe_through: [[{}]]\n",
        killer.display()
    );
    let s = setup(512, &[("main", &bucket, "1d", &extra)], &s3_endpoint());
    fill_random(&s.source, "big", 40);
    let out = subvault(&s.config, &["run", "--now", "2026-01-01T10:00:00Z"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("source data: FAILED"), "{stderr}");
    // The failure named is the killed command (its exit by SIGKILL, or the
    // broken pipe into it), not just any failure.
    let named = stderr
        .lines()
        .any(|l| l.contains("pipe_through command") && l.contains("die-midway.sh"));
    assert!(named, "the killed command is not named: {stderr}");
    assert!(
        crate::common::bucket_objects(&bucket).is_empty(),
        "an object exists after a failed stream"
    );
    assert!(
        multipart_uploads(&bucket).is_empty(),
        "a multipart upload was left open"
    );
    // The snapshot exists; the next run (with a working pipe) completes the backup.
    assert_eq!(snapshot_names(&s.snapshots).len(), 1);
    write_config(
        &s.config,
        &s.source,
        &s.snapshots,
        &[("main", &bucket, "1d", "        compression: zstd\n")],
        &s3_endpoint(),
    );
    run_at(&s, "2026-01-01T11:00:00Z");
    assert_eq!(crate::common::bucket_objects(&bucket).len(), 1);
    check_converged(&s, &[("main", &bucket)], "2026-01-01T11:00:00Z");
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn an_upload_error_midway_leaves_a_resumable_upload_that_the_next_run_settles() {
    let bucket = new_bucket("run-uperr");
    // Every UploadPart after the first fails: the multipart upload fails midway.
    let parts = Arc::new(AtomicU32::new(0));
    let proxy = FaultProxy::start(Arc::new(move |head, _| {
        (head.starts_with("PUT ")
            && head.contains("partNumber=")
            && parts.fetch_add(1, Ordering::SeqCst) >= 1)
            .then_some(500)
    }));
    let s = setup(
        512,
        &[("main", &bucket, "1d", "        compression: none\n")],
        &proxy.url,
    );
    fill_random(&s.source, "big", 40);
    let out = subvault(&s.config, &["run", "--now", "2026-01-01T10:00:00Z"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(proxy.injected() >= 1, "the proxy failed no UploadPart");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("500") || stderr.contains("InternalError"),
        "the error line names the store's answer: {stderr}"
    );
    assert!(
        crate::common::bucket_objects(&bucket).is_empty(),
        "an object exists after a failed upload"
    );
    // An unencrypted upload without pipe_through stays open for the next run
    // to resume (README, "Resuming an interrupted upload").
    assert_eq!(
        multipart_uploads(&bucket).len(),
        1,
        "the failed upload is kept open to resume"
    );
    // The next run compresses (another key for the same snapshot): the open
    // upload can never be resumed, so it is aborted, and nothing is left open.
    write_config(
        &s.config,
        &s.source,
        &s.snapshots,
        &[("main", &bucket, "1d", "")],
        &s3_endpoint(),
    );
    run_at(&s, "2026-01-01T11:00:00Z");
    assert_eq!(crate::common::bucket_objects(&bucket).len(), 1);
    assert!(
        multipart_uploads(&bucket).is_empty(),
        "a superseded multipart upload was left open"
    );
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn concurrent_runs_never_upload_twice() {
    let bucket = new_bucket("run-conc");
    let s = setup(512, &[("main", &bucket, "1y 1d", "")], &s3_endpoint());
    fill_random(&s.source, "big", 48);
    // Two different times: without the lock each run would take its own
    // snapshot under its own name and upload it, so a missing lock shows as two
    // objects (with one time both would write the same key and hide it).
    let spawn = |now: &str| {
        subvault_command(&s.config, &["run", "--now", now])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("2026-01-01T10:00:00Z");
    let b = spawn("2026-01-01T10:00:30Z");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(codes.contains(&Some(0)), "one run succeeds: {codes:?}");
    let loser = if a.status.success() { &b } else { &a };
    if !loser.status.success() {
        let stderr = String::from_utf8_lossy(&loser.stderr);
        assert!(
            stderr.contains("another subvault run"),
            "the other exits cleanly: {stderr}"
        );
    }
    let keys = crate::common::bucket_objects(&bucket);
    assert_eq!(keys.len(), 1, "exactly one object: {keys:?}");
    assert_eq!(snapshot_names(&s.snapshots).len(), 1);
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn plan_dry_run_reads_btrfs2s3_backups_and_changes_nothing() {
    let bucket = new_bucket("plan-b2s3");
    let s = setup(
        512,
        &[(
            "main",
            &bucket,
            "1y 1m 1d",
            "        pipe_through: [[gzip]]\n",
        )],
        &s3_endpoint(),
    );
    // Three snapshots named and uploaded the way btrfs2s3 does it: key scheme
    // without .cmpr, objects made by the real `btrfs send | gzip`.
    let btrfs = tool("btrfs");
    let source_uuid = subvault::sys::btrfs::subvol_info(&s.source).unwrap().uuid;
    let mut made: Vec<(String, uuid::Uuid)> = Vec::new();
    for (i, (t, parent)) in [
        ("2026-01-01T00:00:00+00:00", None),
        ("2026-01-05T00:00:00+00:00", Some(0usize)),
        ("2026-01-05T06:00:00+00:00", Some(1)),
    ]
    .into_iter()
    .enumerate()
    {
        fs::write(s.source.join(format!("f{i}")), format!("content {i}")).unwrap();
        s.fs.sync();
        let info = subvault::sys::btrfs::subvol_info(&s.source).unwrap();
        let name = format!("data.{t}.{}", info.ctransid);
        run(Command::new(&btrfs)
            .args(["subvolume", "snapshot", "-r"])
            .arg(&s.source)
            .arg(s.snapshots.join(&name)));
        let snap = subvault::sys::btrfs::subvol_info(&s.snapshots.join(&name)).unwrap();
        let mut send = format!("{} send -q", btrfs.display());
        if let Some(p) = parent {
            let pname = &made[p].0;
            send.push_str(&format!(" -p {}", s.snapshots.join(pname).display()));
        }
        send.push_str(&format!(" {} | gzip", s.snapshots.join(&name).display()));
        let body = run(Command::new("sh").args(["-c", &send])).stdout;
        let sndp = parent.map(|p| made[p].1).unwrap_or_default();
        let key = format!(
            "data.ctim{t}.ctid{}.uuid{}.sndp{}.prnt{}.mdvn1.seqn0.gz",
            snap.ctransid, snap.uuid, sndp, source_uuid
        );
        put_object(&bucket, &key, body);
        made.push((name, snap.uuid));
    }
    let before_objects = crate::common::bucket_objects(&bucket);
    let before_snaps = snapshot_names(&s.snapshots);
    let now = "2026-01-05T07:00:00+00:00";
    let text =
        String::from_utf8(ok(subvault(&s.config, &["plan", "--dry-run", "--now", now])).stdout)
            .unwrap();
    let plan = plan_json(&s.config, now);
    assert_eq!(
        crate::common::bucket_objects(&bucket),
        before_objects,
        "plan changed the bucket"
    );
    assert_eq!(
        snapshot_names(&s.snapshots),
        before_snaps,
        "plan changed the snapshot dir"
    );

    // The tree: the yearly root, the Jan 5 daily under it, the 06:00 one under the daily.
    let lines: Vec<&str> = text.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
    };
    let root = find("2026-01-01 01:00:00 +01:00  full");
    let daily = find("2026-01-05 01:00:00 +01:00  diff");
    let hourly = find("2026-01-05 07:00:00 +01:00  diff");
    assert!(root < daily && daily < hourly, "{text}");
    let col = |l: &str| l.find("2026").unwrap();
    assert!(
        col(lines[root]) < col(lines[daily]) && col(lines[daily]) < col(lines[hourly]),
        "{text}"
    );
    // JSON: every btrfs2s3 backup is listed, kept, with its reasons.
    let backups = plan["backups"].as_array().unwrap();
    assert_eq!(
        backups
            .iter()
            .filter(|b| b["key"]
                .as_str()
                .is_some_and(|k| before_objects.contains_key(k)))
            .count(),
        3
    );
    let yearly = backups
        .iter()
        .find(|b| {
            b["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "2026 yearly")
        })
        .unwrap();
    assert_eq!(yearly["send_parent_uuid"], Value::Null);
    assert_eq!(yearly["action"], "keep");
    for b in backups {
        DateTime::parse_from_rfc3339(b["time"].as_str().unwrap()).unwrap();
    }
    // Nothing changed in the source since the newest snapshot: no snapshot to create.
    assert!(plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["action"] != "create"));
}

/// Physical address of a file's first extent (`filefrag -v`).
fn first_physical(path: &Path) -> u64 {
    let out = run(Command::new(tool("filefrag")).arg("-v").arg(path));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("0:"))
        .unwrap_or_else(|| panic!("no extent in filefrag output: {text}"));
    // "   0:        0..    4095:      34816..     38911:   4096: ..."
    let phys = line
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .split("..")
        .next()
        .unwrap()
        .trim();
    phys.parse()
        .unwrap_or_else(|_| panic!("cannot parse {line}"))
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn dedupe_after_run_shares_identical_files() {
    let bucket = new_bucket("run-dedupe");
    let s = setup(512, &[("main", &bucket, "1d", "")], &s3_endpoint());
    let yaml = fs::read_to_string(&s.config).unwrap().replace(
        "    upload_to_remotes:\n",
        "    dedupe:\n      after_run: true\n    upload_to_remotes:\n",
    );
    fs::write(&s.config, yaml).unwrap();
    fill_random(&s.source, "a", 16);
    run(Command::new("cp")
        .arg("--reflink=never")
        .arg(s.source.join("a"))
        .arg(s.source.join("b")));
    s.fs.sync();
    assert_ne!(
        first_physical(&s.source.join("a")),
        first_physical(&s.source.join("b"))
    );
    run_at(&s, "2026-01-01T10:00:00Z");
    assert_eq!(
        first_physical(&s.source.join("a")),
        first_physical(&s.source.join("b")),
        "the copies share their extent after the run"
    );
    assert_eq!(crate::common::bucket_objects(&bucket).len(), 1);
}
