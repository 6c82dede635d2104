//! Shared harness for the integration tests: throwaway loop-mounted btrfs
//! filesystems, the S3 endpoint started by `integration/with-services.sh`, and a
//! tree digest for comparing a source snapshot with a restored one.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub mod gpg;
pub mod mixed;
pub mod proxy;
pub mod s3store;

/// Distinguishes the filesystems and buckets one test process creates.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (in this process or a concurrent one) will pick.
fn unique_name() -> String {
    format!(
        "{}-{}-{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// Root of everything the btrfs tests create on disk.
///
/// `integration/with-services.sh` points `SUBVAULT_TEST_ROOT` at a directory of
/// its own run, so its teardown only touches what its own tests left behind and
/// never the filesystems of a concurrent run.
pub fn test_root() -> PathBuf {
    match std::env::var_os("SUBVAULT_TEST_ROOT") {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => PathBuf::from("/var/tmp/subvault-test"),
    }
}

/// Finds a system tool, also in the sbin directories that a non-login root shell
/// may lack on its PATH.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` not found on PATH nor in /usr/sbin or /sbin: install it \
         (integration/setup.sh installs every tool the tests need)"
    );
}

/// Runs `cmd` and returns its output; panics with the command, its exit status,
/// stdout and stderr when it cannot start or does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The `subvault` binary that cargo built for this test run.
pub fn subvault_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_subvault"))
}

/// Whether the current process runs as root (needed for loop devices and mounts).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Mount points currently in this process's mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// Whether `path` is a mount point right now.
pub fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(octal, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Loop devices (`/dev/loopN`) whose backing file is `image`.
pub fn loop_devices_for(image: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        // The kernel appends " (deleted)" once the image file is unlinked.
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing) == image {
            found.push(format!("/dev/{name}"));
        }
    }
    found
}

/// A fresh btrfs on a sparse image file, loop-mounted for one test.
///
/// Dropping it unmounts the filesystem (lazily if it stays busy), detaches the
/// loop device and removes the image and the mount point, so tests can run in
/// parallel and leave nothing behind even when they panic.
pub struct TestFs {
    image: PathBuf,
    mnt: PathBuf,
    device: String,
}

impl TestFs {
    /// Creates a `size_mib` MiB btrfs (at least ~120 MiB for btrfs-progs'
    /// default profile) and mounts it. Panics with what to fix when the process
    /// is not root or btrfs-progs is missing.
    pub fn new(size_mib: u64) -> TestFs {
        assert!(
            is_root(),
            "TestFs needs root for loop devices and mount: run the tests as root \
             through `integration/test.sh` (or `integration/with-services.sh cargo test \
             -- --include-ignored`)"
        );
        let mkfs = tool("mkfs.btrfs");
        let root = test_root();
        let name = unique_name();
        let image = root.join("img").join(format!("{name}.img"));
        let mnt = root.join("mnt").join(&name);
        fs::create_dir_all(image.parent().unwrap())
            .unwrap_or_else(|e| panic!("create {}: {e}", image.parent().unwrap().display()));
        fs::create_dir_all(&mnt).unwrap_or_else(|e| panic!("create {}: {e}", mnt.display()));
        let file = fs::File::create(&image)
            .unwrap_or_else(|e| panic!("create image {}: {e}", image.display()));
        file.set_len(size_mib * 1024 * 1024)
            .unwrap_or_else(|e| panic!("size image {}: {e}", image.display()));
        drop(file);

        // From here on a guard removes whatever exists if a step panics.
        let mut fs = TestFs {
            image,
            mnt,
            device: String::new(),
        };
        run(Command::new(mkfs).arg("-q").arg(&fs.image));
        // Concurrent loop setups can collide on a free device; retry briefly.
        let mut attempt = 0;
        loop {
            let out = Command::new(tool("mount"))
                .args(["-t", "btrfs", "-o", "loop"])
                .arg(&fs.image)
                .arg(&fs.mnt)
                .output()
                .expect("start mount");
            if out.status.success() {
                break;
            }
            attempt += 1;
            if attempt >= 5 {
                panic!(
                    "mount -o loop {} {} failed ({}): {}",
                    fs.image.display(),
                    fs.mnt.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200 * attempt));
        }
        let out = run(Command::new(tool("findmnt"))
            .args(["-n", "-o", "SOURCE", "--mountpoint"])
            .arg(&fs.mnt));
        fs.device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        fs
    }

    /// Mount point of the filesystem.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Backing image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Loop device the filesystem is mounted from (e.g. `/dev/loop3`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Creates subvolume `name` (a path relative to the mount point) and returns
    /// its absolute path.
    pub fn subvolume(&self, name: &str) -> PathBuf {
        let path = self.mnt.join(name);
        run(Command::new(tool("btrfs"))
            .args(["subvolume", "create"])
            .arg(&path));
        path
    }

    /// Flushes the filesystem so space accounting and on-disk state are current.
    pub fn sync(&self) {
        run(Command::new(tool("btrfs"))
            .args(["filesystem", "sync"])
            .arg(&self.mnt));
    }
}

impl Drop for TestFs {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        let mut lazy = false;
        if is_mounted(&self.mnt) {
            let mut unmounted = false;
            for attempt in 1..=10u64 {
                let ok = Command::new(tool("umount"))
                    .arg(&self.mnt)
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if ok {
                    unmounted = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50 * attempt));
            }
            if !unmounted {
                lazy = true;
                let status = Command::new(tool("umount"))
                    .arg("-l")
                    .arg(&self.mnt)
                    .status();
                problems.push(format!(
                    "{} stayed busy; lazily unmounted ({status:?}), the loop device \
                     goes when its last user closes it",
                    self.mnt.display()
                ));
            }
        }
        // `mount -o loop` sets autoclear, but the kernel may detach a moment
        // after umount returns, and a lazy unmount keeps the device; detach
        // explicitly and wait until it is really gone (briefly after a lazy
        // unmount: the device stays until the filesystem's last user exits).
        let wait = if lazy { 1 } else { 10 };
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            let devices = loop_devices_for(&self.image);
            if devices.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                if !lazy {
                    problems.push(format!("loop devices still attached: {devices:?}"));
                }
                break;
            }
            for dev in devices {
                let _ = Command::new(tool("losetup")).arg("-d").arg(dev).output();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(e) = fs::remove_file(&self.image) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("remove {}: {e}", self.image.display()));
            }
        }
        if !is_mounted(&self.mnt) {
            if let Err(e) = fs::remove_dir(&self.mnt) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    problems.push(format!("remove {}: {e}", self.mnt.display()));
                }
            }
        }
        if !problems.is_empty() {
            eprintln!(
                "TestFs cleanup of {}: {}",
                self.mnt.display(),
                problems.join("; ")
            );
        }
    }
}

/// The S3 endpoint the tests use, e.g. `http://127.0.0.1:40123`.
pub fn s3_endpoint() -> String {
    match std::env::var("SUBVAULT_TEST_S3_ENDPOINT") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "SUBVAULT_TEST_S3_ENDPOINT is not set: run S3 tests through \
             integration/with-services.sh (e.g. `integration/with-services.sh cargo test \
             --test NAME -- --include-ignored`), which starts moto on 127.0.0.1 and sets it"
        ),
    }
}

/// Region for test buckets (`AWS_REGION`, default `us-east-1`).
pub fn s3_region() -> String {
    std::env::var("AWS_REGION")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// An S3 client for the test endpoint: path-style addressing, static
/// credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (default
/// `testing`, which moto accepts).
pub fn s3_client() -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let env_or = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let credentials = Credentials::new(
        env_or("AWS_ACCESS_KEY_ID", "testing"),
        env_or("AWS_SECRET_ACCESS_KEY", "testing"),
        None,
        None,
        "subvault-tests",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3_endpoint())
        .region(Region::new(s3_region()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A valid, unique bucket name starting with a sanitized `prefix`.
pub fn unique_bucket_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(32)
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        clean = "test".to_string();
    }
    format!("{clean}-{}", unique_name())
}

/// Creates a uniquely named bucket on the test endpoint and returns its name.
pub async fn new_bucket_async(prefix: &str) -> String {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    log_library_warnings();
    let name = unique_bucket_name(prefix);
    let region = s3_region();
    let mut request = s3_client().create_bucket().bucket(&name);
    if region != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    if let Err(e) = request.send().await {
        panic!(
            "create bucket {name} on {}: {}",
            s3_endpoint(),
            aws_sdk_s3::error::DisplayErrorContext(&e)
        );
    }
    name
}

/// Creates a uniquely named bucket on the test endpoint and returns its name.
///
/// Usable from plain and from `#[tokio::test]` tests alike: it runs on a thread
/// with its own runtime, so it never nests runtimes.
/// Sends the library's warnings (in-process store calls) to the test's
/// captured output, so a failing test shows why a retry, resume or abort
/// went the way it did.
fn log_library_warnings() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("subvault=info"))
            .try_init();
    });
}

pub fn new_bucket(prefix: &str) -> String {
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build tokio runtime")
            .block_on(new_bucket_async(&prefix))
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Sets extended attribute `name` on `path` (not following symlinks).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c_path = c_path(path);
    let c_name = CString::new(name).expect("xattr name without NUL");
    // SAFETY: both strings are NUL-terminated and live across the call; value
    // points to value.len() readable bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        panic!(
            "set xattr {name} on {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// Extended attributes of `path` (not following symlinks), sorted by name.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c_path = c_path(path);
    // SAFETY (both closures): c_path is NUL-terminated; buf is writable for
    // buf.len() bytes, or null with size 0 to ask for the needed size.
    let names = read_sized(path, "list xattrs", |buf| unsafe {
        libc::llistxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    });
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let c_name = CString::new(name).unwrap();
            let value = read_sized(path, "read xattr", |buf| unsafe {
                libc::lgetxattr(
                    c_path.as_ptr(),
                    c_name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            });
            (name.to_vec(), value)
        })
        .collect();
    out.sort();
    out
}

/// Calls a size-probing xattr syscall until the buffer fits (the value may
/// grow between the probe and the read).
fn read_sized(path: &Path, what: &str, mut call: impl FnMut(&mut [u8]) -> isize) -> Vec<u8> {
    loop {
        let size = call(&mut []);
        if size < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOTSUP) {
                return Vec::new();
            }
            panic!("{what} of {}: {err}", path.display());
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return buf;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            panic!("{what} of {}: {err}", path.display());
        }
    }
}

/// One line per entry of the tree under `root` describing everything a
/// faithful backup must reproduce: relative path, file type, permission bits,
/// owner, size, content SHA-256, symlink target, device numbers, xattrs,
/// hard-link groups and the mtime of non-directories. Directory mtimes, atimes,
/// ctimes and inode numbers are left out: they legitimately differ after a
/// restore. Compare two manifests to see *what* differs between trees.
pub fn tree_manifest(root: &Path) -> String {
    let mut lines = Vec::new();
    let mut first_link: HashMap<(u64, u64), String> = HashMap::new();
    describe(root, ".", &mut lines, &mut first_link);
    lines.join("\n") + "\n"
}

/// SHA-256 (hex) of [`tree_manifest`]: equal for trees with equal content and
/// metadata, so a test can compare a source snapshot with its restore.
pub fn tree_hash(root: &Path) -> String {
    hex::encode(Sha256::digest(tree_manifest(root).as_bytes()))
}

fn describe(
    abs: &Path,
    rel: &str,
    lines: &mut Vec<String>,
    first_link: &mut HashMap<(u64, u64), String>,
) {
    let md = fs::symlink_metadata(abs).unwrap_or_else(|e| panic!("stat {}: {e}", abs.display()));
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else {
        "unknown"
    };
    let mut line = format!(
        "{rel:?} {kind} mode={:o} uid={} gid={}",
        md.mode() & 0o7777,
        md.uid(),
        md.gid()
    );
    if !ft.is_dir() {
        line += &format!(" mtime={}.{:09}", md.mtime(), md.mtime_nsec());
        if md.nlink() > 1 {
            match first_link.get(&(md.dev(), md.ino())) {
                Some(first) => line += &format!(" hardlink-of={first:?}"),
                None => {
                    first_link.insert((md.dev(), md.ino()), rel.to_string());
                }
            }
        }
    }
    if ft.is_file() {
        line += &format!(" size={} sha256={}", md.len(), file_sha256(abs));
    }
    if ft.is_symlink() {
        let target =
            fs::read_link(abs).unwrap_or_else(|e| panic!("readlink {}: {e}", abs.display()));
        line += &format!(" target={target:?}");
    }
    if ft.is_char_device() || ft.is_block_device() {
        line += &format!(" rdev={:x}", md.rdev());
    }
    for (name, value) in xattrs(abs) {
        line += &format!(
            " xattr:{:?}={}",
            String::from_utf8_lossy(&name),
            hex::encode(value)
        );
    }
    lines.push(line);
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(abs)
            .unwrap_or_else(|e| panic!("read dir {}: {e}", abs.display()))
            .map(|entry| entry.expect("read dir entry").file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child_rel = if rel == "." {
                lossless_str(&name)
            } else {
                format!("{rel}/{}", lossless_str(&name))
            };
            describe(&abs.join(&name), &child_rel, lines, first_link);
        }
    }
}

/// A name as text, with bytes that are not UTF-8 escaped so distinct names stay
/// distinct.
fn lossless_str(name: &OsStr) -> String {
    match name.to_str() {
        Some(s) => s.to_string(),
        None => name
            .as_bytes()
            .iter()
            .map(|b| {
                if b.is_ascii() && *b != b'\\' {
                    (*b as char).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect(),
    }
}

/// Appends `line` and a newline to `path`, creating it when missing.
pub fn append_line(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    writeln!(f, "{line}").unwrap();
}

/// SHA-256 (hex) of a file's content.
pub fn file_sha256(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Runs `f` on a fresh current-thread runtime on its own thread, so sync tests
/// (and tests already inside a runtime) can call async S3 code.
pub fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The whole body of an object on the test endpoint.
pub fn get_object(bucket: &str, key: &str) -> Vec<u8> {
    let (bucket, key) = (bucket.to_string(), key.to_string());
    block_on(async move {
        let out = s3_client()
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    })
}

/// Writes an object on the test endpoint.
pub fn put_object(bucket: &str, key: &str, body: Vec<u8>) {
    let (bucket, key) = (bucket.to_string(), key.to_string());
    block_on(async move {
        s3_client()
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    })
}

/// The built `subvault -c CONFIG ARGS...` with its locks in a `locks` dir and
/// its state file in a `state` dir next to the config (so concurrent tests
/// never share a run lock, and none writes /var/lib/subvault), not started.
pub fn subvault_command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(subvault_bin());
    let dir = config.parent().unwrap();
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env("SUBVAULT_LOCK_DIR", dir.join("locks"))
        .env("SUBVAULT_STATE_DIR", dir.join("state"));
    cmd
}

/// Runs [`subvault_command`] to completion.
pub fn subvault(config: &Path, args: &[&str]) -> Output {
    subvault_command(config, args)
        .output()
        .expect("start subvault")
}

/// Every object in a bucket: key -> (size, etag), keys sorted.
pub fn bucket_objects(bucket: &str) -> BTreeMap<String, (i64, String)> {
    let bucket = bucket.to_string();
    block_on(async move {
        let client = s3_client();
        let mut out = BTreeMap::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(&bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                out.insert(
                    o.key().unwrap().to_string(),
                    (
                        o.size().unwrap_or(0),
                        o.e_tag().unwrap_or_default().to_string(),
                    ),
                );
            }
        }
        out
    })
}

/// Whether the subvolume at `path` is read-only (`btrfs property get`).
pub fn is_readonly(path: &Path) -> bool {
    let out = run(Command::new(tool("btrfs"))
        .args(["property", "get", "-ts"])
        .arg(path)
        .arg("ro"));
    String::from_utf8_lossy(&out.stdout).trim() == "ro=true"
}

/// A finished command's status, stdout and stderr, for assertion messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `out`, after asserting that its command succeeded.
pub fn expect_success(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "subvault failed: {}",
        output_text(&out)
    );
    out
}

/// The keys of a bucket's open multipart uploads.
pub fn multipart_uploads(bucket: &str) -> Vec<String> {
    let bucket = bucket.to_string();
    block_on(async move {
        let out = s3_client()
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        out.uploads()
            .iter()
            .map(|u| u.key().unwrap_or_default().to_string())
            .collect()
    })
}
