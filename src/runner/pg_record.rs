//! What a PostgreSQL snapshot recorded (server version, LSN, timeline), kept with
//! the snapshot and with its backup.
//!
//! - Locally: a sidecar file `<snapshot>.pg.json` next to the snapshot (the
//!   snapshot itself is read-only, and an upload may happen in a later run).
//! - In the bucket: key suffixes, so one listing shows them without a HEAD per
//!   object: `.pgvn<server_version_num>.pgtl<timeline>.pgls<LSN, '/' as '-'>.pgmd<mode>`.
//!   Readers that do not know them (btrfs2s3) ignore unknown suffixes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::postgres::PgSnapshotInfo;

/// The part of [`PgSnapshotInfo`] recorded with a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgRecord {
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: u32,
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)` (sidecar only).
    #[serde(default)]
    pub server_version: String,
    /// `checkpoint` or `backup`.
    pub mode: String,
    /// Checkpoint LSN (checkpoint mode) or backup start LSN (backup mode).
    pub lsn: String,
    /// Backup mode: the LSN `pg_backup_stop` returned (sidecar only).
    #[serde(default)]
    pub stop_lsn: Option<String>,
    /// Timeline.
    pub timeline: u32,
}

impl From<&PgSnapshotInfo> for PgRecord {
    fn from(i: &PgSnapshotInfo) -> Self {
        PgRecord {
            server_version_num: i.server_version_num,
            server_version: i.server_version.clone(),
            mode: i.mode.as_str().to_string(),
            lsn: i.lsn.clone(),
            stop_lsn: i.stop_lsn.clone(),
            timeline: i.timeline,
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

/// The key suffixes for a record.
pub fn key_suffix(r: &PgRecord) -> String {
    format!(
        ".pgvn{}.pgtl{}.pgls{}.pgmd{}",
        r.server_version_num,
        r.timeline,
        r.lsn.replace('/', "-"),
        r.mode
    )
}

/// Reads the PostgreSQL suffixes back from a key (`None` when it has none).
pub fn from_key(key: &str) -> Option<PgRecord> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let (mut vn, mut tl, mut ls, mut md) = (None, None, None, None);
    for part in name.split('.').skip(1) {
        if part.len() < 4 || !part.is_char_boundary(4) {
            continue;
        }
        let (code, value) = part.split_at(4);
        match code {
            "pgvn" => vn = value.parse().ok(),
            "pgtl" => tl = value.parse().ok(),
            "pgls" => ls = Some(value.replace('-', "/")),
            "pgmd" => md = Some(value.to_string()),
            _ => {}
        }
    }
    Some(PgRecord {
        server_version_num: vn?,
        server_version: String::new(),
        mode: md?,
        lsn: ls?,
        stop_lsn: None,
        timeline: tl?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_suffixes_round_trip_and_keep_the_key_parseable() {
        let r = PgRecord {
            server_version_num: 150018,
            server_version: String::new(),
            mode: "backup".into(),
            lsn: "0/16B3740".into(),
            stop_lsn: None,
            timeline: 1,
        };
        let key = format!(
            "pfx/db.ctim2026-01-01T00:00:00+00:00.ctid5.uuid3fd11d8e-8110-4cd0-b85c-bae3dda86a3d\
             .sndp00000000-0000-0000-0000-000000000000.prnt9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e\
             .mdvn1.seqn0.cmprzstd{}",
            key_suffix(&r)
        );
        assert!(!key_suffix(&r).contains('/'));
        assert_eq!(from_key(&key), Some(r));
        crate::object_key::parse_key("pfx/", &key).expect("still a backup key");
        assert_eq!(from_key("pfx/db.ctim2026.mdvn1"), None);
    }

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
        };
        write(&snap, &r).unwrap();
        assert_eq!(read(&snap), Some(r));
        remove(&snap);
        assert!(!sidecar(&snap).exists());
    }
}
