//! The WAL archive's key layout, and the names PostgreSQL gives the files it
//! archives (docs/postgres.md, "WAL archive").
//!
//! A PostgreSQL source's archived WAL lies beside its backups, under the same
//! remote prefix, one folder per source, cluster and timeline:
//!
//! ```text
//! <prefix><source>.wal/<system identifier>/<timeline, 8 hex>/<file name>.cmprzstd
//! pg/db.wal/7434216734418238512/00000001/000000010000000000000003.cmprzstd
//! pg/db.wal/7434216734418238512/00000002/00000002.history.cmprzstd
//! ```
//!
//! Why this shape:
//! - the key is computed from what `restore_command` is given (`%f`) and the
//!   cluster's `pg_control`, so a fetch is one GET, never a listing;
//! - the system identifier (from `pg_control`, and in every segment's first
//!   page) keeps a re-initialised cluster, whose timeline 1 starts again at
//!   segment 1, from colliding with the old cluster's WAL;
//! - the timeline folder keeps a promoted copy's WAL apart from the
//!   original's and lets retention work per timeline;
//! - a key with a `/` after the prefix is never a backup key, so neither
//!   subvault's backup reader nor btrfs2s3's ever takes a WAL object for a
//!   backup, and `<source>.wal/` sorts next to the source's backups.
//!
//! Pure: no I/O.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The suffix of every WAL object: zstd with subvault's integrity trailer.
pub const WAL_SUFFIX: &str = ".cmprzstd";

/// A file PostgreSQL archives, by its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalFile {
    /// A segment, `TTTTTTTTLLLLLLLLSSSSSSSS`: timeline, log, segment.
    Segment(SegmentName),
    /// A partial segment left at a timeline switch: `<segment>.partial`.
    Partial(SegmentName),
    /// A backup history file: `<segment>.<offset 8 hex>.backup`.
    Backup(SegmentName, u32),
    /// A timeline history file: `TTTTTTTT.history`.
    History(u32),
}

/// The 24-hex-digit name of a WAL segment, as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// Timeline id.
    pub timeline: u32,
    /// The high 32 bits of the LSN ("log").
    pub log: u32,
    /// The segment number within the log.
    pub seg: u32,
}

/// Why a name is not one PostgreSQL archives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a WAL file name PostgreSQL archives (a segment such as 000000010000000000000003, or a .partial, .backup or .history file)")]
pub struct BadWalName {
    /// The name as given.
    pub name: String,
}

fn hex8(s: &str) -> Option<u32> {
    // Upper case only: PostgreSQL writes %08X, and one spelling per file
    // keeps one key per file.
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl SegmentName {
    /// Parses a 24-hex-digit segment name (upper case, as PostgreSQL writes it).
    pub fn parse(s: &str) -> Option<SegmentName> {
        if s.len() != 24 || !s.is_ascii() {
            return None;
        }
        Some(SegmentName {
            timeline: hex8(&s[..8])?,
            log: hex8(&s[8..16])?,
            seg: hex8(&s[16..])?,
        })
    }

    /// Segments per 4 GiB "log" for a segment size.
    fn per_log(seg_size: u32) -> u64 {
        (1u64 << 32) / u64::from(seg_size.max(1))
    }

    /// The segment of `timeline` holding `lsn`, for `seg_size`-byte segments.
    pub fn of_lsn(timeline: u32, lsn: u64, seg_size: u32) -> SegmentName {
        let n = lsn / u64::from(seg_size.max(1));
        let per = Self::per_log(seg_size);
        SegmentName {
            timeline,
            log: (n / per) as u32,
            seg: (n % per) as u32,
        }
    }

    /// The LSN this segment starts at, for `seg_size`-byte segments.
    pub fn start_lsn(&self, seg_size: u32) -> u64 {
        (u64::from(self.log) * Self::per_log(seg_size) + u64::from(self.seg)) * u64::from(seg_size)
    }

    /// The next segment on the same timeline.
    pub fn next(&self, seg_size: u32) -> SegmentName {
        let per = Self::per_log(seg_size);
        let n = u64::from(self.log) * per + u64::from(self.seg) + 1;
        SegmentName {
            timeline: self.timeline,
            log: (n / per) as u32,
            seg: (n % per) as u32,
        }
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

impl WalFile {
    /// Parses a file name as PostgreSQL passes it (`%f`, or the last component
    /// of `%p`). Anything else, including a path, is refused: the name goes
    /// into an object key and, on fetch, names the file written.
    pub fn parse(name: &str) -> Result<WalFile, BadWalName> {
        let bad = || BadWalName {
            name: name.to_string(),
        };
        if let Some(seg) = SegmentName::parse(name) {
            return Ok(WalFile::Segment(seg));
        }
        if let Some(base) = name.strip_suffix(".partial") {
            return SegmentName::parse(base)
                .map(WalFile::Partial)
                .ok_or_else(bad);
        }
        if let Some(base) = name.strip_suffix(".history") {
            return hex8(base).map(WalFile::History).ok_or_else(bad);
        }
        if let Some(base) = name.strip_suffix(".backup") {
            let (seg, off) = base.split_once('.').ok_or_else(bad)?;
            let seg = SegmentName::parse(seg).ok_or_else(bad)?;
            return hex8(off).map(|o| WalFile::Backup(seg, o)).ok_or_else(bad);
        }
        Err(bad())
    }

    /// The timeline this file belongs to (its folder in the archive).
    pub fn timeline(&self) -> u32 {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup(s, _) => s.timeline,
            WalFile::History(t) => *t,
        }
    }

    /// The segment, for segments and partial segments.
    pub fn segment(&self) -> Option<SegmentName> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) => Some(*s),
            _ => None,
        }
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFile::Segment(s) => write!(f, "{s}"),
            WalFile::Partial(s) => write!(f, "{s}.partial"),
            WalFile::Backup(s, o) => write!(f, "{s}.{o:08X}.backup"),
            WalFile::History(t) => write!(f, "{t:08X}.history"),
        }
    }
}

/// Where one cluster's WAL lives on a remote: the source's archive folder and
/// the cluster's system identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalArchive {
    /// The remote's prefix (normalized: empty or ending in `/`).
    pub prefix: String,
    /// The source's name.
    pub source: String,
    /// The cluster's system identifier (`pg_control`).
    pub system_id: u64,
}

impl WalArchive {
    /// The folder of every cluster of the source: `<prefix><source>.wal/`.
    pub fn source_folder(prefix: &str, source: &str) -> String {
        format!("{prefix}{source}.wal/")
    }

    /// The folder of this cluster's WAL.
    pub fn folder(&self) -> String {
        format!(
            "{}{}/",
            Self::source_folder(&self.prefix, &self.source),
            self.system_id
        )
    }

    /// The object key of `file`.
    pub fn key(&self, file: &WalFile) -> String {
        format!(
            "{}{:08X}/{file}{WAL_SUFFIX}",
            self.folder(),
            file.timeline()
        )
    }

    /// Reads a key back: the file it holds, when `key` is one of this
    /// cluster's WAL objects (anything else under the folder is not ours to
    /// touch). An encrypted remote's `.auth` MAC at the end is passed over
    /// here; whether it authenticates is the caller's check.
    pub fn parse_key(&self, key: &str) -> Option<WalFile> {
        let key = crate::core::auth::mac_name("", key);
        let rest = key.strip_prefix(&self.folder())?;
        let (tli, name) = rest.split_once('/')?;
        let file = WalFile::parse(name.strip_suffix(WAL_SUFFIX)?).ok()?;
        (hex8(tli)? == file.timeline()).then_some(file)
    }
}

/// Reads any WAL key of `source` under `prefix` back, whatever the cluster:
/// (system identifier, file). An encrypted remote's `.auth` suffix is passed
/// over (the caller authenticates).
pub fn parse_source_key(prefix: &str, source: &str, key: &str) -> Option<(u64, WalFile)> {
    let folder = WalArchive::source_folder(prefix, source);
    let rest = crate::core::auth::mac_name("", key).strip_prefix(&folder)?;
    let (sysid, _) = rest.split_once('/')?;
    // Digits only, as we write it: one spelling per cluster.
    if sysid.is_empty() || !sysid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let archive = WalArchive {
        prefix: prefix.to_string(),
        source: source.to_string(),
        system_id: sysid.parse().ok()?,
    };
    Some((archive.system_id, archive.parse_key(key)?))
}

/// What a remote's WAL archive of one source holds, for `list` and
/// `restore --pitr`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalSummary {
    /// The source.
    pub source: String,
    /// WAL objects (segments, partial segments, history and backup files).
    pub objects: usize,
    /// Their bytes as stored.
    pub bytes: u64,
    /// The clusters' system identifiers, ascending.
    pub system_ids: Vec<u64>,
    /// The timelines, ascending.
    pub timelines: Vec<u32>,
    /// The oldest segment archived (by name: timeline, then position).
    pub first_segment: Option<String>,
    /// The newest segment archived.
    pub last_segment: Option<String>,
    /// The newest upload time: every record archived is older.
    pub newest_upload: Option<DateTime<Utc>>,
    /// When the oldest segment was uploaded (its records are older).
    pub first_upload: Option<DateTime<Utc>>,
}

/// Summarizes the WAL objects of `source`: (system id, file, size, upload time).
pub fn summarize(
    source: &str,
    items: impl IntoIterator<Item = (u64, WalFile, u64, Option<DateTime<Utc>>)>,
) -> WalSummary {
    let mut s = WalSummary {
        source: source.to_string(),
        ..Default::default()
    };
    let (mut first, mut last) = (None::<SegmentName>, None::<SegmentName>);
    for (sysid, file, size, uploaded) in items {
        s.objects += 1;
        s.bytes += size;
        s.newest_upload = s.newest_upload.max(uploaded);
        if !s.system_ids.contains(&sysid) {
            s.system_ids.push(sysid);
        }
        if !s.timelines.contains(&file.timeline()) {
            s.timelines.push(file.timeline());
        }
        if let Some(seg) = file.segment() {
            if first.map_or(true, |f| seg < f) {
                s.first_upload = uploaded;
            }
            first = Some(first.map_or(seg, |f| f.min(seg)));
            last = Some(last.map_or(seg, |l| l.max(seg)));
        }
    }
    s.system_ids.sort_unstable();
    s.timelines.sort_unstable();
    s.first_segment = first.map(|f| f.to_string());
    s.last_segment = last.map(|l| l.to_string());
    s
}

/// Whether the server's archive settings hand WAL to subvault: one line naming
/// the setting to change when they do not.
pub fn check_archive_settings(archive_mode: &str, archive_command: &str) -> Result<(), String> {
    if !matches!(archive_mode, "on" | "always") {
        return Err(format!(
            "archive_mode is {archive_mode:?}: set archive_mode = on (needs a restart) so the server archives WAL"
        ));
    }
    let words: Vec<&str> = archive_command.split_whitespace().collect();
    let runs_subvault = words.iter().any(|w| {
        w.trim_matches(|c| c == '\'' || c == '"')
            .ends_with("subvault")
    });
    if !runs_subvault || !words.contains(&"wal-push") || !archive_command.contains("%p") {
        return Err(format!(
            "archive_command is {archive_command:?}: set archive_command = 'subvault wal-push %p' (with -c CONFIG when the config is not the default) and reload"
        ));
    }
    Ok(())
}

/// Parses an LSN as PostgreSQL prints it (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Formats an LSN as PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// What the first page of a WAL segment says about it (PostgreSQL's
/// `XLogLongPageHeaderData`, little endian on the platforms we run on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `xlp_tli`: the timeline of the page.
    pub timeline: u32,
    /// `xlp_pageaddr`: the LSN the segment starts at.
    pub page_addr: u64,
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_id: u64,
    /// `xlp_seg_size`: the segment size.
    pub seg_size: u32,
}

/// Bytes of the long page header read by [`SegmentHeader::parse`].
pub const LONG_HEADER_LEN: usize = 40;
/// `XLP_LONG_HEADER`, the flag of the first page of a segment.
const XLP_LONG_HEADER: u16 = 0x0002;

impl SegmentHeader {
    /// Reads the long header at the start of a segment; `None` when the bytes
    /// are not one (too short, flag unset, or a segment size that is not a
    /// power of two between 1 MiB and 1 GiB, which PostgreSQL requires).
    pub fn parse(b: &[u8]) -> Option<SegmentHeader> {
        let b = b.get(..LONG_HEADER_LEN)?;
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if u16_at(2) & XLP_LONG_HEADER == 0 {
            return None;
        }
        let seg_size = u32_at(32);
        if !seg_size.is_power_of_two() || !((1 << 20)..=(1 << 30)).contains(&seg_size) {
            return None;
        }
        Some(SegmentHeader {
            timeline: u32_at(4),
            page_addr: u64_at(8),
            system_id: u64_at(24),
            seg_size,
        })
    }

    /// Checks that this header belongs in the segment `name` of cluster
    /// `system_id`: the object for a name must hold that segment, so a file
    /// archived under the wrong name, or another cluster's, is refused.
    pub fn check(&self, name: &SegmentName, system_id: u64) -> Result<(), String> {
        if self.system_id != system_id {
            return Err(format!(
                "it belongs to the cluster with system identifier {}, not {system_id}",
                self.system_id
            ));
        }
        let want = name.start_lsn(self.seg_size);
        if self.page_addr != want {
            return Err(format!(
                "its first page is at LSN {}, but segment {name} starts at {}",
                format_lsn(self.page_addr),
                format_lsn(want)
            ));
        }
        Ok(())
    }
}

/// The files of a snapshot's `pg_wal` that recovery from the snapshot cannot
/// read (docs/postgres.md, "Leaner base backups"): segments before `redo`
/// (the segment of the redo point recovery starts at) and segments after
/// `insert` (the segment being written when the server was asked, after the
/// snapshot: later ones are recycled or preallocated files holding old WAL
/// that replay stops at anyway). Positions compare across timelines, so an
/// old timeline's segment at or after the redo point stays. History files,
/// `.partial` and `.backup` files, `archive_status/` and anything else stay.
pub fn unneeded_in_pg_wal<'a>(
    names: impl IntoIterator<Item = &'a str>,
    redo: SegmentName,
    insert: SegmentName,
) -> Vec<&'a str> {
    let pos = |s: &SegmentName| (s.log, s.seg);
    names
        .into_iter()
        .filter(|n| match SegmentName::parse(n) {
            Some(s) => pos(&s) < pos(&redo) || pos(&s) > pos(&insert),
            None => false,
        })
        .collect()
}

/// The system identifier at the start of `global/pg_control`
/// (`ControlFileData.system_identifier`).
pub fn control_system_id(pg_control: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(pg_control.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u32 = 16 << 20;

    fn archive() -> WalArchive {
        WalArchive {
            prefix: "pg/".into(),
            source: "db".into(),
            system_id: 7434216734418238512,
        }
    }

    #[test]
    fn every_kind_of_archived_file_parses_and_prints_back() {
        for name in [
            "000000010000000000000003",
            "0000000A000000FF000000FF",
            "000000020000000100000000.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
        ] {
            let f = WalFile::parse(name).unwrap();
            assert_eq!(f.to_string(), name);
        }
        assert_eq!(
            WalFile::parse("000000020000000100000007").unwrap(),
            WalFile::Segment(SegmentName {
                timeline: 2,
                log: 1,
                seg: 7
            })
        );
        assert_eq!(WalFile::parse("0000000A.history").unwrap().timeline(), 10);
    }

    #[test]
    fn names_that_are_not_wal_are_refused() {
        for name in [
            "",
            "00000001000000000000000",
            "0000000100000000000000031",
            "000000010000000000000003.gz",
            "00000001000000000000000g",
            "00000001000000000000000a",
            "../00000001000000000000003",
            "pg_wal/000000010000000000000003",
            "RECOVERYXLOG",
            "00000002.history.x",
            "0000002.history",
            "000000010000000000000002.backup",
            "000000010000000000000002.0000002.backup",
            "ééééééééééééé",
        ] {
            assert!(WalFile::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn keys_are_per_source_cluster_and_timeline_and_read_back() {
        let a = archive();
        let seg = WalFile::parse("000000010000000000000003").unwrap();
        assert_eq!(
            a.key(&seg),
            "pg/db.wal/7434216734418238512/00000001/000000010000000000000003.cmprzstd"
        );
        let hist = WalFile::parse("00000002.history").unwrap();
        assert_eq!(
            a.key(&hist),
            "pg/db.wal/7434216734418238512/00000002/00000002.history.cmprzstd"
        );
        for f in [&seg, &hist] {
            assert_eq!(a.parse_key(&a.key(f)).as_ref(), Some(f));
        }
        // Never a backup key, for us or btrfs2s3.
        assert!(crate::core::object_key::parse_key("pg/", &a.key(&seg)).is_err());
        // Other clusters, sources, a timeline folder that does not match the
        // name, and strays are not this archive's.
        let other = WalArchive {
            system_id: 1,
            ..archive()
        };
        assert_eq!(other.parse_key(&a.key(&seg)), None);
        assert_eq!(
            a.parse_key("pg/db.wal/7434216734418238512/00000002/000000010000000000000003.cmprzstd"),
            None
        );
        assert_eq!(
            a.parse_key("pg/db.wal/7434216734418238512/00000001/000000010000000000000003"),
            None
        );
        assert_eq!(
            a.parse_key(
                "pg/dbx.wal/7434216734418238512/00000001/000000010000000000000003.cmprzstd"
            ),
            None
        );
    }

    #[test]
    fn a_summary_spans_segments_timelines_and_uploads() {
        let f = |n: &str| WalFile::parse(n).unwrap();
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let s = summarize(
            "db",
            [
                (
                    5,
                    f("000000010000000000000003"),
                    10,
                    t("2026-01-01T00:00:00Z"),
                ),
                (
                    5,
                    f("000000010000000000000001"),
                    20,
                    t("2026-01-01T00:05:00Z"),
                ),
                (5, f("00000002.history"), 1, t("2026-01-01T00:01:00Z")),
                (5, f("000000020000000000000004"), 5, None),
            ],
        );
        assert_eq!(s.objects, 4);
        assert_eq!(s.bytes, 36);
        assert_eq!(s.system_ids, vec![5]);
        assert_eq!(s.timelines, vec![1, 2]);
        assert_eq!(s.first_segment.as_deref(), Some("000000010000000000000001"));
        assert_eq!(s.last_segment.as_deref(), Some("000000020000000000000004"));
        assert_eq!(s.newest_upload, t("2026-01-01T00:05:00Z"));
        assert_eq!(s.first_upload, t("2026-01-01T00:05:00Z"));
        assert_eq!(summarize("db", []).objects, 0);
    }

    #[test]
    fn archive_settings_must_hand_wal_to_subvault() {
        assert_eq!(check_archive_settings("on", "subvault wal-push %p"), Ok(()));
        assert_eq!(
            check_archive_settings(
                "always",
                "/usr/local/bin/subvault -c '/etc/s.yaml' wal-push %p"
            ),
            Ok(())
        );
        let e = check_archive_settings("off", "subvault wal-push %p").unwrap_err();
        assert!(e.starts_with("archive_mode"), "{e}");
        for bad in [
            "",
            "cp %p /archive/%f",
            "subvault wal-fetch %f %p",
            "subvault wal-push",
            "notsubvault-x wal-push %p",
        ] {
            let e = check_archive_settings("on", bad).unwrap_err();
            assert!(e.starts_with("archive_command"), "{bad}: {e}");
        }
    }

    #[test]
    fn lsn_and_segment_arithmetic() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("1"), None);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        let s = SegmentName::of_lsn(1, parse_lsn("0/3000060").unwrap(), MIB16);
        assert_eq!(s.to_string(), "000000010000000000000003");
        assert_eq!(s.start_lsn(MIB16), 0x300_0000);
        // 256 segments of 16 MiB per log; the next after FF is the next log.
        let last = SegmentName::of_lsn(3, parse_lsn("1/FF000000").unwrap(), MIB16);
        assert_eq!(last.to_string(), "0000000300000001000000FF");
        assert_eq!(last.next(MIB16).to_string(), "000000030000000200000000");
        // 1 GiB segments: 4 per log.
        let big = SegmentName::of_lsn(1, parse_lsn("0/C0000000").unwrap(), 1 << 30);
        assert_eq!(big.to_string(), "000000010000000000000003");
        assert_eq!(big.next(1 << 30).to_string(), "000000010000000100000000");
        // Ordering is WAL order within a timeline.
        assert!(s < last.next(MIB16));
    }

    #[test]
    fn a_snapshots_pg_wal_keeps_redo_to_insert_and_every_other_file() {
        let seg = |n: &str| SegmentName::parse(n).unwrap();
        let names = [
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005",
            "000000020000000000000005",
            "000000020000000000000006",
            "000000020000000000000007",
            "000000020000000000000008",
            "000000010000000000000005.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
            "archive_status",
            "xlogtemp.123",
        ];
        let gone = unneeded_in_pg_wal(
            names.iter().copied(),
            seg("000000020000000000000005"),
            seg("000000020000000000000006"),
        );
        assert_eq!(
            gone,
            [
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000007",
                "000000020000000000000008",
            ]
        );
    }

    /// A long page header as PostgreSQL writes it.
    pub(crate) fn header(tli: u32, addr: u64, sysid: u64, seg_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; LONG_HEADER_LEN];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg_size.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn a_segment_header_must_match_its_name_and_cluster() {
        let name = SegmentName::of_lsn(1, 0x300_0000, MIB16);
        let h = SegmentHeader::parse(&header(1, 0x300_0000, 42, MIB16)).unwrap();
        assert_eq!(h.seg_size, MIB16);
        assert_eq!(h.check(&name, 42), Ok(()));
        assert!(h
            .check(&name, 43)
            .unwrap_err()
            .contains("system identifier 42"));
        let moved = SegmentName::of_lsn(1, 0x400_0000, MIB16);
        assert!(h.check(&moved, 42).unwrap_err().contains("0/4000000"));
        // Not a first page, too short, a nonsense segment size.
        let mut short_page = header(1, 0x300_0000, 42, MIB16);
        short_page[2] = 0;
        assert_eq!(SegmentHeader::parse(&short_page), None);
        assert_eq!(SegmentHeader::parse(&header(1, 0, 42, MIB16)[..39]), None);
        assert_eq!(SegmentHeader::parse(&header(1, 0, 42, 3 << 20)), None);
        assert_eq!(control_system_id(&42u64.to_le_bytes()), Some(42));
        assert_eq!(control_system_id(&[1, 2]), None);
    }
}
