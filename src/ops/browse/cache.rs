//! The browse cache: one sparse image file per remote holding a btrfs
//! filesystem, loop-mounted under `/run/subvault/browse/` while a command
//! uses it, into which chains are received with the ordinary restore code.
//!
//! Why an image and not a directory: `btrfs receive` needs btrfs, and the
//! point of `restore --path`, `ls` and `mount` is to work on hosts whose disks
//! are ext4 or xfs. The image is sparse, so it costs what the received chains
//! hold, never more than its size (`--cache-max`, fixed when it is made), and
//! it is mounted with `discard`, so evicted subvolumes give their blocks back
//! to the filesystem the image lives on.
//!
//! One image per remote, not per source: the source is only known after the
//! remote's listing when `--source` is left out, and received subvolumes are
//! named after their snapshots, so the sources of one remote never collide.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::BrowseError;
use crate::core::browse::{parse_mountinfo, users_of, MountEntry};
use crate::sys::lock::CacheLock;

/// Where cache images live unless `--cache-dir` / `SUBVAULT_BROWSE_CACHE` say otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/subvault/browse";
/// The default size of a new cache image: a sparse file, so this bounds the
/// cache's disk use rather than taking it.
pub const DEFAULT_MAX: &str = "64G";
/// Where cache images are mounted while in use.
pub const MOUNT_ROOT: &str = "/run/subvault/browse";
/// How long a command waits for another one using the same cache.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Where the cache is and how big a new image is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory of the image files.
    pub dir: PathBuf,
    /// The size of a new image (the bound on its disk use).
    pub max_bytes: u64,
}

/// A cache image, locked and mounted. Dropping it unmounts the image (which
/// detaches its loop device) unless a `subvault mount` still uses it or
/// [`Cache::keep_mounted`] was called; the image file stays as the cache.
#[derive(Debug)]
pub struct Cache {
    image: PathBuf,
    mnt: PathBuf,
    keep: bool,
    _lock: CacheLock,
}

/// The image, mount point and lock file of the cache of `remote` in `dir`.
/// The mount point carries a hash of the image's path, so two cache
/// directories (tests, two configs) never share one.
pub fn paths(dir: &Path, remote: &str) -> (PathBuf, PathBuf, PathBuf) {
    let image = dir.join(format!("{remote}.img"));
    mount_paths(image)
}

fn mount_paths(image: PathBuf) -> (PathBuf, PathBuf, PathBuf) {
    let digest = Sha256::digest(image.as_os_str().as_encoded_bytes());
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = format!("{stem}-{}", hex::encode(&digest[..4]));
    let root = Path::new(MOUNT_ROOT);
    (image, root.join(&name), root.join(format!("{name}.lock")))
}

fn tool_error(what: &str, out: std::io::Result<std::process::Output>) -> Result<(), String> {
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {what}: {e}")),
    }
}

/// The mounts of this process's namespace.
pub fn mounts() -> Vec<MountEntry> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn is_mounted(mnt: &Path) -> bool {
    mounts().iter().any(|m| m.mount_point == mnt)
}

impl Cache {
    /// Locks the cache of `remote` (waiting for another command using it),
    /// makes its image on first use (`mkfs.btrfs` on a sparse file, renamed
    /// into place only when complete) and mounts it.
    pub fn open(settings: &Settings, remote: &str) -> Result<Cache, BrowseError> {
        let err = |reason: String| BrowseError::Cache {
            path: settings.dir.clone(),
            reason,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&settings.dir)
            .map_err(|e| err(format!("cannot create it: {e}")))?;
        let (image, mnt, lock) = paths(&settings.dir, remote);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(MOUNT_ROOT)
            .map_err(|e| err(format!("cannot create {MOUNT_ROOT}: {e}")))?;
        let lock = CacheLock::acquire(&lock, LOCK_WAIT).map_err(|e| err(e.to_string()))?;
        if !image.exists() {
            make_image(&image, settings.max_bytes).map_err(err)?;
        }
        let cache = Cache {
            image,
            mnt,
            keep: false,
            _lock: lock,
        };
        if !is_mounted(&cache.mnt) {
            std::fs::create_dir_all(&cache.mnt)
                .map_err(|e| err(format!("cannot create {}: {e}", cache.mnt.display())))?;
            // `-o loop` makes an autoclear loop device: unmounting detaches it.
            tool_error(
                "mount",
                Command::new("mount")
                    .args(["-t", "btrfs", "-o", "loop,noatime,discard"])
                    .arg(&cache.image)
                    .arg(&cache.mnt)
                    .output(),
            )
            .map_err(|e| {
                err(format!(
                    "cannot mount {}: {e} (a damaged cache: `subvault cache clean` removes it)",
                    cache.image.display()
                ))
            })?;
        }
        Ok(cache)
    }

    /// Where the image is mounted: the directory chains are received into.
    pub fn mount_dir(&self) -> &Path {
        &self.mnt
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Leaves the image mounted after this value goes (for `subvault mount`).
    pub fn keep_mounted(&mut self) {
        self.keep = true;
    }

    /// The `subvault mount`s using this cache now.
    pub fn users(&self) -> Vec<MountEntry> {
        users_now(&self.mnt)
    }
}

/// The mounts of the filesystem mounted at `mnt`, other than `mnt` itself.
pub fn users_now(mnt: &Path) -> Vec<MountEntry> {
    let all = mounts();
    let Some(dev) = all
        .iter()
        .find(|m| m.mount_point == mnt)
        .map(|m| m.dev.clone())
    else {
        return Vec::new();
    };
    users_of(&all, &dev, mnt).into_iter().cloned().collect()
}

/// Unmounts the cache at `mnt` (its loop device goes with it) and removes
/// the mount point.
pub fn unmount(mnt: &Path) -> Result<(), String> {
    if is_mounted(mnt) {
        tool_error("umount", Command::new("umount").arg(mnt).output())?;
    }
    let _ = std::fs::remove_dir(mnt);
    Ok(())
}

impl Drop for Cache {
    fn drop(&mut self) {
        if !self.keep && self.users().is_empty() {
            if let Err(e) = unmount(&self.mnt) {
                tracing::warn!("browse cache {}: {e}", self.mnt.display());
            }
        }
    }
}

/// Creates a sparse image of `size` bytes with a btrfs on it, under a
/// temporary name first, so an interrupted mkfs never leaves a broken cache.
fn make_image(image: &Path, size: u64) -> Result<(), String> {
    let tmp = image.with_extension("img.new");
    let _ = std::fs::remove_file(&tmp);
    let made = (|| {
        let f = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        f.set_len(size)
            .map_err(|e| format!("cannot size {}: {e}", tmp.display()))?;
        drop(f);
        tool_error(
            "mkfs.btrfs",
            Command::new("mkfs.btrfs")
                .args(["-q", "-L", "subvault-browse"])
                .arg(&tmp)
                .output(),
        )?;
        std::fs::rename(&tmp, image).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made
}

/// What `cache clean` did with one image.
#[derive(Debug, Clone)]
pub struct Cleaned {
    /// The image removed.
    pub image: PathBuf,
    /// Bytes it took on disk.
    pub bytes: u64,
}

/// Unmounts, detaches and deletes every cache image in `dir`. Refuses (before
/// touching anything of that image) when a `subvault mount` still uses one.
pub fn clean(dir: &Path) -> Result<Vec<Cleaned>, BrowseError> {
    let err = |reason: String| BrowseError::Cache {
        path: dir.to_path_buf(),
        reason,
    };
    let mut done = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(err(format!("cannot list it: {e}"))),
    };
    let mut images: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect();
    images.sort();
    for image in images {
        let (image, mnt, lock) = mount_paths(image);
        let _lock = CacheLock::acquire(&lock, LOCK_WAIT).map_err(|e| err(e.to_string()))?;
        let users = users_now(&mnt);
        if !users.is_empty() {
            let points: Vec<String> = users
                .iter()
                .map(|u| u.mount_point.display().to_string())
                .collect();
            return Err(err(format!(
                "{} is in use by subvault mount at {}: `subvault umount` them first",
                image.display(),
                points.join(", ")
            )));
        }
        unmount(&mnt).map_err(&err)?;
        detach_loops(&image);
        let bytes = std::fs::metadata(&image)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        std::fs::remove_file(&image)
            .map_err(|e| err(format!("cannot delete {}: {e}", image.display())))?;
        // Its lock file goes too (in /run, one per image ever made); a
        // command waiting for it would find no image and make a new one.
        let _ = std::fs::remove_file(&lock);
        done.push(Cleaned { image, bytes });
    }
    Ok(done)
}

/// Detaches loop devices still backed by `image` (one a crash left behind).
fn detach_loops(image: &Path) {
    let Ok(out) = Command::new("losetup").arg("-j").arg(image).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(dev) = line.split(':').next().filter(|d| d.starts_with("/dev/")) {
            let _ = Command::new("losetup").args(["-d", dev]).output();
        }
    }
}
