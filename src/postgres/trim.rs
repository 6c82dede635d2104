//! Leaner base backups: before a fresh snapshot is made read-only, remove
//! from its `pg_wal` the segments recovery from it cannot read (before the
//! redo point, and recycled or preallocated ones after the insert position
//! seen after the snapshot). Which ones is `core::wal::unneeded_in_pg_wal`;
//! here are the file operations (docs/postgres.md, "Leaner base backups").
//!
//! Only ever called on a snapshot that is still writable and has never been
//! listed, sent or used as a parent: the run lists read-only snapshots only,
//! and a failure destroys the half-made snapshot.

use std::path::Path;

use super::error::PgError;
use super::layout::Layout;
use crate::core::wal::{unneeded_in_pg_wal, SegmentName};

/// What a trim removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Trimmed {
    /// Segments removed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Removes the unneeded segments from the `pg_wal` of `snapshot` (laid out
/// as `layout`); `redo` and `insert` are segment names. Without both (an
/// older server, a standby) nothing is removed.
pub(crate) fn trim_snapshot_wal(
    snapshot: &Path,
    layout: &Layout,
    redo: Option<&str>,
    insert: Option<&str>,
) -> Result<Trimmed, PgError> {
    let (Some(redo), Some(insert)) = (
        redo.and_then(SegmentName::parse),
        insert.and_then(SegmentName::parse),
    ) else {
        tracing::info!(
            "pg_wal of {} kept whole: the redo or insert position is unknown",
            snapshot.display()
        );
        return Ok(Trimmed::default());
    };
    let dir = snapshot.join(&layout.wal_in_subvolume);
    // The copy inside the snapshot, never the live directory through a link.
    let real = dir.canonicalize().map_err(PgError::io("resolve", &dir))?;
    let root = snapshot
        .canonicalize()
        .map_err(PgError::io("resolve", snapshot))?;
    if !real.starts_with(&root) {
        return Err(PgError::io("trim pg_wal outside the snapshot", &dir)(
            std::io::Error::other(format!("it resolves to {}", real.display())),
        ));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&real).map_err(PgError::io("list", &real))? {
        let entry = entry.map_err(PgError::io("list", &real))?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_string());
            }
        }
    }
    let mut out = Trimmed::default();
    for name in unneeded_in_pg_wal(names.iter().map(String::as_str), redo, insert) {
        let path = real.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&path).map_err(PgError::io("remove", &path))?;
        out.files += 1;
        out.bytes += size;
    }
    std::fs::File::open(&real)
        .and_then(|d| d.sync_all())
        .map_err(PgError::io("sync", &real))?;
    tracing::info!(
        "removed {} unneeded WAL segment(s) ({} bytes) from the snapshot's pg_wal (keeping {redo} .. {insert})",
        out.files,
        out.bytes
    );
    Ok(out)
}
