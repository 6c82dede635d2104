//! Subvolume queries and changes: info, snapshot, destroy, rename.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::RenameFlags;
use nix::sys::statfs::{fstatfs, statfs, BTRFS_SUPER_MAGIC};
use uuid::Uuid;

use super::error::BtrfsError;
use super::ioctl;

/// What btrfs knows about one subvolume (BTRFS_IOC_GET_SUBVOL_INFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolInfo {
    /// Subvolume (tree) id, unique within the filesystem; 5 is the top level.
    pub id: u64,
    /// The subvolume's name in its parent directory (its btrfs root ref);
    /// the path's last component for the top-level subvolume.
    pub name: String,
    /// The subvolume's own uuid.
    pub uuid: Uuid,
    /// For a snapshot: the uuid of the subvolume it was taken of.
    pub parent_uuid: Option<Uuid>,
    /// For a received subvolume: the uuid of the subvolume that was sent.
    pub received_uuid: Option<Uuid>,
    /// Latest transaction id of the subvolume's tree.
    pub generation: u64,
    /// Transaction id of the last change to the subvolume's files. A snapshot
    /// inherits its source's ctransid at the moment it is taken, and taking a
    /// snapshot into a directory outside the source does not change the
    /// source's ctransid: equal ctransids mean equal content.
    pub ctransid: u64,
    /// Transaction id of the subvolume's creation.
    pub otransid: u64,
    /// Time of the last change (the time of `ctransid`).
    pub ctime: DateTime<Utc>,
    /// Creation time.
    pub otime: DateTime<Utc>,
    /// True for a read-only subvolume (BTRFS_IOC_SUBVOL_GETFLAGS).
    pub readonly: bool,
}

/// True if `path` is on a btrfs filesystem.
pub fn is_btrfs(path: &Path) -> Result<bool, BtrfsError> {
    let st = statfs(path).map_err(|e| {
        BtrfsError::os(
            format!("check the filesystem type of {}", path.display()),
            path,
            e.into(),
            false,
        )
    })?;
    Ok(st.filesystem_type() == BTRFS_SUPER_MAGIC)
}

/// True if `path` is the root directory of a btrfs subvolume (inode 256 on
/// btrfs). Symlinks are followed.
pub fn is_subvolume(path: &Path) -> Result<bool, BtrfsError> {
    if !is_btrfs(path)? {
        return Ok(false);
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| BtrfsError::os(format!("stat {}", path.display()), path, e, false))?;
    Ok(meta.is_dir() && meta.ino() == ioctl::FIRST_FREE_OBJECTID)
}

/// Opens a directory for ioctls (read-only, close-on-exec).
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
}

/// Opens `path` and checks that it is a subvolume root, so that ioctls that
/// act on "the subvolume containing this fd" cannot hit the wrong one.
pub(crate) fn open_subvolume(path: &Path, action: &str) -> Result<File, BtrfsError> {
    let dir = open_dir(path).map_err(|e| BtrfsError::os(action, path, e, false))?;
    let fs = fstatfs(dir.as_fd()).map_err(|e| BtrfsError::os(action, path, e.into(), false))?;
    let meta = dir
        .metadata()
        .map_err(|e| BtrfsError::os(action, path, e, false))?;
    if fs.filesystem_type() != BTRFS_SUPER_MAGIC || meta.ino() != ioctl::FIRST_FREE_OBJECTID {
        return Err(BtrfsError::NotSubvolume {
            action: action.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(dir)
}

/// Reads the subvolume at `path` (which must be a subvolume root).
pub fn subvol_info(path: &Path) -> Result<SubvolInfo, BtrfsError> {
    let action = format!("read subvolume info of {}", path.display());
    let dir = open_subvolume(path, &action)?;
    info_of_open(&dir, path, &action)
}

/// [`subvol_info`] after writing out the dirty data of the filesystem holding
/// the subvolume at `path` and committing its transaction (`syncfs`), on one
/// open of the subvolume.
///
/// btrfs bumps a subvolume's ctransid only when a transaction that changed its
/// tree commits, and an in-place write into an existing file changes the tree
/// only when its data is written out (up to 30 s later). Without the sync, a
/// file rewritten a moment before a run would read as "no change since the
/// newest snapshot". Taking a snapshot writes the same data anyway.
pub fn flushed_subvol_info(path: &Path) -> Result<SubvolInfo, BtrfsError> {
    let dir = open_subvolume(path, &format!("open subvolume {}", path.display()))?;
    let action = format!("write out pending changes of {}", path.display());
    nix::unistd::syncfs(&dir)
        .map_err(|e| BtrfsError::os(&action, path, io::Error::from(e), false))?;
    info_of_open(
        &dir,
        path,
        &format!("read subvolume info of {}", path.display()),
    )
}

/// [`subvol_info`] for an already opened and checked subvolume root.
pub(crate) fn info_of_open(
    dir: &File,
    path: &Path,
    action: &str,
) -> Result<SubvolInfo, BtrfsError> {
    let raw =
        ioctl::get_subvol_info(dir.as_fd()).map_err(|e| BtrfsError::os(action, path, e, true))?;
    let flags =
        ioctl::subvol_getflags(dir.as_fd()).map_err(|e| BtrfsError::os(action, path, e, true))?;
    let name_len = raw
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(raw.name.len());
    let mut name = String::from_utf8_lossy(&raw.name[..name_len]).into_owned();
    if name.is_empty() {
        name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_string());
    }
    Ok(SubvolInfo {
        id: raw.treeid,
        name,
        uuid: Uuid::from_bytes(raw.uuid),
        parent_uuid: non_nil(raw.parent_uuid),
        received_uuid: non_nil(raw.received_uuid),
        generation: raw.generation,
        ctransid: raw.ctransid,
        otransid: raw.otransid,
        ctime: to_time(raw.ctime),
        otime: to_time(raw.otime),
        readonly: flags & ioctl::SUBVOL_RDONLY != 0,
    })
}

fn non_nil(bytes: [u8; 16]) -> Option<Uuid> {
    let u = Uuid::from_bytes(bytes);
    (!u.is_nil()).then_some(u)
}

fn to_time(ts: ioctl::Timespec) -> DateTime<Utc> {
    i64::try_from(ts.sec)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, ts.nsec.min(999_999_999)))
        .unwrap_or_default()
}

/// The id of the btrfs filesystem `dir` is on (subvolumes of one filesystem
/// have different `st_dev`, so that cannot be used).
pub(crate) fn fsid_of(dir: &File, path: &Path, action: &str) -> Result<[u8; 16], BtrfsError> {
    ioctl::fsid(dir.as_fd()).map_err(|e| BtrfsError::os(action, path, e, true))
}

/// Checks that `name` is one path component that the snapshot ioctls accept.
pub(crate) fn check_name(name: &str, action: &str, path: &Path) -> Result<(), BtrfsError> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if name == "." || name == ".." || name.contains('/') {
        Some("the name must be a single path component")
    } else if name.contains('\0') {
        Some("the name contains a NUL byte")
    } else if name.len() > ioctl::NAME_MAX {
        Some("the name is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(r) => Err(BtrfsError::Invalid {
            action: action.to_string(),
            path: path.to_path_buf(),
            reason: format!("{r}: {name:?}"),
        }),
        None => Ok(()),
    }
}

/// Snapshots the subvolume `source` as `dest_dir/name` (BTRFS_IOC_SNAP_CREATE_V2),
/// read-only if asked. Fails if `name` already exists in `dest_dir`; never
/// replaces anything. Returns the new snapshot's path.
pub fn create_snapshot(
    source: &Path,
    dest_dir: &Path,
    name: &str,
    readonly: bool,
) -> Result<PathBuf, BtrfsError> {
    let action = format!(
        "snapshot {} into {} as {name}",
        source.display(),
        dest_dir.display()
    );
    check_name(name, &action, dest_dir)?;
    // The kernel snapshots the subvolume *containing* the source fd, so a
    // plain directory inside a subvolume must be refused here.
    let src = open_subvolume(source, &action)?;
    let dest = open_dir(dest_dir).map_err(|e| BtrfsError::os(&action, dest_dir, e, false))?;
    ioctl::snap_create_v2(dest.as_fd(), src.as_fd(), name.as_bytes(), readonly)
        .map_err(|e| BtrfsError::os(&action, source, e, false))?;
    Ok(dest_dir.join(name))
}

/// Splits `path` into its parent directory and a final normal component.
fn parent_and_name<'a>(path: &'a Path, action: &str) -> Result<(&'a Path, &'a OsStr), BtrfsError> {
    match path.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            Ok((parent.unwrap_or(Path::new(".")), name))
        }
        _ => Err(BtrfsError::Invalid {
            action: action.to_string(),
            path: path.to_path_buf(),
            reason: "the path must end in a subvolume's name".to_string(),
        }),
    }
}

/// Deletes the subvolume at `path` (read-only or not) by its name in the
/// parent directory: BTRFS_IOC_SNAP_DESTROY_V2, falling back to
/// BTRFS_IOC_SNAP_DESTROY on kernels before 5.7. Refuses anything that is not
/// a subvolume root, and does not follow a symlink at `path`.
pub fn destroy_subvolume(path: &Path) -> Result<(), BtrfsError> {
    let action = format!("delete subvolume {}", path.display());
    let (parent, name) = parent_and_name(path, &action)?;
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| BtrfsError::os(&action, path, e, false))?;
    if !meta.is_dir() || meta.ino() != ioctl::FIRST_FREE_OBJECTID || !is_btrfs(path)? {
        return Err(BtrfsError::NotSubvolume {
            action,
            path: path.to_path_buf(),
        });
    }
    let dir = open_dir(parent).map_err(|e| BtrfsError::os(&action, parent, e, false))?;
    match ioctl::snap_destroy_v2(dir.as_fd(), name.as_bytes()) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            ioctl::snap_destroy(dir.as_fd(), name.as_bytes())
        }
        other => other,
    }
    .map_err(|e| BtrfsError::os(&action, path, e, true))
}

/// Renames the snapshot `from` to `to_name` in the same directory, refusing to
/// replace an existing entry (renameat2 with RENAME_NOREPLACE). Returns the
/// new path.
pub fn rename_snapshot(from: &Path, to_name: &str) -> Result<PathBuf, BtrfsError> {
    let action = format!("rename {} to {to_name}", from.display());
    check_name(to_name, &action, from)?;
    let (parent, name) = parent_and_name(from, &action)?;
    let dir = open_dir(parent).map_err(|e| BtrfsError::os(&action, parent, e, false))?;
    nix::fcntl::renameat2(
        dir.as_fd(),
        name,
        dir.as_fd(),
        to_name,
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| BtrfsError::os(&action, from, e.into(), false))?;
    Ok(parent.join(to_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        let p = Path::new("/s");
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_name(bad, "x", p).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(256), "x", p).is_err());
        assert!(check_name(&"a".repeat(255), "x", p).is_ok());
        assert!(check_name("data.2026-11-27T04:05:06Z", "x", p).is_ok());
    }

    #[test]
    fn parent_and_name_of_relative_and_trailing_paths() {
        let (p, n) = parent_and_name(Path::new("snap"), "x").unwrap();
        assert_eq!((p, n), (Path::new("."), OsStr::new("snap")));
        let (p, n) = parent_and_name(Path::new("/a/b/"), "x").unwrap();
        assert_eq!((p, n), (Path::new("/a"), OsStr::new("b")));
        assert!(parent_and_name(Path::new("/a/.."), "x").is_err());
        assert!(parent_and_name(Path::new("/"), "x").is_err());
    }

    #[test]
    fn is_btrfs_is_false_for_proc() {
        assert!(!is_btrfs(Path::new("/proc")).unwrap());
        assert!(!is_subvolume(Path::new("/proc")).unwrap());
    }

    #[test]
    fn missing_paths_are_errors_naming_the_path() {
        let e = subvol_info(Path::new("/nonexistent/subvault-test")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/subvault-test"), "{e}");
    }
}
