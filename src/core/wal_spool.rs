//! The bookkeeping of `wal-fetch`'s prefetch spool (docs/postgres.md,
//! "Prefetch"): which segments come next, how a spooled file is named, and
//! what a call does with the files it finds there.
//!
//! A spooled file is named `<segment>.<SHA-256 of its bytes, hex>`: written
//! only after the object verified (trailer, MAC, page header), through a
//! temporary name and a rename, and checked against its name again before it
//! is served. The hash in the name is what makes that second check possible
//! without trusting the file system: a rename without an fsync can leave an
//! empty or torn file after a crash, and the spool lies in `pg_wal` where
//! anything running as `postgres` can write.
//!
//! Pure: no I/O.

use super::wal::SegmentName;

/// The spool's folder, inside the data directory's `pg_wal` (the same file
/// system as `%p`, so serving is a rename). PostgreSQL only ever reads
/// segment names in `pg_wal` (`archive_status/` lives there too), so a dot
/// folder is left alone; WAL-G keeps its prefetch in `pg_wal/.wal-g/`.
pub const SPOOL_DIR: &str = ".subvault-prefetch";

/// The prefix of a file still being written into the spool.
pub const TMP_PREFIX: &str = ".tmp-";

/// How many segments a fetch prefetches when not told otherwise.
pub const DEFAULT_PREFETCH: usize = 8;

/// The `k` segments after `seg` on its timeline, across log boundaries.
pub fn ahead(seg: SegmentName, seg_size: u32, k: usize) -> Vec<SegmentName> {
    let mut out = Vec::with_capacity(k);
    let mut cur = seg;
    for _ in 0..k {
        cur = cur.next(seg_size);
        out.push(cur);
    }
    out
}

/// The spool file name of segment `seg` whose bytes hash to `sha256`.
pub fn entry_name(seg: SegmentName, sha256: &[u8; 32]) -> String {
    format!("{seg}.{}", hex::encode(sha256))
}

/// Reads a spool file name back; `None` for anything else (temporary files
/// included).
pub fn parse_entry(name: &str) -> Option<(SegmentName, [u8; 32])> {
    let (seg, hash) = name.split_once('.')?;
    let seg = SegmentName::parse(seg)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash, &mut out).ok()?;
    Some((seg, out))
}

/// What a call for segment `wanted` does with the spool's files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolPlan {
    /// The file holding `wanted`, to verify and serve.
    pub serve: Option<(String, [u8; 32])>,
    /// Files to delete: of another timeline, before `wanted` (replay moved
    /// past them), a second copy of a segment, temporary files a killed call
    /// left, and anything else that is not a spool entry.
    pub remove: Vec<String>,
    /// The segments already spooled after `wanted`.
    pub spooled_ahead: Vec<SegmentName>,
}

/// Sorts the spool's file `names` for a call asking for `wanted`.
/// PostgreSQL runs one `restore_command` at a time, so nothing else writes
/// the spool while a call looks at it, and a temporary file is a leftover.
pub fn plan(names: &[String], wanted: SegmentName) -> SpoolPlan {
    let mut p = SpoolPlan::default();
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    for name in sorted {
        let Some((seg, hash)) = parse_entry(name) else {
            p.remove.push(name.clone());
            continue;
        };
        let pos = (seg.log, seg.seg);
        let want = (wanted.log, wanted.seg);
        if seg.timeline != wanted.timeline || pos < want {
            p.remove.push(name.clone());
        } else if seg == wanted {
            if p.serve.is_some() {
                p.remove.push(name.clone());
            } else {
                p.serve = Some((name.clone(), hash));
            }
        } else if p.spooled_ahead.contains(&seg) {
            p.remove.push(name.clone());
        } else {
            p.spooled_ahead.push(seg);
        }
    }
    p
}

/// Of the segments `ahead`, those not spooled yet.
pub fn missing(ahead: &[SegmentName], spooled: &[SegmentName]) -> Vec<SegmentName> {
    ahead
        .iter()
        .filter(|s| !spooled.contains(s))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u32 = 16 << 20;

    fn seg(s: &str) -> SegmentName {
        SegmentName::parse(s).unwrap()
    }

    #[test]
    fn the_next_segments_cross_a_log_boundary() {
        let names: Vec<String> = ahead(seg("0000000200000003000000FE"), MIB16, 3)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "0000000200000003000000FF",
                "000000020000000400000000",
                "000000020000000400000001"
            ]
        );
        // 64 MiB segments: 64 per 4 GiB log, so 0x3F is the last.
        let names: Vec<String> = ahead(seg("00000001000000000000003F"), 64 << 20, 1)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, ["000000010000000100000000"]);
        assert!(ahead(seg("000000010000000000000001"), MIB16, 0).is_empty());
    }

    #[test]
    fn entry_names_carry_the_hash_and_read_back() {
        let s = seg("000000010000000000000003");
        let h = [0xabu8; 32];
        let n = entry_name(s, &h);
        assert_eq!(n, format!("000000010000000000000003.{}", "ab".repeat(32)));
        assert_eq!(parse_entry(&n), Some((s, h)));
        for bad in [
            "000000010000000000000003",
            "000000010000000000000003.abc",
            &format!("000000010000000000000003.{}", "zz".repeat(32)),
            &format!("{TMP_PREFIX}1234"),
            "00000002.history",
        ] {
            assert_eq!(parse_entry(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_call_serves_its_segment_and_drops_what_replay_passed() {
        let h = |b: u8| [b; 32];
        let names = vec![
            entry_name(seg("000000010000000000000004"), &h(1)), // before: gone
            entry_name(seg("000000010000000000000005"), &h(2)), // served
            entry_name(seg("000000010000000000000005"), &h(3)), // second copy
            entry_name(seg("000000010000000000000006"), &h(4)), // ahead
            entry_name(seg("000000010000000100000000"), &h(5)), // ahead, next log
            entry_name(seg("000000020000000000000007"), &h(6)), // other timeline
            format!("{TMP_PREFIX}0123456789abcdef"),            // a killed call's
            "stray".to_string(),
        ];
        let p = plan(&names, seg("000000010000000000000005"));
        assert_eq!(p.serve, Some((names[1].clone(), h(2))));
        let mut removed = p.remove.clone();
        removed.sort();
        let mut want = vec![
            names[0].clone(),
            names[2].clone(),
            names[5].clone(),
            names[6].clone(),
            names[7].clone(),
        ];
        want.sort();
        assert_eq!(removed, want);
        assert_eq!(
            p.spooled_ahead,
            vec![
                seg("000000010000000000000006"),
                seg("000000010000000100000000")
            ]
        );
        let next = ahead(seg("000000010000000000000005"), MIB16, 3);
        assert_eq!(
            missing(&next, &p.spooled_ahead),
            vec![
                seg("000000010000000000000007"),
                seg("000000010000000000000008")
            ]
        );
        // An empty spool serves nothing and removes nothing.
        assert_eq!(
            plan(&[], seg("000000010000000000000005")),
            SpoolPlan::default()
        );
    }
}
