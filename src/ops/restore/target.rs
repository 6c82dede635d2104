//! The restore directory: where `btrfs receive` may write, and what it holds.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::RestoreError;
use crate::sys::btrfs;

/// Inode number of every subvolume root on btrfs.
const SUBVOL_INO: u64 = 256;

/// A subvolume directly inside DIR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    /// Its path.
    pub path: PathBuf,
    /// The uuid it was received from, if it was received.
    pub received_uuid: Option<Uuid>,
    /// Read-only (a completed receive always is).
    pub readonly: bool,
}

/// The checked, canonical restore directory.
#[derive(Debug, Clone)]
pub struct Target {
    dir: PathBuf,
}

impl Target {
    /// Checks that `dir` exists, is a directory and is on btrfs, and resolves
    /// it (symlinks, `..`) once, so every later path is built from the
    /// canonical directory and nothing is ever received elsewhere.
    pub fn open(dir: &Path) -> Result<Target, RestoreError> {
        let bad = |reason: String| RestoreError::Target {
            dir: dir.to_path_buf(),
            reason,
        };
        let canon = std::fs::canonicalize(dir).map_err(|e| {
            bad(if e.kind() == std::io::ErrorKind::NotFound {
                "it does not exist; create it first (a directory or subvolume on the btrfs filesystem to restore into)".into()
            } else {
                e.to_string()
            })
        })?;
        if !canon.is_dir() {
            return Err(bad("not a directory".into()));
        }
        match btrfs::is_btrfs(&canon) {
            Ok(true) => {}
            Ok(false) => {
                return Err(bad(
                    "not on a btrfs filesystem (btrfs receive needs one)".into()
                ))
            }
            Err(e) => return Err(bad(e.to_string())),
        }
        Ok(Target { dir: canon })
    }

    /// The canonical directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of entry `name` (a single component, checked by the caller).
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// True when DIR has an entry (of any kind) called `name`.
    pub fn has_entry(&self, name: &str) -> bool {
        std::fs::symlink_metadata(self.dir.join(name)).is_ok()
    }

    /// The subvolumes directly inside DIR, by entry name. Symlinks are not
    /// followed, so nothing outside DIR is ever looked at or deleted.
    pub fn subvolumes(&self) -> Result<BTreeMap<OsString, Present>, RestoreError> {
        let err = |e: String| RestoreError::Target {
            dir: self.dir.clone(),
            reason: format!("cannot list it: {e}"),
        };
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| err(e.to_string()))? {
            let entry = entry.map_err(|e| err(e.to_string()))?;
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue; // vanished meanwhile
            };
            if !meta.is_dir() || meta.ino() != SUBVOL_INO {
                continue;
            }
            let info = btrfs::subvol_info(&path).map_err(|e| err(e.to_string()))?;
            out.insert(
                entry.file_name(),
                Present {
                    path,
                    received_uuid: info.received_uuid,
                    readonly: info.readonly,
                },
            );
        }
        Ok(out)
    }
}
