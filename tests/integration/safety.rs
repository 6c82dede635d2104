//! The guards that keep a run from losing history, on real btrfs and a real S3
//! server (moto), each with the fault it guards against: a wrong clock,
//! overlapping remotes, listings that lie, duplicate objects of a snapshot, a
//! second config naming the same source, a dead remote next to a live one, a
//! signal mid-upload, an unmounted backup disk, and a store that reports the
//! wrong size. Each test checks that nothing kept was lost.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::proxy::FaultProxy;
use crate::common::{
    append_line, bucket_objects, get_object, new_bucket, put_object, s3_endpoint, subvault,
    subvault_command, tree_hash, TestFs,
};
use crate::common::{expect_success as ok, multipart_uploads, output_text as text};

/// A source subvolume on a fresh btrfs and a directory for configs (and, with
/// them, the lock directory their runs share).
struct Host {
    fs: TestFs,
    source: PathBuf,
    snapshots: PathBuf,
    dir: tempfile::TempDir,
}

impl Host {
    fn new(size_mib: u64) -> Host {
        let fs = TestFs::new(size_mib);
        let source = fs.subvolume("data");
        let snapshots = fs.path().join("snapshots");
        fs::create_dir(&snapshots).unwrap();
        Host {
            fs,
            source,
            snapshots,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes config `name` with these `upload_to_remotes` entries and `remotes`
    /// entries (YAML lines, indented as list items at their level).
    fn config(&self, name: &str, uploads: &str, remotes: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = format!(
            "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n{uploads}remotes:\n{remotes}",
            self.source.display(),
            self.snapshots.display()
        );
        fs::write(&path, text).unwrap();
        path
    }

    /// A directory for a local remote (created: an existing, mounted disk).
    fn disk(&self, name: &str) -> PathBuf {
        let d = self.fs.path().join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn change(&self, n: u64) {
        append_line(&self.source.join("log.txt"), &format!("change {n}"));
        fs::write(self.source.join(format!("f{}", n % 5)), vec![n as u8; 5000]).unwrap();
    }

    fn snapshot_names(&self) -> BTreeSet<String> {
        names_in(&self.snapshots)
    }
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// An `upload_to_remotes` entry.
fn upload(id: &str, preserve: &str) -> String {
    format!("      - id: {id}\n        preserve: {preserve}\n")
}

/// A local remote entry.
fn local(id: &str, path: &Path) -> String {
    format!("  - id: {id}\n    local:\n      path: {}\n", path.display())
}

/// An S3 remote entry on the test server (or `endpoint`).
fn s3(id: &str, bucket: &str, prefix: &str, endpoint: &str) -> String {
    format!(
        "  - id: {id}\n    single_put_max: 8MiB\n    s3:\n      bucket: {bucket}\n      prefix: \"{prefix}\"\n      endpoint:\n        endpoint_url: {endpoint}\n        region_name: us-east-1\n"
    )
}

fn day(n: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339("2026-10-01T09:00:00Z").unwrap()
        + chrono::Duration::days(n))
    .to_rfc3339()
}

/// Files in a local remote, temp files included.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root + btrfs"]
fn a_run_with_a_wrong_time_loses_nothing() {
    // The reproduction: 30 daily runs under `1y 3m 30d` to a local remote,
    // then one run a year early.
    let h = Host::new(256);
    let disk = h.disk("disk");
    let cfg = h.config(
        "c.yaml",
        &upload("disk", "1y 3m 30d"),
        &local("disk", &disk),
    );
    for n in 0..30 {
        h.change(n as u64);
        ok(subvault(&cfg, &["run", "--now", &day(n)]));
    }
    let (objects, snapshots) = (files_under(&disk), h.snapshot_names());
    assert_eq!((objects.len(), snapshots.len()), (30, 30));
    h.change(99);
    for cmd in [&["run"][..], &["plan", "--dry-run"][..]] {
        let mut args = cmd.to_vec();
        args.extend(["--now", "2025-10-30T09:00:00Z"]);
        let out = subvault(&cfg, &args);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("refusing to run at 2025-10-30 09:00:00")
                && stderr.contains("2026-10-30 09:00:00"),
            "{cmd:?}: the line names both times: {stderr}"
        );
    }
    assert_eq!(files_under(&disk), objects, "no object deleted or added");
    assert_eq!(
        h.snapshot_names(),
        snapshots,
        "no snapshot taken or destroyed"
    );
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn overlapping_remotes_are_refused_and_prefix_neighbours_keep_each_other() {
    let h = Host::new(256);
    // The same local path twice: a config error at the second remote's path.
    let disk = h.disk("disk");
    let both = format!("{}{}", upload("short", "3d"), upload("long", "1y 12m 30d"));
    let cfg = h.config(
        "same.yaml",
        &both,
        &format!("{}{}", local("short", &disk), local("long", &disk)),
    );
    let out = subvault(&cfg, &["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The second `path:` line of the file, at its value.
    let yaml = fs::read_to_string(&cfg).unwrap();
    let (line, text_of_line) = yaml
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&format!("path: {}", disk.display())))
        .nth(1)
        .unwrap();
    let at = format!(
        "{}:{}:{}: remotes[1].local.path: ",
        cfg.display(),
        line + 1,
        text_of_line.find('/').unwrap() + 1
    );
    assert!(
        stderr.contains(&at) && stderr.contains("overlaps remote \"short\""),
        "expected {at}: {stderr}"
    );
    let out = subvault(&cfg, &["run", "--now", &day(0)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "run refuses it too: {}",
        text(&out)
    );
    assert!(h.snapshot_names().is_empty());

    // One bucket, prefixes `bk` and `bk-long` (a string prefix of each other,
    // but different directories): 20 daily runs, and each keeps its own.
    let bucket = new_bucket("overlap");
    let cfg = h.config(
        "apart.yaml",
        &both,
        &format!(
            "{}{}",
            s3("short", &bucket, "bk", &s3_endpoint()),
            s3("long", &bucket, "bk-long", &s3_endpoint())
        ),
    );
    ok(subvault(&cfg, &["config", "check"]));
    for n in 0..20 {
        h.change(n as u64);
        ok(subvault(&cfg, &["run", "--now", &day(n)]));
    }
    let keys = bucket_objects(&bucket);
    let count = |p: &str| keys.keys().filter(|k| k.starts_with(p)).count();
    assert_eq!(count("bk-long/"), 20, "long keeps all 20: {keys:#?}");
    assert_eq!(count("bk/"), 3, "short keeps 3");
}

/// A ListObjectsV2 answer listing `keys` (with sizes when `sized`), marked
/// truncated with `token` (`None`: truncated without one).
fn listing_xml(bucket: &str, keys: &[(String, i64)], sized: bool, token: Option<&str>) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
         xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{bucket}</Name><Prefix></Prefix>\
         <KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>",
        keys.len()
    );
    for (k, size) in keys {
        xml.push_str(&format!("<Contents><Key>{k}</Key>"));
        if sized {
            xml.push_str(&format!("<Size>{size}</Size>"));
        }
        xml.push_str("<StorageClass>STANDARD</StorageClass></Contents>");
    }
    if let Some(t) = token {
        xml.push_str(&format!(
            "<NextContinuationToken>{t}</NextContinuationToken>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{xml}",
        xml.len()
    )
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_listing_that_lies_prunes_nothing_and_does_not_hang() {
    let h = Host::new(256);
    let bucket = new_bucket("lying");
    let real = h.config(
        "real.yaml",
        &upload("main", "1d"),
        &s3("main", &bucket, "", &s3_endpoint()),
    );
    h.change(0);
    ok(subvault(&real, &["run", "--now", &day(0)]));
    let before = bucket_objects(&bucket);
    let listed: Vec<(String, i64)> = before.iter().map(|(k, (s, _))| (k.clone(), *s)).collect();
    // (what the store says, what the error line must say)
    let cases: [(Option<&str>, bool, &str); 3] = [
        (None, true, "marked truncated but has no continuation token"),
        (Some("again"), true, "came back a second time"),
        (Some("t1"), false, "without a size"),
    ];
    for (i, (token, sized, says)) in cases.into_iter().enumerate() {
        let (b, l) = (bucket.clone(), listed.clone());
        let proxy = FaultProxy::responding(Arc::new(move |head, _| {
            (head.starts_with("GET ") && head.contains("list-type=2"))
                .then(|| listing_xml(&b, &l, sized, token))
        }));
        let cfg = h.config(
            &format!("lying{i}.yaml"),
            &upload("main", "1d"),
            &s3("main", &bucket, "", &proxy.url),
        );
        h.change(i as u64 + 1);
        let started = Instant::now();
        // Day i+1 under `1d`: a run that believed the listing would delete
        // yesterday's backup.
        let out = subvault(&cfg, &["run", "--now", &day(i as i64 + 1)]);
        assert!(started.elapsed() < Duration::from_secs(60), "it hung");
        assert_eq!(out.status.code(), Some(1), "{says}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("listing cannot be trusted") && stderr.contains(says),
            "{stderr}"
        );
        assert!(proxy.injected() >= 1);
        let now = bucket_objects(&bucket);
        assert!(
            before.keys().all(|k| now.contains_key(k)),
            "an object was deleted on a lying listing"
        );
    }
    // Each run still took its snapshot (the remote failed alone).
    let newest = h.snapshot_names().into_iter().max().unwrap();
    assert_eq!(newest, "data.2026-10-04T09:00:00Z");
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_broken_duplicate_never_wins_over_the_good_copy() {
    let h = Host::new(256);
    let bucket = new_bucket("dup");
    let cfg = h.config(
        "c.yaml",
        &upload("main", "1y 1m 1d"),
        &s3("main", &bucket, "", &s3_endpoint()),
    );
    h.change(0);
    ok(subvault(&cfg, &["run", "--now", "2026-01-01T09:00:00Z"]));
    h.change(1);
    ok(subvault(&cfg, &["run", "--now", "2026-01-05T09:00:00Z"]));
    let newest_snapshot = h.snapshot_names().into_iter().max().unwrap();
    let want = tree_hash(&h.snapshots.join(&newest_snapshot));
    let keys = bucket_objects(&bucket);
    let daily = keys
        .keys()
        .find(|k| !k.contains(".sndp00000000-"))
        .unwrap()
        .clone();
    let full = keys
        .keys()
        .find(|k| k.contains(".sndp00000000-"))
        .unwrap()
        .clone();
    // A second object of the daily's snapshot, sent relative to a snapshot
    // that has no object (a heal whose delete failed): its key sorts first.
    let i = daily.find(".sndp").unwrap();
    let broken = format!(
        "{}.sndp{}{}",
        &daily[..i],
        "00000000-0000-0000-0000-000000000001",
        &daily[i + 41..]
    );
    assert!(broken < daily, "the broken copy is listed first");
    put_object(&bucket, &broken, get_object(&bucket, &daily));

    // restore and verify take the good copy.
    let target = TestFs::new(256);
    let out = ok(subvault(
        &cfg,
        &["restore", "--to", target.path().to_str().unwrap()],
    ));
    let restored = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("restored ")
                .map(|r| r.split(" (").next().unwrap().to_string())
        })
        .unwrap();
    assert_eq!(tree_hash(Path::new(&restored)), want);
    let out = ok(subvault(&cfg, &["verify"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 object(s) checked, 0 bad"));
    // A later run the same day keeps the good copy's chain (`1d` keeps the
    // day's first backup); the broken copy is reported, not used.
    h.change(2);
    let out = ok(subvault(&cfg, &["run", "--now", "2026-01-05T10:00:00Z"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be restored"),
        "{}",
        text(&out)
    );
    let now = bucket_objects(&bucket);
    assert!(
        now.contains_key(&full) && now.contains_key(&daily),
        "the good chain lost an object: {now:#?}"
    );
}

#[test]
#[ignore = "needs root + btrfs"]
fn a_second_config_naming_the_same_source_waits_its_turn() {
    let h = Host::new(512);
    let (d1, d2) = (h.disk("one"), h.disk("two"));
    // A slow stream keeps the first run on the source for a few seconds.
    let slow = "        compression: none\n        pipe_through: [[sh, -c, 'sleep 4; cat']]\n";
    let a = h.config(
        "a.yaml",
        &format!("{}{slow}", upload("one", "1d")),
        &local("one", &d1),
    );
    let b = h.config("b.yaml", &upload("two", "1d"), &local("two", &d2));
    h.change(0);
    let first = subvault_command(&a, &["run", "--now", &day(0)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let second = subvault(&b, &["run", "--now", &day(0)]);
    let first = first.wait_with_output().unwrap();
    ok(first);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another subvault run"),
        "{}",
        text(&second)
    );
    assert!(
        files_under(&d2).is_empty(),
        "the second run uploaded nothing"
    );
    assert_eq!(h.snapshot_names().len(), 1, "one snapshot, not two");
    // Later it runs normally.
    ok(subvault(&b, &["run", "--now", &day(0)]));
    assert_eq!(files_under(&d2).len(), 1);
}

#[test]
#[ignore = "needs root + btrfs"]
fn a_dead_remote_fails_alone() {
    let h = Host::new(256);
    let disk = h.disk("disk");
    let cfg = h.config(
        "c.yaml",
        &format!("{}{}", upload("dead", "1y 3m 30d"), upload("disk", "2d")),
        &format!(
            "{}{}",
            s3("dead", "nobody-home", "", "http://127.0.0.1:9"),
            local("disk", &disk)
        ),
    );
    for n in 0..3 {
        h.change(n);
        let out = subvault(&cfg, &["run", "--now", &day(n as i64)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("source data: FAILED: remote dead") && stderr.contains("127.0.0.1:9"),
            "the failure is named: {stderr}"
        );
    }
    // The live remote uploaded and pruned (`2d`), the snapshots were taken,
    // and the ones the dead remote's `30d` will need are all still there.
    assert_eq!(files_under(&disk).len(), 2);
    assert_eq!(h.snapshot_names().len(), 3);
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn sigterm_mid_upload_aborts_it_and_exits_143() {
    let h = Host::new(512);
    let bucket = new_bucket("sigterm");
    let disk = h.disk("disk");
    let mut f = fs::File::create(h.source.join("big")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..48 {
        fastrand::fill(&mut buf);
        std::io::Write::write_all(&mut f, &buf).unwrap();
    }
    drop(f);
    // S3: stop once the multipart upload exists; through a pipe_through
    // command, so the upload is not resumable and must be aborted (resumable
    // ones stay open: tests/integration/resume.rs). Local: a stream that
    // stalls after 1 MB, so its temp file exists.
    let stall = "        compression: none\n        pipe_through: [[sh, -c, 'head -c 1000000; exec sleep 60']]\n";
    let cases = [
        (
            "s3.yaml",
            format!(
                "{}        compression: none\n        pipe_through: [[cat]]\n",
                upload("main", "1d")
            ),
            s3("main", &bucket, "", &s3_endpoint()),
        ),
        (
            "local.yaml",
            format!("{}{stall}", upload("disk", "1d")),
            local("disk", &disk),
        ),
    ];
    for (name, uploads, remotes) in cases {
        let cfg = h.config(name, &uploads, &remotes);
        let child = subvault_command(&cfg, &["run", "--now", &day(0)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let under_way = || {
            if name == "s3.yaml" {
                !multipart_uploads(&bucket).is_empty()
            } else {
                files_under(&disk).iter().any(|f| f.contains(".tmp-"))
            }
        };
        while !under_way() {
            assert!(
                Instant::now() < deadline,
                "{name}: the upload never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stopped = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "{name}: took too long"
        );
        assert_eq!(out.status.code(), Some(143), "{name}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("stopped by SIGTERM"));
        assert!(
            multipart_uploads(&bucket).is_empty(),
            "{name}: an upload was left open"
        );
        assert!(bucket_objects(&bucket).is_empty());
        assert!(
            files_under(&disk).is_empty(),
            "{name}: {:?}",
            files_under(&disk)
        );
    }
}

#[test]
#[ignore = "needs root + btrfs"]
fn an_unmounted_backup_disk_is_an_error_and_is_never_created() {
    let h = Host::new(256);
    let disk = h.fs.path().join("mnt/backupdisk/subvault");
    let cfg = h.config("c.yaml", &upload("disk", "1d"), &local("disk", &disk));
    h.change(0);
    let out = subvault(&cfg, &["run", "--now", &day(0)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the backup disk mounted?"),
        "{}",
        text(&out)
    );
    assert!(!h.fs.path().join("mnt").exists(), "the root was created");
    assert_eq!(h.snapshot_names().len(), 1, "the snapshot is still taken");
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn an_object_read_back_with_the_wrong_size_stops_the_prune() {
    let h = Host::new(256);
    let bucket = new_bucket("readback");
    let real = h.config(
        "real.yaml",
        &upload("main", "1d"),
        &s3("main", &bucket, "", &s3_endpoint()),
    );
    h.change(0);
    ok(subvault(&real, &["run", "--now", &day(0)]));
    let before = bucket_objects(&bucket);
    // The store answers HEAD with a size that is not what was sent.
    let heads = Arc::new(AtomicU32::new(0));
    let seen = heads.clone();
    let proxy = FaultProxy::responding(Arc::new(move |head, _| {
        head.starts_with("HEAD ").then(|| {
            seen.fetch_add(1, Ordering::SeqCst);
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n".to_string()
        })
    }));
    let cfg = h.config(
        "short.yaml",
        &upload("main", "1d"),
        &s3("main", &bucket, "", &proxy.url),
    );
    h.change(1);
    let out = subvault(&cfg, &["run", "--now", &day(1)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read back"),
        "{}",
        text(&out)
    );
    assert!(heads.load(Ordering::SeqCst) >= 1);
    let now = bucket_objects(&bucket);
    assert!(
        before.keys().all(|k| now.contains_key(k)),
        "yesterday's backup was deleted after an unconfirmed upload"
    );
}
