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

/// A file in DIR that marks the subvolume `<name>` as being received:
/// written before `btrfs receive` starts, removed once the receive is over
/// (finished, or failed and cleaned up). One left behind means the restore
/// was killed (SIGKILL, power loss) while `<name>` was half-received, so the
/// next restore may delete that subvolume: it is provably ours.
const RECEIVING: &str = ".subvault-receiving-";

/// What to do about a subvolume a killed restore was receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// Half-received (writable): delete it; the step is received again.
    DeletePartial(PathBuf),
    /// The receive had finished (read-only, received uuid set) just before
    /// the kill: keep it; it is reused as any finished step.
    Finished,
    /// Nothing there (or not a subvolume: never touched).
    Nothing,
}

/// Decides about the subvolume `present` (at the marked name) of a marker.
pub fn leftover(present: Option<&Present>) -> Leftover {
    match present {
        Some(p) if p.readonly && p.received_uuid.is_some() => Leftover::Finished,
        Some(p) => Leftover::DeletePartial(p.path.clone()),
        None => Leftover::Nothing,
    }
}

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

    /// Marks `name` as being received (see [`RECEIVING`]).
    pub fn mark_receiving(&self, name: &str, key: &str) -> std::io::Result<()> {
        let path = self.dir.join(format!("{RECEIVING}{name}"));
        std::fs::write(path, format!("{key}\n"))
    }

    /// Removes the mark of `name`.
    pub fn unmark_receiving(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{RECEIVING}{name}")));
    }

    /// Clears what a restore killed mid-receive left in DIR: each marked
    /// subvolume that is half-received is deleted (and received again by
    /// this restore), a finished one is kept; the marks go. Returns one line
    /// per subvolume deleted or kept, to say so.
    pub fn clear_interrupted(&self) -> Result<Vec<String>, RestoreError> {
        let err = |reason: String| RestoreError::Target {
            dir: self.dir.clone(),
            reason,
        };
        let present = self.subvolumes()?;
        let mut notes = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| err(format!("cannot list it: {e}")))?;
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_prefix(RECEIVING)) else {
                continue;
            };
            // Only a plain file of ours, never a directory someone named so.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            match leftover(present.get(std::ffi::OsStr::new(name))) {
                Leftover::DeletePartial(path) => {
                    btrfs::destroy_subvolume(&path).map_err(|e| {
                        err(format!(
                            "cannot delete {}, half-received by an interrupted restore: {e}",
                            path.display()
                        ))
                    })?;
                    notes.push(format!(
                        "deleted {}, half-received by an interrupted restore; it is received again",
                        path.display()
                    ));
                }
                Leftover::Finished => notes.push(format!(
                    "{} was fully received by an interrupted restore; it is reused",
                    self.dir.join(name).display()
                )),
                Leftover::Nothing => {}
            }
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(notes)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_half_received_subvolume_is_deleted() {
        let p = |readonly, received: Option<u128>| Present {
            path: PathBuf::from("/r/x"),
            received_uuid: received.map(Uuid::from_u128),
            readonly,
        };
        assert_eq!(
            leftover(Some(&p(false, None))),
            Leftover::DeletePartial("/r/x".into())
        );
        // Killed between setting the received uuid and the read-only flag.
        assert_eq!(
            leftover(Some(&p(false, Some(1)))),
            Leftover::DeletePartial("/r/x".into())
        );
        assert_eq!(leftover(Some(&p(true, Some(1)))), Leftover::Finished);
        assert_eq!(leftover(None), Leftover::Nothing);
    }
}
