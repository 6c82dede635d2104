//! Listing a source's snapshots in its snapshot directory.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use uuid::Uuid;

use super::error::BtrfsError;
use super::ioctl::FIRST_FREE_OBJECTID;
use super::naming::parse_snapshot_time;
use super::subvol::subvol_info;
use crate::core::model::Snapshot;

/// The snapshots of the source `source_uuid` (named `source_name`) that lie
/// directly in `snapshot_dir`: read-only subvolumes whose parent uuid is the
/// source's. Everything else (plain files and dirs, writable snapshots,
/// snapshots of other subvolumes, anything in subdirectories) is ignored, so
/// callers never touch it. A snapshot's time is the one in its name (see
/// [`parse_snapshot_time`]) or else its btrfs creation time. Sorted by
/// ctransid (then time, then path).
pub fn list_snapshots(
    snapshot_dir: &Path,
    source_uuid: Uuid,
    source_name: &str,
) -> Result<Vec<Snapshot>, BtrfsError> {
    let action = format!("list snapshots in {}", snapshot_dir.display());
    let os_err = |e: io::Error| BtrfsError::os(&action, snapshot_dir, e, false);
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(snapshot_dir) {
        // Not created yet: the first run creates it with the first snapshot.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        other => other.map_err(os_err)?,
    };
    for entry in entries {
        let entry = entry.map_err(os_err)?;
        let path = entry.path();
        // symlink_metadata: a symlink to a snapshot elsewhere is not ours.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BtrfsError::os(&action, &path, e, false)),
        };
        if !meta.is_dir() || meta.ino() != FIRST_FREE_OBJECTID {
            continue;
        }
        let info = match subvol_info(&path) {
            Ok(info) => info,
            // Deleted meanwhile, or a dir with inode 256 on another fs mounted here.
            Err(BtrfsError::NotSubvolume { .. }) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if !info.readonly || info.parent_uuid != Some(source_uuid) {
            continue;
        }
        let time = entry
            .file_name()
            .to_str()
            .and_then(|name| parse_snapshot_time(source_name, name))
            .unwrap_or(info.otime);
        found.push(Snapshot {
            path,
            uuid: info.uuid,
            parent_uuid: source_uuid,
            ctransid: info.ctransid,
            time,
            planned: false,
        });
    }
    found.sort_by(|a, b| (a.ctransid, a.time, &a.path).cmp(&(b.ctransid, b.time, &b.path)));
    Ok(found)
}
