//! The btrfs adapter against a real btrfs on a loop device: subvolume info,
//! snapshot / rename / destroy, snapshot listing, the ctransid facts the runner
//! relies on, and send streams checked by receiving them with btrfs-progs.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{run, set_xattr, tool, tree_hash, tree_manifest, TestFs};
use chrono::{TimeZone, Utc};
use subvault::sys::btrfs::{
    create_snapshot, destroy_subvolume, is_btrfs, is_subvolume, list_snapshots,
    parse_snapshot_time, receive, rename_snapshot, send, snapshot_name, subvol_info, BtrfsError,
};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

/// `btrfs subvolume show` value of `field` (e.g. "UUID"): an independent
/// reading to check the ioctl wrapper against.
fn show_field(path: &Path, field: &str) -> String {
    let out = run(Command::new(tool("btrfs"))
        .args(["subvolume", "show"])
        .arg(path));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in `btrfs subvolume show`:\n{text}"))
        .trim()
        .to_string()
}

/// A small tree with the things a send stream must carry: contents, modes,
/// xattrs, a symlink, a hard link, an empty dir.
fn populate(root: &Path) {
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("a.txt"), b"hello\n").unwrap();
    fs::write(
        root.join("dir/b.bin"),
        (0..200_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(root.join("dir/sub/c"), b"c").unwrap();
    fs::set_permissions(root.join("dir/sub/c"), fs::Permissions::from_mode(0o640)).unwrap();
    set_xattr(&root.join("a.txt"), "user.note", b"kept");
    symlink("../a.txt", root.join("dir/link")).unwrap();
    fs::hard_link(root.join("a.txt"), root.join("dir/hard")).unwrap();
}

fn mkdir(path: PathBuf) -> PathBuf {
    fs::create_dir_all(&path).unwrap();
    path
}

#[test]
#[ignore = "needs root + btrfs"]
fn subvol_info_of_a_subvolume_and_a_snapshot() {
    let fs = TestFs::new(256);
    let src = fs.subvolume("src");
    populate(&src);
    let snaps = mkdir(fs.path().join("snaps"));

    assert!(is_btrfs(fs.path()).unwrap());
    assert!(is_subvolume(&src).unwrap());
    assert!(!is_subvolume(&src.join("dir")).unwrap());
    assert!(!is_subvolume(&snaps).unwrap());
    assert!(!is_btrfs(Path::new("/proc")).unwrap());

    let info = subvol_info(&src).unwrap();
    assert_eq!(info.name, "src");
    assert_eq!(
        info.uuid,
        Uuid::parse_str(&show_field(&src, "UUID")).unwrap()
    );
    assert_eq!(info.id.to_string(), show_field(&src, "Subvolume ID"));
    assert_eq!(info.parent_uuid, None);
    assert_eq!(info.received_uuid, None);
    assert!(!info.readonly);
    assert!(info.otransid <= info.ctransid && info.ctransid <= info.generation);

    let snap = create_snapshot(&src, &snaps, "src.snap", true).unwrap();
    assert_eq!(snap, snaps.join("src.snap"));
    let s = subvol_info(&snap).unwrap();
    assert_eq!(s.name, "src.snap");
    assert_eq!(s.uuid, Uuid::parse_str(&show_field(&snap, "UUID")).unwrap());
    assert_ne!(s.uuid, info.uuid);
    assert_eq!(s.parent_uuid, Some(info.uuid));
    assert_eq!(show_field(&snap, "Parent UUID"), info.uuid.to_string());
    assert!(s.readonly);
    assert!(show_field(&snap, "Flags").contains("readonly"));
    let age = Utc::now() - s.otime;
    assert!(
        age.num_seconds() >= 0 && age.num_seconds() < 60,
        "otime {}",
        s.otime
    );
    assert_eq!(tree_hash(&snap), tree_hash(&src));

    let rw = create_snapshot(&src, &snaps, "src.rw", false).unwrap();
    assert!(!subvol_info(&rw).unwrap().readonly);

    for not_a_subvolume in [src.join("dir"), snaps.clone()] {
        let e = subvol_info(&not_a_subvolume).unwrap_err();
        assert!(matches!(e, BtrfsError::NotSubvolume { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&not_a_subvolume.display().to_string()),
            "{e}"
        );
    }
    let e = subvol_info(Path::new("/proc")).unwrap_err();
    assert!(matches!(e, BtrfsError::NotSubvolume { .. }), "{e}");
}

/// The runner skips a snapshot when the source's ctransid equals the newest
/// snapshot's. That needs: (1) a snapshot carries its source's ctransid,
/// (2) taking a snapshot (into a dir outside the source) leaves the source's
/// ctransid alone, (3) any change to the source raises it.
#[test]
#[ignore = "needs root + btrfs"]
fn snapshot_ctransid_equals_the_sources_and_snapshots_do_not_bump_it() {
    let fs = TestFs::new(256);
    let src = fs.subvolume("src");
    populate(&src);
    let snaps = mkdir(fs.path().join("snaps"));
    fs.sync();

    let before = subvol_info(&src).unwrap();
    let s1 = create_snapshot(&src, &snaps, "s1", true).unwrap();
    let s1 = subvol_info(&s1).unwrap();
    fs.sync();
    let after = subvol_info(&src).unwrap();
    assert_eq!(
        s1.ctransid, before.ctransid,
        "snapshot ctransid = source ctransid"
    );
    assert_eq!(
        after.ctransid, before.ctransid,
        "snapshotting must not bump the source"
    );
    assert!(s1.otransid > before.ctransid);

    // A second snapshot of an unchanged source has the same ctransid.
    let s2 = subvol_info(&create_snapshot(&src, &snaps, "s2", true).unwrap()).unwrap();
    assert_eq!(s2.ctransid, s1.ctransid);
    // Destroying a snapshot does not bump it either.
    destroy_subvolume(&snaps.join("s2")).unwrap();
    fs.sync();
    assert_eq!(subvol_info(&src).unwrap().ctransid, before.ctransid);

    // Any change raises it: content, metadata only, deletion.
    let mut last = before.ctransid;
    let changes: [&dyn Fn(); 3] = [
        &|| fs::write(src.join("a.txt"), b"changed\n").unwrap(),
        &|| fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap(),
        &|| fs::remove_file(src.join("dir/sub/c")).unwrap(),
    ];
    for change in changes {
        change();
        fs.sync();
        let now = subvol_info(&src).unwrap().ctransid;
        assert!(now > last, "ctransid {now} after a change, was {last}");
        last = now;
    }
    let s3 = subvol_info(&create_snapshot(&src, &snaps, "s3", true).unwrap()).unwrap();
    assert_eq!(s3.ctransid, last);

    // A change shows in the source's ctransid at once (the kernel reports the
    // in-memory root item), not only after the transaction commits: the
    // runner needs no sync before comparing.
    fs::write(src.join("new"), b"x").unwrap();
    let unsynced = subvol_info(&src).unwrap().ctransid;
    fs.sync();
    let synced = subvol_info(&src).unwrap().ctransid;
    eprintln!("ctransid right after a write: {unsynced}, after sync: {synced} (before: {last})");
    assert!(
        unsynced > last,
        "a change is visible in ctransid before the commit"
    );
    assert_eq!(unsynced, synced);

    // A snapshot dir INSIDE the source: adding the snapshot's dir entry is a
    // change to the source, so its ctransid moves (users must keep snapshot
    // dirs outside the source, or the runner snapshots on every run).
    let inner = mkdir(src.join(".snapshots"));
    fs.sync();
    let before_inner = subvol_info(&src).unwrap().ctransid;
    create_snapshot(&src, &inner, "in", true).unwrap();
    fs.sync();
    let after_inner = subvol_info(&src).unwrap().ctransid;
    eprintln!("snapshot dir inside the source: ctransid {before_inner} -> {after_inner}");
    assert!(after_inner > before_inner);
}

#[test]
#[ignore = "needs root + btrfs"]
fn create_rename_destroy() {
    let fs = TestFs::new(256);
    let src = fs.subvolume("src");
    populate(&src);
    let snaps = mkdir(fs.path().join("snaps"));

    let a = create_snapshot(&src, &snaps, "a", true).unwrap();
    // An existing name is never replaced.
    let e = create_snapshot(&src, &snaps, "a", true).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot snapshot") && msg.contains(&snaps.display().to_string()),
        "{msg}"
    );
    fs::write(snaps.join("file"), b"x").unwrap();
    assert!(create_snapshot(&src, &snaps, "file", true).is_err());
    assert_eq!(fs::read(snaps.join("file")).unwrap(), b"x");
    // Bad names and non-subvolume sources are refused before the kernel.
    for bad in ["", "..", "x/y"] {
        let e = create_snapshot(&src, &snaps, bad, true).unwrap_err();
        assert!(matches!(e, BtrfsError::Invalid { .. }), "{e}");
    }
    let e = create_snapshot(&src.join("dir"), &snaps, "d", true).unwrap_err();
    assert!(matches!(e, BtrfsError::NotSubvolume { .. }), "{e}");
    assert!(!snaps.join("d").exists());

    // Rename, refusing to overwrite.
    let b = create_snapshot(&src, &snaps, "b", true).unwrap();
    let b_uuid = subvol_info(&b).unwrap().uuid;
    let e = rename_snapshot(&b, "a").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    assert_ne!(subvol_info(&a).unwrap().uuid, b_uuid);
    let c = rename_snapshot(&b, "c").unwrap();
    assert_eq!(c, snaps.join("c"));
    assert!(!b.exists());
    assert_eq!(subvol_info(&c).unwrap().uuid, b_uuid);
    assert_eq!(subvol_info(&c).unwrap().name, "c");

    // Destroy: read-only snapshots go; plain dirs and symlinks are refused.
    destroy_subvolume(&c).unwrap();
    assert!(!c.exists());
    let plain = mkdir(snaps.join("plain"));
    let e = destroy_subvolume(&plain).unwrap_err();
    assert!(matches!(e, BtrfsError::NotSubvolume { .. }), "{e}");
    assert!(plain.exists());
    symlink(&a, snaps.join("link")).unwrap();
    let e = destroy_subvolume(&snaps.join("link")).unwrap_err();
    assert!(matches!(e, BtrfsError::NotSubvolume { .. }), "{e}");
    assert!(a.exists());
    let e = destroy_subvolume(&snaps.join("missing")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    destroy_subvolume(&a).unwrap();
    assert!(!a.exists());
    assert!(src.join("a.txt").exists());
}

#[test]
#[ignore = "needs root + btrfs"]
fn list_snapshots_sees_only_read_only_snapshots_of_the_source_directly_in_the_dir() {
    let fs = TestFs::new(256);
    let src = fs.subvolume("src");
    let other = fs.subvolume("other");
    populate(&src);
    let snaps = mkdir(fs.path().join("snaps"));
    let src_uuid = subvol_info(&src).unwrap().uuid;
    let started = Utc::now() - chrono::Duration::seconds(2);

    // Ours, named with a time far from the btrfs creation time.
    let t_ours = Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap();
    let ours = create_snapshot(&src, &snaps, &snapshot_name("src", t_ours), true).unwrap();
    fs::write(src.join("a.txt"), b"v2").unwrap();
    fs.sync();
    // btrfs2s3's name scheme.
    let b2s3 = create_snapshot(&src, &snaps, "src.2021-06-01T12:00:00-07:00.99", true).unwrap();
    fs::write(src.join("a.txt"), b"v3").unwrap();
    fs.sync();
    // A name without a time: falls back to otime.
    let nameless = create_snapshot(&src, &snaps, "manual", true).unwrap();

    // Everything below must be ignored (and left alone).
    let rw = create_snapshot(&src, &snaps, &snapshot_name("src", Utc::now()), false).unwrap();
    let of_other = create_snapshot(&other, &snaps, "other.snap", true).unwrap();
    let nested = mkdir(snaps.join("nested"));
    let deep = create_snapshot(&src, &nested, "src.deep", true).unwrap();
    let plain_subvol = fs.subvolume("snaps/plain-subvol");
    fs::write(snaps.join("file"), b"x").unwrap();
    symlink(&ours, snaps.join("link-to-ours")).unwrap();
    // A snapshot of a snapshot has the snapshot, not the source, as parent.
    let snap_of_snap = create_snapshot(&ours, &snaps, "snap-of-snap", true).unwrap();

    let list = list_snapshots(&snaps, src_uuid, "src").unwrap();
    let paths: Vec<&Path> = list.iter().map(|s| s.path.as_path()).collect();
    assert_eq!(paths, [ours.as_path(), b2s3.as_path(), nameless.as_path()]);
    assert!(
        list.windows(2).all(|w| w[0].ctransid < w[1].ctransid),
        "{list:?}"
    );
    for s in &list {
        let info = subvol_info(&s.path).unwrap();
        assert_eq!((s.uuid, s.ctransid), (info.uuid, info.ctransid));
        assert_eq!(s.parent_uuid, src_uuid);
        assert!(!s.planned);
    }
    assert_eq!(list[0].time, t_ours);
    assert_eq!(
        list[1].time,
        Utc.with_ymd_and_hms(2021, 6, 1, 19, 0, 0).unwrap()
    );
    assert_eq!(list[2].time, subvol_info(&nameless).unwrap().otime);
    assert!(list[2].time >= started && list[2].time <= Utc::now());

    for untouched in [&rw, &of_other, &deep, &plain_subvol, &snap_of_snap] {
        assert!(is_subvolume(untouched).unwrap(), "{}", untouched.display());
    }
    assert!(snaps.join("file").exists());
    assert!(list_snapshots(&snaps, Uuid::from_u128(0x5ca1ab1e), "src")
        .unwrap()
        .is_empty());
    assert_eq!(list_snapshots(&nested, src_uuid, "src").unwrap().len(), 1);
    // Not created yet (the first run creates it): no snapshots, not an error.
    assert!(list_snapshots(&fs.path().join("missing"), src_uuid, "src")
        .unwrap()
        .is_empty());
    // A file where the directory should be is still an error naming it.
    let e = list_snapshots(&snaps.join("file"), src_uuid, "src").unwrap_err();
    assert!(e.to_string().contains("file"), "{e}");
}

/// Sends `snap` (relative to `parent`) into `btrfs receive` in `dest` and
/// returns the received subvolume's path and the stream length.
async fn send_into(snap: &Path, parent: Option<&Path>, dest: &Path) -> (PathBuf, u64) {
    let mut stream = send(snap, parent).unwrap();
    let mut rx = receive(dest).unwrap();
    let copied = tokio::io::copy(&mut stream, &mut rx).await.unwrap();
    let stats = stream.finish().await.unwrap();
    assert_eq!(stats.bytes, copied);
    let received = rx.finish().await.unwrap();
    (received, copied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs"]
async fn send_full_and_incremental_round_trip_through_btrfs_receive() {
    let fs = TestFs::new(512);
    let src = fs.subvolume("src");
    populate(&src);
    fs::write(src.join("big"), vec![0x5au8; 8 << 20]).unwrap();
    let snaps = mkdir(fs.path().join("snaps"));
    let dest = mkdir(fs.path().join("restore"));

    let s1 = create_snapshot(&src, &snaps, "s1", true).unwrap();
    let (r1, full_len) = send_into(&s1, None, &dest).await;
    assert_eq!(r1, dest.join("s1"));
    assert_eq!(tree_manifest(&r1), tree_manifest(&s1));
    assert_eq!(tree_hash(&r1), tree_hash(&s1));
    let r1_info = subvol_info(&r1).unwrap();
    assert_eq!(r1_info.received_uuid, Some(subvol_info(&s1).unwrap().uuid));
    assert!(full_len > 8 << 20);

    // Changes of every kind, then an incremental stream.
    fs::write(src.join("a.txt"), b"new content\n").unwrap();
    fs::remove_file(src.join("dir/sub/c")).unwrap();
    fs::write(src.join("dir/new"), b"added").unwrap();
    fs::set_permissions(src.join("dir/b.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    set_xattr(&src.join("dir/new"), "user.x", b"y");
    fs::rename(src.join("empty"), src.join("moved")).unwrap();
    let s2 = create_snapshot(&src, &snaps, "s2", true).unwrap();
    let (r2, incr_len) = send_into(&s2, Some(&s1), &dest).await;
    assert_eq!(r2, dest.join("s2"));
    assert_eq!(tree_manifest(&r2), tree_manifest(&s2));
    assert_ne!(tree_hash(&r2), tree_hash(&r1));
    assert!(
        incr_len < full_len / 10,
        "incremental {incr_len} vs full {full_len}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs"]
async fn send_failures_are_errors() {
    let fs = TestFs::new(256);
    let src = fs.subvolume("src");
    let other = fs.subvolume("other");
    populate(&src);
    fs::write(src.join("big"), vec![1u8; 16 << 20]).unwrap();
    let snaps = mkdir(fs.path().join("snaps"));
    let s1 = create_snapshot(&src, &snaps, "s1", true).unwrap();
    let o1 = create_snapshot(&other, &snaps, "o1", true).unwrap();
    let rw = create_snapshot(&src, &snaps, "rw", false).unwrap();

    let e = send(&rw, None).unwrap_err();
    assert!(e.to_string().contains("writable"), "{e}");
    let e = send(&s1, Some(&rw)).unwrap_err();
    assert!(e.to_string().contains("writable"), "{e}");
    let e = send(&s1, Some(&o1)).unwrap_err();
    assert!(
        e.to_string()
            .contains("not a snapshot of the same subvolume"),
        "{e}"
    );
    let e = send(&src.join("dir"), None).unwrap_err();
    assert!(matches!(e, BtrfsError::NotSubvolume { .. }), "{e}");

    // A parent on another filesystem (its subvolume id could name an
    // unrelated subvolume here) is refused.
    let fs2 = TestFs::new(256);
    let src2 = fs2.subvolume("src");
    let far = create_snapshot(&src2, fs2.path(), "far", true).unwrap();
    let e = send(&s1, Some(&far)).unwrap_err();
    assert!(e.to_string().contains("another filesystem"), "{e}");

    // A stream abandoned part way: finish reports the kernel's EPIPE even
    // though the reader saw no error.
    let mut stream = send(&s1, None).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    stream.read_exact(&mut buf).await.unwrap();
    let e = stream.finish().await.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "{e}");
    assert!(e.to_string().contains("cannot send"), "{e}");

    // A stream btrfs receive rejects fails in ReceiveProcess::finish.
    let dest = mkdir(fs.path().join("restore"));
    let mut rx = receive(&dest).unwrap();
    use tokio::io::AsyncWriteExt;
    let _ = rx.write_all(b"this is not a btrfs send stream").await;
    let e = rx.finish().await.unwrap_err();
    assert!(matches!(e, BtrfsError::Process { .. }), "{e}");
    assert!(e.to_string().contains("btrfs receive into"), "{e}");

    // An incremental stream whose parent the receiving filesystem lacks
    // fails there too. (Receiving on the same filesystem would find s1
    // itself by its uuid.)
    let s2 = create_snapshot(&src, &snaps, "s2", true).unwrap();
    let mut stream = send(&s2, Some(&s1)).unwrap();
    let mut rx = receive(fs2.path()).unwrap();
    let _ = tokio::io::copy(&mut stream, &mut rx).await;
    let _ = stream.finish().await;
    let e = rx.finish().await.unwrap_err();
    assert!(matches!(e, BtrfsError::Process { .. }), "{e}");
    eprintln!("{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs"]
async fn dropping_a_send_midway_ends_the_send() {
    let fs = TestFs::new(256);
    let src = fs.subvolume("src");
    fs::write(src.join("big"), vec![7u8; 32 << 20]).unwrap();
    let snaps = mkdir(fs.path().join("snaps"));
    let s1 = create_snapshot(&src, &snaps, "s1", true).unwrap();

    let mut stream = send(&s1, None).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    stream.read_exact(&mut buf).await.unwrap();
    drop(stream);
    // The kernel refuses to delete a subvolume while a send of it runs
    // (EPERM), so a successful delete proves the send thread finished.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match destroy_subvolume(&s1) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("still sending? {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("send still running 10 s after drop: {e}"),
        }
    }
    assert!(!s1.exists());
    // The name helper and parser agree on real names too.
    let t = Utc::now();
    let name = snapshot_name("src", t);
    assert_eq!(
        parse_snapshot_time("src", &name).unwrap().timestamp(),
        t.timestamp()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs"]
async fn a_truncated_stream_is_aborted_not_finalized() {
    use tokio::io::AsyncWriteExt;
    let fs = TestFs::new(256);
    let src = fs.subvolume("src");
    fs::write(src.join("big"), vec![3u8; 8 << 20]).unwrap();
    let snaps = mkdir(fs.path().join("snaps"));
    let s1 = create_snapshot(&src, &snaps, "s1", true).unwrap();
    let mut stream = send(&s1, None).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    stream.finish().await.unwrap();
    // Cut at the first command boundary past the middle (send stream v1:
    // 17-byte header, then commands of u32 length, u16 type, u32 crc, data),
    // so the stream is well formed up to the cut and only lacks its end.
    let mut cut = 17;
    while cut < bytes.len() / 2 {
        cut += 10 + u32::from_le_bytes(bytes[cut..cut + 4].try_into().unwrap()) as usize;
    }
    assert!(cut < bytes.len(), "no command boundary found");
    let half = &bytes[..cut];

    // abort: the partial subvolume is never marked as received.
    let a = mkdir(fs.path().join("a"));
    let mut rx = receive(&a).unwrap();
    rx.write_all(half).await.unwrap();
    rx.abort().await.unwrap();
    if a.join("s1").exists() {
        let info = subvol_info(&a.join("s1")).unwrap();
        assert_eq!(info.received_uuid, None);
        assert!(!info.readonly);
    }

    // finish on a truncated stream: with `-e`, btrfs receive reports the
    // missing end command as an error and does not finalize.
    let b = mkdir(fs.path().join("b"));
    let mut rx = receive(&b).unwrap();
    rx.write_all(half).await.unwrap();
    let result = rx.finish().await;
    let finalized =
        b.join("s1").exists() && subvol_info(&b.join("s1")).unwrap().received_uuid.is_some();
    eprintln!("finish after a truncated stream: {result:?}, finalized: {finalized}");
    assert!(matches!(result, Err(BtrfsError::Process { .. })));
    assert!(!finalized);
}
