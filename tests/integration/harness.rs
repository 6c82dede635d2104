//! Self-test of the shared test harness in `tests/common`: the loop btrfs
//! really is btrfs and leaves nothing behind, the tree digest sees every change
//! a restore could get wrong and nothing a restore legitimately changes, and
//! the S3 helpers reach the test server.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    is_mounted, loop_devices_for, run, set_xattr, tool, tree_hash, tree_manifest, TestFs,
};

/// `f_type` that statfs reports for btrfs.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

fn statfs_type(path: &Path) -> i64 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is NUL-terminated; st is a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statfs {}", path.display());
    st.f_type as i64
}

/// Sets the mtime of `path` without following a symlink, so a test can change
/// content while keeping the timestamp and prove the digest looks at content.
fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: c is NUL-terminated and times holds the two entries utimensat reads.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn mtime(path: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(path).unwrap();
    (md.mtime(), md.mtime_nsec())
}

/// Builds a small tree with every kind of entry the digest distinguishes.
fn populate(root: &Path, with_xattr: bool) {
    fs::create_dir_all(root.join("a/deep")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("a/f"), b"hello, backup\n").unwrap();
    fs::write(root.join("a/deep/zeros"), vec![0u8; 200_000]).unwrap();
    fs::write(root.join("g"), b"linked content").unwrap();
    fs::hard_link(root.join("g"), root.join("a/h")).unwrap();
    symlink("a/f", root.join("l")).unwrap();
    let fifo = CString::new(root.join("pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: fifo is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0, "mkfifo");
    if with_xattr {
        set_xattr(&root.join("g"), "user.note", b"v1");
    }
}

/// Asserts that the digest changes when one byte, a mode, an xattr or a
/// symlink target changes (timestamps kept), and returns to the original value
/// when the change is undone.
fn assert_digest_sensitive(root: &Path, with_xattr: bool) {
    let original = tree_hash(root);
    assert_eq!(tree_hash(root), original, "digest is not deterministic");

    // One byte, same size, same mtime.
    let f = root.join("a/f");
    let (sec, nsec) = mtime(&f);
    fs::write(&f, b"hellO, backup\n").unwrap();
    set_mtime(&f, sec, nsec);
    assert_ne!(tree_hash(root), original, "a changed byte went unnoticed");
    fs::write(&f, b"hello, backup\n").unwrap();
    set_mtime(&f, sec, nsec);
    assert_eq!(tree_hash(root), original, "undoing the byte change");

    // Permission bits.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(tree_hash(root), original, "a mode change went unnoticed");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(tree_hash(root), original, "undoing the mode change");

    // Symlink target, same mtime.
    let l = root.join("l");
    let (sec, nsec) = mtime(&l);
    fs::remove_file(&l).unwrap();
    symlink("g", &l).unwrap();
    set_mtime(&l, sec, nsec);
    assert_ne!(
        tree_hash(root),
        original,
        "a new symlink target went unnoticed"
    );
    fs::remove_file(&l).unwrap();
    symlink("a/f", &l).unwrap();
    set_mtime(&l, sec, nsec);
    assert_eq!(tree_hash(root), original, "undoing the symlink change");

    // Directory mtimes legitimately differ after a restore.
    set_mtime(&root.join("a"), 1_000_000_000, 0);
    assert_eq!(
        tree_hash(root),
        original,
        "a directory mtime changed the digest"
    );

    if with_xattr {
        let g = root.join("g");
        set_xattr(&g, "user.note", b"v2");
        assert_ne!(tree_hash(root), original, "an xattr change went unnoticed");
        set_xattr(&g, "user.note", b"v1");
        assert_eq!(tree_hash(root), original, "undoing the xattr change");
    }
}

fn set_permissions_for_test(root: &Path) {
    fs::set_permissions(root.join("a/f"), fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn tree_hash_sees_content_mode_and_symlink_changes_without_root() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), false);
    set_permissions_for_test(dir.path());
    assert_digest_sensitive(dir.path(), false);

    let manifest = tree_manifest(dir.path());
    assert!(
        manifest.contains(r#""a/h" file"#) && manifest.contains(r#"hardlink-of="a/h""#),
        "hard-link group missing from manifest:\n{manifest}"
    );
    assert!(manifest.contains(r#""pipe" fifo"#), "{manifest}");
}

#[test]
#[ignore = "needs root + btrfs"]
fn testfs_mounts_a_btrfs_and_cleans_up_on_drop() {
    let fs_ = TestFs::new(256);
    let mnt = fs_.path().to_path_buf();
    let image = fs_.image().to_path_buf();
    let device = fs_.device().to_string();

    assert!(is_mounted(&mnt), "{} is not a mount point", mnt.display());
    assert_eq!(statfs_type(&mnt), BTRFS_SUPER_MAGIC, "not a btrfs");
    assert!(device.starts_with("/dev/loop"), "device {device:?}");
    assert_eq!(loop_devices_for(&image), vec![device.clone()]);

    let sub = fs_.subvolume("data");
    fs::write(sub.join("file"), b"x").unwrap();
    fs_.sync();
    let show = run(Command::new(tool("btrfs"))
        .args(["subvolume", "show"])
        .arg(&sub));
    assert!(String::from_utf8_lossy(&show.stdout).contains("UUID:"));

    drop(fs_);
    assert_cleaned_up(&mnt, &image, &device);
}

/// The filesystem is unmounted, its loop device detached, image and mount
/// point removed.
fn assert_cleaned_up(mnt: &Path, image: &Path, device: &str) {
    assert!(!is_mounted(mnt), "{} still mounted", mnt.display());
    assert!(!mnt.exists(), "{} still exists", mnt.display());
    assert!(!image.exists(), "{} still exists", image.display());
    assert!(
        loop_devices_for(image).is_empty(),
        "loop device still attached to {}",
        image.display()
    );
    let backing = PathBuf::from("/sys/block")
        .join(device.trim_start_matches("/dev/"))
        .join("loop/backing_file");
    if let Ok(file) = fs::read_to_string(&backing) {
        assert!(
            !file.contains(&*image.to_string_lossy()),
            "{device} still backed by {}",
            image.display()
        );
    }
}

#[test]
#[ignore = "needs root + btrfs"]
fn testfs_cleans_up_after_a_panicking_test_and_a_busy_mount() {
    // A test that panics while the filesystem is in use.
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let fs_ = TestFs::new(200);
        tx.send((
            fs_.path().to_path_buf(),
            fs_.image().to_path_buf(),
            fs_.device().to_string(),
        ))
        .unwrap();
        fs::write(fs_.path().join("f"), b"data").unwrap();
        panic!("test failure inside a TestFs");
    })
    .join();
    assert!(result.is_err());
    let (mnt, image, device) = rx.recv().unwrap();
    assert_cleaned_up(&mnt, &image, &device);

    // A file held open keeps the mount busy: Drop falls back to a lazy
    // unmount, and the loop device goes once the last user lets go.
    let fs_ = TestFs::new(200);
    let (mnt, image, device) = (
        fs_.path().to_path_buf(),
        fs_.image().to_path_buf(),
        fs_.device().to_string(),
    );
    let held = fs::File::create(mnt.join("held")).unwrap();
    drop(fs_);
    assert!(!is_mounted(&mnt), "busy mount not detached");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !loop_devices_for(&image).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_cleaned_up(&mnt, &image, &device);
}

#[test]
#[ignore = "needs root + btrfs"]
fn tree_hash_matches_after_copy_and_send_receive_and_sees_every_change() {
    let src = TestFs::new(256);
    let sub = src.subvolume("data");
    populate(&sub, true);
    set_permissions_for_test(&sub);
    run(Command::new("chown")
        .arg("1234:5678")
        .arg(sub.join("a/deep/zeros")));
    assert_digest_sensitive(&sub, true);
    let original = tree_hash(&sub);

    // Ownership is part of the digest.
    run(Command::new("chown")
        .arg("0:0")
        .arg(sub.join("a/deep/zeros")));
    assert_ne!(tree_hash(&sub), original, "an owner change went unnoticed");
    run(Command::new("chown")
        .arg("1234:5678")
        .arg(sub.join("a/deep/zeros")));
    assert_eq!(tree_hash(&sub), original);

    // A faithful copy has the same digest (other inodes, other dir mtimes).
    let copy = src.path().join("copy");
    run(Command::new("cp").arg("-a").arg(&sub).arg(&copy));
    set_mtime(&copy, 12345, 0);
    assert_eq!(tree_manifest(&copy), tree_manifest(&sub));

    // The real use: a read-only snapshot sent and received elsewhere.
    let snap = src.path().join("snap");
    run(Command::new(tool("btrfs"))
        .args(["subvolume", "snapshot", "-r"])
        .arg(&sub)
        .arg(&snap));
    let dst = TestFs::new(256);
    let mut send = Command::new(tool("btrfs"))
        .args(["send", "-q"])
        .arg(&snap)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let receive = Command::new(tool("btrfs"))
        .args(["receive", "-q"])
        .arg(dst.path())
        .stdin(send.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(send.wait().unwrap().success(), "btrfs send failed");
    assert!(
        receive.status.success(),
        "btrfs receive failed: {}",
        String::from_utf8_lossy(&receive.stderr)
    );
    assert_eq!(
        tree_manifest(&dst.path().join("snap")),
        tree_manifest(&snap)
    );
    assert_eq!(tree_hash(&dst.path().join("snap")), original);
}

#[tokio::test]
#[ignore = "needs S3: run through integration/with-services.sh"]
async fn new_bucket_creates_a_reachable_bucket() {
    let first = crate::common::new_bucket("Harness_Test");
    let second = crate::common::new_bucket_async("harness-test").await;
    assert_ne!(first, second, "bucket names must be unique");
    assert!(first.starts_with("harness-test-"), "{first}");

    let client = crate::common::s3_client();
    client
        .head_bucket()
        .bucket(&first)
        .send()
        .await
        .expect("head the new bucket");
    client
        .put_object()
        .bucket(&first)
        .key("probe")
        .body(b"probe body".to_vec().into())
        .send()
        .await
        .expect("put an object");
    let got = client
        .get_object()
        .bucket(&first)
        .key("probe")
        .send()
        .await
        .expect("get the object back");
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"probe body");

    let listed = client
        .head_bucket()
        .bucket("subvault-no-such-bucket-for-harness")
        .send()
        .await;
    assert!(listed.is_err(), "a missing bucket must not be reachable");
}
