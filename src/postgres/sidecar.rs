//! The sidecar file `<snapshot>.pg.json` that keeps a PostgreSQL snapshot's
//! record (server version, LSN, timeline) next to the snapshot: the snapshot
//! itself is read-only, and its upload may happen in a later run, which puts the
//! record into the key (`core::pg_record`).

use std::path::{Path, PathBuf};

use super::PgSnapshotInfo;
use crate::core::pg_record::PgRecord;

impl From<&PgSnapshotInfo> for PgRecord {
    fn from(i: &PgSnapshotInfo) -> Self {
        PgRecord {
            server_version_num: i.server_version_num,
            server_version: i.server_version.clone(),
            mode: i.mode.as_str().to_string(),
            lsn: i.lsn.clone(),
            stop_lsn: i.stop_lsn.clone(),
            timeline: i.timeline,
            consistent_at: Some(i.consistent_at),
            wal_start: i.wal_start.clone(),
        }
    }
}

/// The sidecar path of a snapshot.
pub fn sidecar(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_owned();
    name.push(".pg.json");
    PathBuf::from(name)
}

/// Writes the sidecar (temp file + rename, so a crash leaves no half file).
pub fn write(snapshot: &Path, record: &PgRecord) -> std::io::Result<()> {
    let path = sidecar(snapshot);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(record).expect("serializable"),
    )?;
    std::fs::rename(&tmp, &path)
}

/// Reads the sidecar of a snapshot, if it has one (and it parses).
pub fn read(snapshot: &Path) -> Option<PgRecord> {
    let text = std::fs::read(sidecar(snapshot)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Removes the sidecar of a destroyed snapshot (missing is fine).
pub fn remove(snapshot: &Path) {
    let _ = std::fs::remove_file(sidecar(snapshot));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("db.2026-01-01T00:00:00Z");
        assert_eq!(read(&snap), None);
        let r = PgRecord {
            server_version_num: 150018,
            server_version: "15.18".into(),
            mode: "checkpoint".into(),
            lsn: "0/3000060".into(),
            stop_lsn: None,
            timeline: 2,
            consistent_at: Some("2026-01-01T00:00:05Z".parse().unwrap()),
            wal_start: Some("000000020000000000000003".into()),
        };
        write(&snap, &r).unwrap();
        assert_eq!(read(&snap), Some(r));
        remove(&snap);
        assert!(!sidecar(&snap).exists());
    }
}
