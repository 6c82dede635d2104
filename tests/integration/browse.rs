//! `restore --path`, `ls`, `mount`/`umount` and `cache clean` on real btrfs
//! and a real S3 server: a backup read without a btrfs target, through the
//! browse cache image.
//!
//! One small fixture per test: a source with every kind of entry, backed up
//! twice (a full on 2026-01-05 and an incremental on 2026-01-06) and changed
//! after each, so the restored point differs from the source now and from
//! the other backup.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{
    expect_success as ok, is_mounted, loop_devices_for, new_bucket, output_text as text, run,
    s3_endpoint, set_xattr, subvault_command, test_root, tool, tree_manifest, TestFs,
};

const T1: &str = "2026-01-05T10:00:00Z";
const T2: &str = "2026-01-06T10:00:00Z";

/// `img` or `mnt` under the test root: what a killed test leaves there
/// (cache and ext4 images, mount points) is detached and unmounted by
/// `integration/with-services.sh`'s teardown, like `TestFs`'s.
fn harness_dir(kind: &str) -> PathBuf {
    let dir = test_root().join(kind);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A backed-up source, its config and its browse cache directory. Dropping it
/// unmounts what a failed test left mounted and cleans the cache.
struct Fixture {
    fs: TestFs,
    source: PathBuf,
    config: PathBuf,
    cache: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let fs = TestFs::new(512);
        let source = fs.subvolume("data");
        fs::create_dir(fs.path().join("snapshots")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let bucket = new_bucket("browse");
        fs::write(
            &config,
            format!(
                "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n      - id: main\n        preserve: 1y 3m 30d\nremotes:\n  - id: main\n    s3:\n      bucket: {bucket}\n      endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n",
                source.display(),
                fs.path().join("snapshots").display(),
                s3_endpoint()
            ),
        )
        .unwrap();
        let cache = tempfile::tempdir_in(harness_dir("img")).unwrap();
        let f = Fixture {
            fs,
            source,
            config,
            cache,
            mounts: Vec::new(),
            _dir: dir,
        };
        build_source(&f.source);
        ok(f.subvault(&["run", "--now", T1]));
        // The second point differs from the first in content, metadata and
        // entries; the source changes again after it.
        fs::write(f.source.join("plain"), "plain text, second version\n").unwrap();
        fs::write(f.source.join("dir/sub/secret"), "rotated").unwrap();
        fs::remove_file(f.source.join("dir/tool")).unwrap();
        fs::write(f.source.join("dir/new"), "new on day two").unwrap();
        ok(f.subvault(&["run", "--now", T2]));
        fs::write(f.source.join("plain"), "plain text, after the backups\n").unwrap();
        fs::remove_dir_all(f.source.join("dir/sub")).unwrap();
        f
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = subvault_command(&self.config, args);
        cmd.env("SUBVAULT_BROWSE_CACHE", self.cache.path())
            .env("SUBVAULT_BROWSE_CACHE_MAX", "1G");
        cmd
    }

    fn subvault(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("start subvault")
    }

    /// The local snapshot of the backup at `time`: the source as it was.
    fn snapshot(&self, time: &str) -> PathBuf {
        let p = self
            .fs
            .path()
            .join("snapshots")
            .join(format!("data.{time}"));
        assert!(p.is_dir(), "no snapshot {}", p.display());
        p
    }

    fn image(&self) -> PathBuf {
        self.cache.path().join("main.img")
    }

    /// The cache image stays, but is not mounted: no loop device holds it.
    fn assert_cache_released(&self) {
        assert!(self.image().exists(), "the image stays as the cache");
        assert_eq!(loop_devices_for(&self.image()), Vec::<String>::new());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for m in &self.mounts {
            if is_mounted(m) {
                let _ = Command::new(tool("umount")).arg("-l").arg(m).status();
            }
        }
        let _ = self.subvault(&["cache", "clean"]);
        for dev in loop_devices_for(&self.image()) {
            let _ = Command::new(tool("losetup")).args(["-d", &dev]).status();
        }
    }
}

/// Every kind of entry `restore --path` must carry over.
fn build_source(src: &Path) {
    fs::write(src.join("plain"), "plain text\n").unwrap();
    set_xattr(&src.join("plain"), "user.color", b"blue");
    fs::create_dir_all(src.join("dir/sub/deeper")).unwrap();
    fs::create_dir(src.join("dir/empty-dir")).unwrap();
    fs::write(src.join("dir/sub/secret"), "s3cr3t").unwrap();
    fs::set_permissions(
        src.join("dir/sub/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::chown(src.join("dir/sub/secret"), Some(1234), Some(5678)).unwrap();
    fs::write(src.join("dir/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("dir/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("dir/sub"), fs::Permissions::from_mode(0o2770)).unwrap();
    std::os::unix::fs::lchown(src.join("dir"), Some(42), Some(43)).unwrap();
    set_xattr(&src.join("dir"), "user.empty", b"");
    set_xattr(&src.join("dir/sub/deeper"), "user.note", b"deep");
    std::os::unix::fs::symlink("../plain", src.join("dir/link")).unwrap();
    // Absolute: restored as a link, never followed into this host's /etc.
    std::os::unix::fs::symlink("/etc/passwd", src.join("dir/abs-link")).unwrap();
    std::os::unix::fs::lchown(src.join("dir/abs-link"), Some(7), Some(8)).unwrap();
    fs::write(src.join("dir/hard1"), "linked twice").unwrap();
    fs::hard_link(src.join("dir/hard1"), src.join("dir/sub/deeper/hard2")).unwrap();
    fs::hard_link(src.join("plain"), src.join("dir/hardlink")).unwrap();
    let f = fs::File::create(src.join("dir/sparse")).unwrap();
    f.set_len(16 << 20).unwrap();
    drop(f);
    use std::io::{Seek, Write};
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(src.join("dir/sparse"))
        .unwrap();
    f.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
    f.write_all(b"an island in the hole").unwrap();
    drop(f);
    // Distinct atimes and mtimes, far from now.
    for (path, atime, mtime) in [
        (
            "plain",
            "2020-02-02 02:02:02.123456789",
            "2021-03-03 03:03:03.5",
        ),
        ("dir/hard1", "2019-01-01 00:00:00", "2019-06-01 00:00:00"),
        (
            "dir/sub/secret",
            "2018-01-01 00:00:00",
            "2018-05-05 05:05:05",
        ),
    ] {
        run(Command::new("touch")
            .args(["-a", "-d", atime])
            .arg(src.join(path)));
        run(Command::new("touch")
            .args(["-m", "-d", mtime])
            .arg(src.join(path)));
    }
    run(Command::new("touch")
        .args(["-h", "-m", "-d", "2017-07-07 07:07:07"])
        .arg(src.join("dir/link")));
    run(Command::new("touch")
        .args(["-m", "-d", "2016-06-06 06:06:06"])
        .arg(src.join("dir")));
}

/// A filesystem that is not btrfs, mounted for one test and gone on drop.
struct OtherFs {
    mnt: tempfile::TempDir,
    image: Option<PathBuf>,
}

impl OtherFs {
    fn tmpfs() -> OtherFs {
        let mnt = tempfile::tempdir_in(harness_dir("mnt")).unwrap();
        run(Command::new(tool("mount"))
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(mnt.path()));
        OtherFs { mnt, image: None }
    }

    fn ext4() -> OtherFs {
        let mnt = tempfile::tempdir_in(harness_dir("mnt")).unwrap();
        let image = harness_dir("img").join(format!(
            "{}.ext4.img",
            mnt.path().file_name().unwrap().to_string_lossy()
        ));
        let f = fs::File::create(&image).unwrap();
        f.set_len(128 << 20).unwrap();
        drop(f);
        let fs = OtherFs {
            mnt,
            image: Some(image.clone()),
        };
        run(Command::new(tool("mkfs.ext4"))
            .args(["-q", "-F"])
            .arg(&image));
        run(Command::new(tool("mount"))
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&image)
            .arg(fs.mnt.path()));
        fs
    }

    fn path(&self) -> &Path {
        self.mnt.path()
    }
}

impl Drop for OtherFs {
    fn drop(&mut self) {
        if is_mounted(self.mnt.path()) {
            let _ = Command::new(tool("umount")).arg(self.mnt.path()).status();
        }
        if let Some(image) = &self.image {
            for dev in loop_devices_for(image) {
                let _ = Command::new(tool("losetup")).args(["-d", &dev]).status();
            }
            let _ = fs::remove_file(image);
        }
    }
}

fn same_times(a: &Path, b: &Path) {
    let (ma, mb) = (
        fs::symlink_metadata(a).unwrap(),
        fs::symlink_metadata(b).unwrap(),
    );
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec()),
        (mb.mtime(), mb.mtime_nsec()),
        "mtime of {}",
        a.display()
    );
    assert_eq!(
        (ma.atime(), ma.atime_nsec()),
        (mb.atime(), mb.atime_nsec()),
        "atime of {}",
        a.display()
    );
}

/// `restore --at T1 --path` of a tree and a file onto `target`, compared with
/// the snapshot of T1.
fn restore_onto(f: &Fixture, target: &Path) {
    let snap = f.snapshot(T1);
    let to = target.join("restored");
    let out = ok(f.subvault(&[
        "restore",
        "--at",
        T1,
        "--to",
        to.to_str().unwrap(),
        "--path",
        "/dir",
        "--path",
        "plain",
    ]));
    assert!(text(&out).contains(&format!("data.{T1}")), "{}", text(&out));
    // Times first: reading a file below moves its atime (relatime).
    for rel in ["plain", "dir/hard1", "dir/sub/secret", "dir/link", "dir"] {
        same_times(&to.join(rel), &snap.join(rel));
    }
    // Content, modes, owners, mtimes, xattrs, symlink targets, hard links
    // inside dir (hard1 <-> sub/deeper/hard2).
    assert_eq!(
        tree_manifest(&to.join("dir")),
        tree_manifest(&snap.join("dir"))
    );
    assert_eq!(fs::read(to.join("plain")).unwrap(), b"plain text\n");
    assert_ne!(
        fs::read(to.join("plain")).unwrap(),
        fs::read(f.source.join("plain")).unwrap()
    );
    // plain and dir/hardlink, copied by one invocation, stay one inode.
    let (p, h) = (
        fs::metadata(to.join("plain")).unwrap(),
        fs::metadata(to.join("dir/hardlink")).unwrap(),
    );
    assert_eq!((p.ino(), p.nlink()), (h.ino(), 2));
    assert_eq!(
        crate::common::xattrs(&to.join("plain")),
        vec![(b"user.color".to_vec(), b"blue".to_vec())]
    );
    assert_eq!(
        fs::read_link(to.join("dir/abs-link")).unwrap(),
        PathBuf::from("/etc/passwd")
    );
    let sparse = fs::metadata(to.join("dir/sparse")).unwrap();
    assert_eq!(sparse.len(), 16 << 20);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file takes {} bytes",
        sparse.blocks() * 512
    );
    // Only what was asked for, and no staging directory left.
    let mut top: Vec<_> = fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, vec!["dir", "plain"]);

    // One file deep in the tree: its parents come along with their attributes.
    let one = target.join("one");
    ok(f.subvault(&[
        "restore",
        "--at",
        T1,
        "--to",
        one.to_str().unwrap(),
        "--path",
        "dir/sub/secret",
    ]));
    let secret = fs::metadata(one.join("dir/sub/secret")).unwrap();
    assert_eq!(fs::read(one.join("dir/sub/secret")).unwrap(), b"s3cr3t");
    assert_eq!(
        (secret.mode() & 0o7777, secret.uid(), secret.gid()),
        (0o600, 1234, 5678)
    );
    let d = fs::metadata(one.join("dir")).unwrap();
    assert_eq!((d.uid(), d.gid()), (42, 43));
    assert_eq!(
        fs::metadata(one.join("dir/sub")).unwrap().mode() & 0o7777,
        0o2770
    );
    assert_eq!(fs::read_dir(one.join("dir")).unwrap().count(), 1);
    f.assert_cache_released();
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn restore_path_onto_tmpfs_and_ext4_equals_the_source_at_that_time() {
    let f = Fixture::new();
    let tmpfs = OtherFs::tmpfs();
    restore_onto(&f, tmpfs.path());
    let ext4 = OtherFs::ext4();
    restore_onto(&f, ext4.path());

    // The newer point, from the warm cache (its parent is reused).
    let to = tmpfs.path().join("t2");
    let out = ok(f.subvault(&[
        "restore",
        "--at",
        T2,
        "--to",
        to.to_str().unwrap(),
        "--path",
        "dir",
    ]));
    assert_eq!(
        tree_manifest(&to.join("dir")),
        tree_manifest(&f.snapshot(T2).join("dir"))
    );
    assert!(text(&out).contains("1 step(s) received"), "{}", text(&out));
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_missing_or_escaping_path_fails_naming_it_and_writes_nothing() {
    let f = Fixture::new();
    let to = tempfile::tempdir_in(test_root()).unwrap();
    let dir = to.path().to_str().unwrap();
    let out = f.subvault(&[
        "restore", "--at", T1, "--to", dir, "--path", "plain", "--path", "dir/new",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("subvault:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    // dir/new exists now and in T2, but not at T1.
    assert!(lines[0].contains("dir/new"), "{err}");
    assert!(lines[0].contains(&format!("data.{T1}")), "{err}");
    assert_eq!(fs::read_dir(to.path()).unwrap().count(), 0);

    for bad in ["../etc/passwd", "dir/../../x"] {
        let out = f.subvault(&["restore", "--at", T1, "--to", dir, "--path", bad]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(bad), "{}", text(&out));
    }
    // A symlink on the way is not followed out of the backup.
    let out = f.subvault(&["restore", "--at", T1, "--to", dir, "--path", "dir/link/x"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("dir/link"), "{}", text(&out));
    assert_eq!(fs::read_dir(to.path()).unwrap().count(), 0);
    f.assert_cache_released();
}

/// The listing of `root` (or of `sub` under it), made with GNU find: one
/// line per entry as `ls` documents it, sorted.
fn find_listing(root: &Path, sub: &str) -> Vec<String> {
    let start = if sub.is_empty() {
        ".".to_string()
    } else {
        sub.to_string()
    };
    let mut cmd = Command::new("find");
    cmd.current_dir(root).arg(&start);
    if sub.is_empty() {
        cmd.args(["-mindepth", "1"]);
    }
    let out = run(cmd.args(["-printf", "%M %U:%G %s %T@ %p\\0%l\\n"]));
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (head, link) = l.split_once('\0').unwrap();
            let mut f: Vec<&str> = head.splitn(5, ' ').collect();
            let secs: i64 = f[3].split('.').next().unwrap().parse().unwrap();
            let time = chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            f[3] = &time;
            let path = f[4].strip_prefix("./").unwrap_or(f[4]);
            let mut line = format!("{} {} {} {} {path}", f[0], f[1], f[2], f[3]);
            if head.starts_with('l') {
                line += &format!(" -> {link}");
            }
            line
        })
        .collect();
    lines.sort();
    lines
}

fn sorted_lines(out: &Output) -> Vec<String> {
    let mut l: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    l.sort();
    l
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn ls_lists_the_backup_like_the_source_at_that_time() {
    let f = Fixture::new();
    let out = ok(f.subvault(&["ls", "--at", T1]));
    let want = find_listing(&f.snapshot(T1), "");
    assert!(want.len() > 10, "{want:?}");
    assert_eq!(sorted_lines(&out), want);

    let out = ok(f.subvault(&["ls", "--at", T2, "/dir/sub"]));
    assert_eq!(sorted_lines(&out), find_listing(&f.snapshot(T2), "dir/sub"));

    let out = ok(f.subvault(&["ls", "--at", T2, "--json", "dir"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), find_listing(&f.snapshot(T2), "dir").len());
    let new = entries.iter().find(|e| e["path"] == "dir/new").unwrap();
    assert_eq!(new["size"], 14);
    assert_eq!(new["type"], "file");

    let out = f.subvault(&["ls", "--at", T1, "dir/new"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("dir/new"), "{}", text(&out));
    f.assert_cache_released();
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn mount_shows_the_backup_read_only_and_umount_and_clean_leave_nothing() {
    let mut f = Fixture::new();
    let mp = tempfile::tempdir_in(harness_dir("mnt")).unwrap();
    let mp_path = fs::canonicalize(mp.path()).unwrap();
    f.mounts.push(mp_path.clone());
    let full = mp_path.join("not-empty");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), "x").unwrap();
    let out = f.subvault(&["mount", "--at", T1, full.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    fs::remove_dir_all(&full).unwrap();

    let m = mp_path.to_str().unwrap();
    ok(f.subvault(&["mount", "--at", T1, m]));
    assert!(is_mounted(&mp_path));
    assert_eq!(tree_manifest(&mp_path), tree_manifest(&f.snapshot(T1)));
    let err = fs::write(mp_path.join("plain"), "overwrite").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(loop_devices_for(&f.image()).len(), 1);
    // The cache is in use: clean refuses and changes nothing.
    let out = f.subvault(&["cache", "clean"]);
    assert!(!out.status.success());
    assert!(text(&out).contains(m), "{}", text(&out));
    assert!(is_mounted(&mp_path));

    ok(f.subvault(&["umount", m]));
    assert!(!is_mounted(&mp_path));
    f.assert_cache_released();

    // A plain umount leaves the cache mounted (nothing tells subvault); the
    // next browse command finds no mount of it and releases it.
    ok(f.subvault(&["mount", "--at", T2, m]));
    assert_eq!(loop_devices_for(&f.image()).len(), 1);
    run(Command::new(tool("umount")).arg(&mp_path));
    assert_eq!(loop_devices_for(&f.image()).len(), 1);
    ok(f.subvault(&["ls", "--at", T2, "plain"]));
    f.assert_cache_released();

    let out = ok(f.subvault(&["cache", "clean"]));
    assert!(text(&out).contains("main.img"), "{}", text(&out));
    assert!(!f.image().exists());
}

/// Two sources on one remote, 40 MiB of random data each, and a 128 MiB
/// cache: the second chain does not fit beside the first, which is evicted
/// (and downloaded again when asked for once more).
#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_full_cache_evicts_the_oldest_unused_chain() {
    use std::io::Read;
    let fs = TestFs::new(512);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let bucket = new_bucket("browse-evict");
    let mut yaml = String::from("timezone: UTC\nsources:\n");
    for name in ["a", "b"] {
        let src = fs.subvolume(name);
        let snaps = fs.path().join(format!("{name}-snapshots"));
        fs::create_dir(&snaps).unwrap();
        let mut random = fs::File::open("/dev/urandom").unwrap().take(40 << 20);
        std::io::copy(
            &mut random,
            &mut fs::File::create(src.join("random")).unwrap(),
        )
        .unwrap();
        fs::write(src.join("note"), format!("source {name}")).unwrap();
        yaml += &format!(
            "  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n      - id: main\n        preserve: 1y\n",
            src.display(),
            snaps.display()
        );
    }
    yaml += &format!(
        "remotes:\n  - id: main\n    s3:\n      bucket: {bucket}\n      endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n",
        s3_endpoint()
    );
    fs::write(&config, yaml).unwrap();
    ok(subvault_command(&config, &["run", "--now", T1])
        .output()
        .unwrap());
    let cache = tempfile::tempdir_in(harness_dir("img")).unwrap();
    let image = cache.path().join("main.img");
    let browse = |source: &str, to: &Path| {
        subvault_command(
            &config,
            &[
                "restore",
                "--source",
                source,
                "--to",
                to.to_str().unwrap(),
                "--path",
                "note",
            ],
        )
        .env("SUBVAULT_BROWSE_CACHE", cache.path())
        .env("SUBVAULT_BROWSE_CACHE_MAX", "128M")
        .output()
        .unwrap()
    };
    let out_dir = tempfile::tempdir_in(test_root()).unwrap();
    let _guard = scopeguard(&config, cache.path());
    let mut outputs = Vec::new();
    for (i, source) in ["a", "b", "a"].iter().enumerate() {
        let to = out_dir.path().join(i.to_string());
        let out = browse(source, &to);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            fs::read_to_string(to.join("note")).unwrap(),
            format!("source {source}")
        );
        outputs.push(text(&out));
    }
    assert!(!outputs[0].contains("evicted"), "{}", outputs[0]);
    assert!(
        outputs[1].contains(&format!("evicted a.{T1}")),
        "{}",
        outputs[1]
    );
    // a was evicted, so it is downloaded again (and b goes in its turn).
    assert!(outputs[2].contains("1 step(s) received"), "{}", outputs[2]);
    assert!(
        outputs[2].contains(&format!("evicted b.{T1}")),
        "{}",
        outputs[2]
    );
    // The sparse image never takes more than its size.
    let md = fs::metadata(&image).unwrap();
    assert_eq!(md.len(), 128 << 20);
    assert!(md.blocks() * 512 <= 128 << 20);
    assert!(loop_devices_for(&image).is_empty());
    ok(subvault_command(&config, &["cache", "clean"])
        .env("SUBVAULT_BROWSE_CACHE", cache.path())
        .output()
        .unwrap());
    assert!(!image.exists());
}

/// Cleans the cache of `config` when a test panics between commands.
struct CacheGuard {
    config: PathBuf,
    cache: PathBuf,
}

fn scopeguard(config: &Path, cache: &Path) -> CacheGuard {
    CacheGuard {
        config: config.to_path_buf(),
        cache: cache.to_path_buf(),
    }
}

impl Drop for CacheGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = subvault_command(&self.config, &["cache", "clean"])
                .env("SUBVAULT_BROWSE_CACHE", &self.cache)
                .output();
        }
    }
}
