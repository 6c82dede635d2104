//! `subvault mount` / `umount`: a received backup bind-mounted read-only at
//! the user's mount point, and the cache unmounted again when the last such
//! mount goes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{self, MOUNT_ROOT};
use crate::core::browse::users_of;

/// A mount point that cannot be used, or a mount that is not ours.
#[derive(Debug, thiserror::Error)]
#[error("mount point {}: {reason}", .path.display())]
pub struct MountError {
    /// The mount point as given.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// Checks that `path` is an existing, empty directory that is not a mount
/// point, and returns it canonical.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let bad = |reason: &str| MountError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let canon = std::fs::canonicalize(path)
        .map_err(|_| bad("does not exist; create an empty directory first"))?;
    if !canon.is_dir() {
        return Err(bad("not a directory; give an empty directory"));
    }
    let mut entries = std::fs::read_dir(&canon).map_err(|e| bad(&e.to_string()))?;
    if entries.next().is_some() {
        return Err(bad("not empty; give an empty directory"));
    }
    if cache::mounts().iter().any(|m| m.mount_point == canon) {
        return Err(bad("something is mounted there already"));
    }
    Ok(canon)
}

/// Bind-mounts `src` read-only at `dst` (util-linux remounts the bind `ro`).
pub fn bind_ro(src: &Path, dst: &Path) -> Result<(), MountError> {
    let out = Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(src)
        .arg(dst)
        .output()
        .map_err(|e| MountError {
            path: dst.to_path_buf(),
            reason: format!("cannot run mount: {e}"),
        })?;
    if !out.status.success() {
        return Err(MountError {
            path: dst.to_path_buf(),
            reason: format!(
                "mount --bind failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Unmounts a `subvault mount` at `path`, then the cache it came from when
/// no other mount uses that cache (which detaches its loop device).
/// Returns the cache mount that was unmounted, if one was.
pub fn unmount(path: &Path) -> Result<Option<PathBuf>, MountError> {
    let bad = |reason: String| MountError {
        path: path.to_path_buf(),
        reason,
    };
    let canon = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    let all = cache::mounts();
    let mine = all
        .iter()
        .find(|m| m.mount_point == canon)
        .ok_or_else(|| bad("nothing is mounted there".into()))?;
    let cache_mnt = all
        .iter()
        .find(|m| {
            m.dev == mine.dev && m.mount_point.starts_with(MOUNT_ROOT) && m.mount_point != canon
        })
        .map(|m| m.mount_point.clone())
        .ok_or_else(|| {
            bad("not a subvault mount (no browse cache under /run/subvault/browse holds it); use umount".into())
        })?;
    let out = Command::new("umount")
        .arg(&canon)
        .output()
        .map_err(|e| bad(format!("cannot run umount: {e}")))?;
    if !out.status.success() {
        return Err(bad(format!(
            "umount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let all = cache::mounts();
    let dev = mine.dev.clone();
    if users_of(&all, &dev, &cache_mnt).is_empty() {
        cache::unmount(&cache_mnt).map_err(bad)?;
        return Ok(Some(cache_mnt));
    }
    Ok(None)
}
