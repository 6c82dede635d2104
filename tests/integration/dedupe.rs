//! Dedupe engine against a real loop-mounted btrfs.
//!
//! The dataset (block B = 128 KiB, random blocks R0..R63, unique blocks U*):
//! - `a.bin` R0..R63; `a_copy.bin` the same bytes written again (no reflink);
//! - `mid.bin` R0..R63 with block 30 replaced: 63 duplicate blocks;
//! - `prefix.bin` R0..R31 then 16 unique blocks: 32 duplicate blocks;
//! - `shifted.bin` 4 KiB of junk then R0..R31: the same bytes at an offset that
//!   is not a multiple of B, so fixed-block dedupe finds nothing there (no block
//!   boundary lines up; a variable/rolling-hash chunker would be needed);
//! - `sparse.bin` 16 MiB with R40..R47 at 8 MiB and holes elsewhere;
//! - `tail.bin`/`tail2.bin` 3 unique blocks + a 5000-byte tail, identical: the
//!   tail is shared because both files end there (the kernel allows an
//!   unaligned length only up to EOF of both files);
//! - ten identical 100-byte files (inline in metadata: skipped as tiny);
//! - `nocow/pg.bin` (`chattr +C` directory) R0..R63: skipped, never shared.
//!
//! Then read-only snapshot `s1`; `a.bin` is rewritten in the live subvolume with
//! `cp --reflink=never` (same bytes, new extents); read-only snapshot `s2`.
//! Files are written one fsync'ed block at a time so every block is its own
//! extent: btrfs frees an extent only when no block of it is referenced any more
//! (the "bookend" effect), and per-block extents make the expected saving exact.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{run, tool, tree_hash, TestFs};
use subvault::dedupe::{dedupe_paths, DedupeOptions, DedupeReport, SkipReason};
use subvault::progress::NoProgress;

const B: usize = 128 * 1024;

fn block(seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; B];
    rng.fill(&mut v);
    v
}

/// Write `data` as one fsync'ed block-sized write at a time (one extent per block).
fn write_blocks(path: &Path, data: &[u8], at: u64) {
    let f = File::options()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .unwrap();
    for (i, chunk) in data.chunks(B).enumerate() {
        f.write_all_at(chunk, at + (i * B) as u64).unwrap();
        f.sync_data().unwrap();
    }
}

fn r(range: std::ops::Range<u64>) -> Vec<u8> {
    range.flat_map(block).collect()
}

fn u(range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(|i| i + 1000).flat_map(block).collect()
}

struct Dataset {
    live: PathBuf,
    s1: PathBuf,
    s2: PathBuf,
}

/// Bytes on disk that sharing must free: every duplicate block once, as an
/// extent rounded up to the 4 KiB sector (the 5000-byte tail is an 8 KiB extent).
const EXPECTED_FREED: u64 = (64 + 64 + 63 + 32 + 8 + 3) as u64 * B as u64 + 8192;
/// The same duplicates counted in logical bytes.
const EXPECTED_DUP_LOGICAL: u64 = (64 + 64 + 63 + 32 + 8 + 3) as u64 * B as u64 + 5000;

fn build(fs: &TestFs) -> Dataset {
    let live = fs.subvolume("live");
    let a = r(0..64);
    write_blocks(&live.join("a.bin"), &a, 0);
    write_blocks(&live.join("a_copy.bin"), &a, 0);
    let mut mid = a.clone();
    mid[30 * B..31 * B].copy_from_slice(&u(1..2));
    write_blocks(&live.join("mid.bin"), &mid, 0);
    let mut prefix = r(0..32);
    prefix.extend(u(2..18));
    write_blocks(&live.join("prefix.bin"), &prefix, 0);
    let mut shifted = vec![0x5a; 4096];
    shifted.extend(r(0..32));
    write_blocks(&live.join("shifted.bin"), &shifted, 0);
    let sparse = live.join("sparse.bin");
    write_blocks(&sparse, &r(40..48), 8 << 20);
    File::options()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mut tail = u(20..23);
    tail.extend(vec![0xa5u8; 5000]);
    write_blocks(&live.join("tail.bin"), &tail, 0);
    write_blocks(&live.join("tail2.bin"), &tail, 0);
    for i in 0..10 {
        fs::write(live.join(format!("tiny_{i}")), [7u8; 100]).unwrap();
    }
    fs::create_dir(live.join("nocow")).unwrap();
    run(Command::new(tool("chattr"))
        .arg("+C")
        .arg(live.join("nocow")));
    write_blocks(&live.join("nocow/pg.bin"), &a, 0);

    fs::create_dir(fs.path().join("snaps")).unwrap();
    let s1 = fs.path().join("snaps/s1");
    snapshot(&live, &s1);
    run(Command::new("cp")
        .arg("--reflink=never")
        .arg(live.join("a.bin"))
        .arg(live.join("a.new")));
    fs::rename(live.join("a.new"), live.join("a.bin")).unwrap();
    let s2 = fs.path().join("snaps/s2");
    snapshot(&live, &s2);
    fs.sync();
    Dataset { live, s1, s2 }
}

fn snapshot(src: &Path, dst: &Path) {
    run(Command::new(tool("btrfs"))
        .args(["subvolume", "snapshot", "-r"])
        .arg(src)
        .arg(dst));
}

/// Data bytes used according to `btrfs filesystem df -b` (after a commit).
fn data_used(fs: &TestFs) -> u64 {
    fs.sync();
    let out = run(Command::new(tool("btrfs"))
        .args(["filesystem", "df", "-b"])
        .arg(fs.path()));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("Data,"))
        .expect("a Data line in btrfs fi df");
    let used = line.split("used=").nth(1).expect("used=").trim();
    used.parse()
        .unwrap_or_else(|_| panic!("parse used from {line:?}"))
}

fn opts(index: &Path) -> DedupeOptions {
    DedupeOptions {
        index_dir: index.to_owned(),
        low_priority: false,
        ..Default::default()
    }
}

fn trees(d: &Dataset) -> Vec<PathBuf> {
    vec![d.live.clone(), d.s1.clone(), d.s2.clone()]
}

fn hashes(d: &Dataset) -> Vec<String> {
    trees(d).iter().map(|t| tree_hash(t)).collect()
}

fn dedupe(paths: &[PathBuf], o: &DedupeOptions) -> DedupeReport {
    let rep = dedupe_paths(paths, o, &NoProgress).expect("dedupe pass");
    eprintln!("{rep}");
    rep
}

/// `btrfs send [-p parent] snap | btrfs receive dir`.
fn send_receive(snap: &Path, parent: Option<&Path>, dir: &Path) {
    let mut send = Command::new(tool("btrfs"));
    send.arg("send").arg("-q");
    if let Some(p) = parent {
        send.arg("-p").arg(p);
    }
    let mut child = send
        .arg(snap)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start btrfs send");
    let recv = Command::new(tool("btrfs"))
        .args(["receive", "-q"])
        .arg(dir)
        .stdin(child.stdout.take().unwrap())
        .output()
        .expect("run btrfs receive");
    assert!(
        child.wait().unwrap().success(),
        "btrfs send of {} failed",
        snap.display()
    );
    assert!(
        recv.status.success(),
        "btrfs receive failed: {}",
        String::from_utf8_lossy(&recv.stderr)
    );
}

#[test]
#[ignore = "needs root + btrfs"]
fn dedupe_frees_the_expected_space_and_changes_no_content() {
    let fs = TestFs::new(1024);
    let d = build(&fs);
    let index = tempfile::tempdir().unwrap();
    let before_hashes = hashes(&d);
    let used0 = data_used(&fs);

    // Dry run through the CLI: computes the duplicates, changes nothing.
    let out = run(Command::new(crate::common::subvault_bin())
        .args([
            "-c",
            "/nonexistent/config.yaml",
            "dedupe",
            "--dry-run",
            "--json",
            "--no-nice",
            "--index-dir",
        ])
        .arg(index.path())
        .args(trees(&d)));
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["bytes_deduped"], 0);
    assert_eq!(dry["ioctl_calls"], 0);
    assert_eq!(dry["duplicate_extent_bytes"], EXPECTED_DUP_LOGICAL);
    assert_eq!(
        data_used(&fs),
        used0,
        "a dry run must not change data usage"
    );
    assert_eq!(hashes(&d), before_hashes);
    assert_eq!(
        fs::read_dir(index.path()).unwrap().count(),
        0,
        "a dry run writes no index"
    );

    // Partitioned matching (tiny memory budget) finds exactly the same duplicates.
    let small = DedupeOptions {
        max_memory: 8 * 1024,
        dry_run: true,
        ..opts(index.path())
    };
    let part = dedupe(&trees(&d), &small);
    assert!(
        part.partitions > 1,
        "expected several partitions, got {}",
        part.partitions
    );
    assert_eq!(part.duplicate_extent_bytes, EXPECTED_DUP_LOGICAL);
    assert_eq!(
        part.duplicate_bytes,
        dry["duplicate_bytes"].as_u64().unwrap()
    );

    // The real pass.
    let rep = dedupe(&trees(&d), &opts(index.path()));
    let used1 = data_used(&fs);
    assert_eq!(hashes(&d), before_hashes, "content must not change");
    assert!(
        crate::common::is_readonly(&d.s1) && crate::common::is_readonly(&d.s2),
        "snapshots must stay read-only"
    );
    assert_eq!(rep.error_count, 0, "errors: {:?}", rep.errors);
    assert_eq!(rep.differs_ranges, 0);
    assert_eq!(rep.deferred_bytes, 0);
    assert_eq!(rep.duplicate_extent_bytes, EXPECTED_DUP_LOGICAL);
    // Data block groups count extents exactly and nothing else writes data here,
    // so the only slack is the sector rounding already in EXPECTED_FREED.
    assert_eq!(
        used0 - used1,
        EXPECTED_FREED,
        "space freed per btrfs filesystem df"
    );
    // The report's own figure comes from the same counters.
    assert_eq!(rep.space_freed, (used0 - used1) as i64);
    assert!(rep.bytes_deduped >= EXPECTED_DUP_LOGICAL);
    // Holes are not read; snapshots' shared extents are not re-read.
    assert!(
        rep.bytes_read < rep.bytes_scanned / 2,
        "read {} of {}",
        rep.bytes_read,
        rep.bytes_scanned
    );
    assert_eq!(
        rep.skipped.0[&SkipReason::NoDataCow].count,
        3,
        "nocow file in live, s1, s2"
    );
    assert_eq!(rep.skipped.0[&SkipReason::Tiny].count, 30);
    // The nocow file was not touched: its extents are still its own plus the snapshots'.
    let pg = fs::read(d.live.join("nocow/pg.bin")).unwrap();
    assert_eq!(pg, r(0..64));

    // send -p of the deduped snapshots restores identical trees.
    let recv = fs.path().join("recv");
    fs::create_dir(&recv).unwrap();
    send_receive(&d.s1, None, &recv);
    send_receive(&d.s2, Some(&d.s1), &recv);
    assert_eq!(tree_hash(&recv.join("s1")), before_hashes[1]);
    assert_eq!(tree_hash(&recv.join("s2")), before_hashes[2]);

    // A second pass right away: nothing to read, nothing to share, nothing freed.
    let used2 = data_used(&fs);
    let again = dedupe(&trees(&d), &opts(index.path()));
    assert_eq!(again.bytes_read, 0, "second pass re-read data");
    assert_eq!(again.bytes_deduped, 0);
    assert_eq!(again.ioctl_calls, 0);
    assert_eq!(data_used(&fs), used2);
    assert!(
        again.trees[1].unchanged && again.trees[2].unchanged,
        "snapshots come from the index"
    );
}

#[test]
#[ignore = "needs root + btrfs"]
fn a_new_snapshot_is_matched_incrementally_and_a_corrupt_index_is_rebuilt() {
    let fs = TestFs::new(1024);
    let d = build(&fs);
    let index = tempfile::tempdir().unwrap();
    dedupe(&trees(&d), &opts(index.path()));

    // New data in the live subvolume duplicating old data, then a new snapshot.
    write_blocks(&d.live.join("again.bin"), &r(0..16), 0);
    let s3 = fs.path().join("snaps/s3");
    snapshot(&d.live, &s3);
    let mut paths = trees(&d);
    paths.push(s3.clone());
    let used = data_used(&fs);
    let rep = dedupe(&paths, &opts(index.path()));
    // Only the new file is read: s3 shares the live extents, which are in the index.
    assert_eq!(
        rep.bytes_read,
        16 * B as u64,
        "incremental pass read too much"
    );
    assert_eq!(used - data_used(&fs), 16 * B as u64);
    assert_eq!(rep.space_freed, (16 * B) as i64);

    // Corrupt one index file: it is rebuilt (that tree re-read), nothing breaks.
    let idx = fs::read_dir(index.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "idx"));
    let idx = idx.expect("an index file");
    let mut bytes = fs::read(&idx).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&idx, bytes).unwrap();
    let rep = dedupe(&paths, &opts(index.path()));
    assert_eq!(rep.index_rebuilt, 1);
    assert_eq!(rep.bytes_deduped, 0);
    assert_eq!(rep.error_count, 0);
}

/// Progress that lets the blocked send reader go (creates `.0`) at the first
/// note about busy ranges.
struct ReleaseOnBusy(PathBuf);

impl subvault::progress::Progress for ReleaseOnBusy {
    fn note(&self, line: &str) {
        if line.contains("busy") {
            fs::write(&self.0, "").unwrap();
        }
    }
}

/// Waits (at most 30 s) until the `btrfs send` under the shell `shell` is
/// blocked writing into a full pipe.
fn wait_for_blocked_send(shell: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let children =
            fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "btrfs" {
                continue;
            }
            // btrfs-progs copies the kernel's stream from an internal pipe on
            // a thread of its own: any of its threads may be the blocked one.
            let tasks = fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten();
            if tasks.flatten().any(|t| {
                fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("pipe_write"))
            }) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("btrfs send never blocked on its pipe");
}

#[test]
#[ignore = "needs root + btrfs"]
fn dedupe_during_a_send_of_the_same_snapshot_leaves_the_send_intact() {
    let fs = TestFs::new(2048);
    let d = build(&fs);
    // Make s2's send stream long enough to overlap with the dedupe.
    let big_sv = fs.subvolume("big");
    write_blocks(&big_sv.join("x.bin"), &r(100..400), 0);
    write_blocks(&big_sv.join("y.bin"), &r(100..400), 0);
    let big_snap = fs.path().join("snaps/big1");
    snapshot(&big_sv, &big_snap);
    fs.sync();
    let expected = tree_hash(&big_snap);
    let index = tempfile::tempdir().unwrap();

    // A send whose reader does not read until the dedupe has reported a busy
    // range: the kernel keeps the snapshot "in send" (and refuses dedupe into
    // it with EAGAIN) while send blocks on the full pipe, so the retry path is
    // taken every time, not only when the timing happens to overlap.
    let stream = tempfile::NamedTempFile::new().unwrap();
    let release = index.path().join("release-the-reader");
    let mut send = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} send -q {} | (while [ ! -e {} ]; do sleep 0.05; done; cat > {})",
            tool("btrfs").display(),
            big_snap.display(),
            release.display(),
            stream.path().display()
        ))
        .spawn()
        .expect("start send pipeline");
    // Until send has filled the pipe it has certainly begun (the snapshot is
    // marked in send before the first byte is written).
    wait_for_blocked_send(send.id());
    let o = DedupeOptions {
        retry_for: Duration::from_secs(120),
        ..opts(index.path())
    };
    let mut paths = trees(&d);
    paths.push(big_sv.clone());
    paths.push(big_snap.clone());
    let releaser = ReleaseOnBusy(release.clone());
    let rep = dedupe_paths(&paths, &o, &releaser).expect("dedupe pass");
    eprintln!("{rep}");
    // Whatever happened, the reader must not wait forever.
    fs::write(&release, "").unwrap();
    assert!(send.wait().unwrap().success(), "the send failed");
    assert_eq!(rep.error_count, 0, "errors: {:?}", rep.errors);
    assert!(
        rep.busy_ranges > 0 && rep.retry_rounds > 0,
        "the send held the snapshot, so some range must have been busy and retried: {rep}"
    );
    assert_eq!(
        rep.deferred_bytes, 0,
        "busy ranges were retried until the send ended"
    );

    let recv = fs.path().join("recv");
    fs::create_dir(&recv).unwrap();
    let out = Command::new(tool("btrfs"))
        .args(["receive", "-q"])
        .arg(&recv)
        .stdin(File::open(stream.path()).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "receive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree_hash(&recv.join("big1")),
        expected,
        "the stream restores the snapshot"
    );
    assert_eq!(tree_hash(&big_snap), expected, "dedupe changed no content");
}
