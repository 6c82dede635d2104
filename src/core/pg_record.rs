//! What a PostgreSQL snapshot recorded (server version, LSN, timeline), and how
//! a backup's key carries it.
//!
//! In the bucket the record is a set of key suffixes, so one listing shows them
//! without a HEAD per object: `.pgvn<server_version_num>.pgtl<timeline>.pgls<LSN,
//! '/' as '-'>.pgmd<mode>`, and `.pgct<UTC time>` (the time from which the copy
//! is consistent, which `restore --pitr` chooses by; absent on keys written
//! before it existed), and `.pgrs<log>-<segment>` (hex, no leading zeros: the
//! WAL segment, on the `.pgtl` timeline, holding the redo point recovery from
//! the copy starts at, which WAL retention keeps from; absent on older keys,
//! and left out where the key would be too long for a file name). Readers that do not know them (btrfs2s3) ignore
//! unknown suffixes. Locally the record is a sidecar file next to the snapshot
//! (`postgres::sidecar`).

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::core::wal::SegmentName;

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
    /// The time from which the copy is consistent (`PgSnapshotInfo::consistent_at`).
    #[serde(default)]
    pub consistent_at: Option<DateTime<Utc>>,
    /// The WAL segment (24 hex digits) holding the redo point recovery from
    /// the copy starts at: the checkpoint's redo point (checkpoint mode) or
    /// the backup's start (backup mode). `None` on keys written before it
    /// was recorded.
    #[serde(default)]
    pub wal_start: Option<String>,
}

/// `t` rounded up to the whole second: the key holds seconds, and a
/// consistency time must never be earlier than the real one.
pub fn round_up(t: DateTime<Utc>) -> DateTime<Utc> {
    let down = t.trunc_subsecs(0);
    if down == t {
        t
    } else {
        down + TimeDelta::seconds(1)
    }
}

/// The key suffixes for a record.
pub fn key_suffix(r: &PgRecord) -> String {
    let mut s = format!(
        ".pgvn{}.pgtl{}.pgls{}.pgmd{}",
        r.server_version_num,
        r.timeline,
        r.lsn.replace('/', "-"),
        r.mode
    );
    if let Some(t) = r.consistent_at {
        s += &format!(".pgct{}", round_up(t).format("%Y-%m-%dT%H:%M:%SZ"));
    }
    // Short: a local remote's key is a file name (255 bytes at most).
    if let Some(seg) = r.wal_start.as_deref().and_then(SegmentName::parse) {
        s += &format!(".pgrs{:X}-{:X}", seg.log, seg.seg);
    }
    s
}

/// Reads the PostgreSQL suffixes back from a key (`None` when it has none).
pub fn from_key(key: &str) -> Option<PgRecord> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let (mut vn, mut tl, mut ls, mut md, mut ct, mut rs) = (None, None, None, None, None, None);
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
            "pgct" => {
                ct = DateTime::parse_from_rfc3339(value)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            }
            "pgrs" => rs = Some(value.to_string()),
            _ => {}
        }
    }
    // Only a well-formed position: retention compares them.
    let wal_start = rs.as_deref().and_then(|v| {
        let (log, seg) = v.split_once('-')?;
        let hex = |h: &str| {
            (!h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(h, 16).ok())
                .flatten()
        };
        Some(
            SegmentName {
                timeline: tl?,
                log: hex(log)?,
                seg: hex(seg)?,
            }
            .to_string(),
        )
    });
    Some(PgRecord {
        server_version_num: vn?,
        server_version: String::new(),
        mode: md?,
        lsn: ls?,
        stop_lsn: None,
        timeline: tl?,
        consistent_at: ct,
        wal_start,
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
            consistent_at: Some("2026-01-01T00:00:07Z".parse().unwrap()),
            wal_start: Some("000000010000000000000001".into()),
        };
        let key = format!(
            "pfx/db.ctim2026-01-01T00:00:00+00:00.ctid5.uuid3fd11d8e-8110-4cd0-b85c-bae3dda86a3d\
             .sndp00000000-0000-0000-0000-000000000000.prnt9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e\
             .mdvn1.seqn0.cmprzstd{}",
            key_suffix(&r)
        );
        assert!(!key_suffix(&r).contains('/'));
        assert_eq!(from_key(&key), Some(r.clone()));
        crate::core::object_key::parse_key("pfx/", &key).expect("still a backup key");
        assert_eq!(from_key("pfx/db.ctim2026.mdvn1"), None);
        assert!(key_suffix(&r).ends_with(".pgct2026-01-01T00:00:07Z.pgrs0-1"));
        // Keys written before `.pgct` and `.pgrs` existed still read, without them.
        let old = key
            .replace(".pgct2026-01-01T00:00:07Z", "")
            .replace(".pgrs0-1", "");
        let old = from_key(&old).unwrap();
        assert_eq!((old.consistent_at, old.wal_start), (None, None));
        // A mangled position is no start point.
        for bad in [
            ".pgrs1",
            ".pgrs-1",
            ".pgrs0-",
            ".pgrs0-x",
            ".pgrs0-123456789",
        ] {
            let bad = key.replace(".pgrs0-1", bad);
            assert_eq!(from_key(&bad).unwrap().wal_start, None, "{bad}");
        }
        // The timeline comes from `.pgtl`.
        let r2 = PgRecord {
            timeline: 3,
            wal_start: Some("000000030000001A000000FF".into()),
            ..r.clone()
        };
        assert!(key_suffix(&r2).ends_with(".pgrs1A-FF"));
        assert_eq!(from_key(&key_suffix(&r2)).unwrap().wal_start, r2.wal_start);
    }

    #[test]
    fn consistency_times_round_up_to_the_second() {
        let t: DateTime<Utc> = "2026-01-01T00:00:07.001Z".parse().unwrap();
        assert_eq!(
            round_up(t),
            "2026-01-01T00:00:08Z".parse::<DateTime<Utc>>().unwrap()
        );
        let whole: DateTime<Utc> = "2026-01-01T00:00:07Z".parse().unwrap();
        assert_eq!(round_up(whole), whole);
    }
}
