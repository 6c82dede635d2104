//! The result of a dedupe pass, for people (`Display`) and machines (serde JSON).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::sys::btrfs::fs::SpaceUsed;
use crate::units::{human_bytes as human, human_signed};

/// Why a file (or directory) was not considered for dedupe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// nodatacow / nodatasum (`chattr +C`): sharing would make later writes copy.
    NoDataCow,
    /// Size or times changed while it was read: probably being written.
    ChangedDuringScan,
    /// On another filesystem or inside a nested subvolume (different st_dev).
    OtherFilesystem,
    /// Smaller than one filesystem block; such data is usually inline in metadata.
    Tiny,
    /// Could not be opened, stat'ed or mapped.
    Unreadable,
}

impl SkipReason {
    fn label(self) -> &'static str {
        match self {
            SkipReason::NoDataCow => "nodatacow/nodatasum",
            SkipReason::ChangedDuringScan => "changed while scanned (being written)",
            SkipReason::OtherFilesystem => "other filesystem or nested subvolume",
            SkipReason::Tiny => "smaller than one fs block (inline)",
            SkipReason::Unreadable => "unreadable",
        }
    }
}

/// Count of skips for one reason, with a few examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SkipCount {
    /// Files (or directories, for other filesystems) skipped.
    pub count: u64,
    /// Bytes in skipped files.
    pub bytes: u64,
    /// The first few paths.
    pub examples: Vec<String>,
}

/// Skips by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Skips(pub BTreeMap<SkipReason, SkipCount>);

impl Skips {
    /// Record one skip.
    pub fn add(&mut self, reason: SkipReason, bytes: u64, what: &str) {
        let c = self.0.entry(reason).or_default();
        c.count += 1;
        c.bytes += bytes;
        if c.examples.len() < 5 {
            c.examples.push(what.to_owned());
        }
    }
}

/// One scanned tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TreeReport {
    /// The path scanned.
    pub path: String,
    /// Subvolume uuid.
    pub uuid: String,
    /// Whether it is a read-only snapshot.
    pub readonly: bool,
    /// Whether the whole tree came from the index without a walk (unchanged generation).
    pub unchanged: bool,
    /// Files considered.
    pub files: u64,
    /// Bytes in those files.
    pub bytes: u64,
    /// Bytes actually read and hashed.
    pub bytes_read: u64,
}

/// Everything a pass did and measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DedupeReport {
    /// Nothing was shared: no dedupe ioctl was called.
    pub dry_run: bool,
    /// Block size in bytes.
    pub block_size: u64,
    /// Per tree.
    pub trees: Vec<TreeReport>,
    /// Regular files considered.
    pub files_scanned: u64,
    /// Bytes in those files.
    pub bytes_scanned: u64,
    /// Bytes read from disk and hashed in this pass.
    pub bytes_read: u64,
    /// Bytes whose hashes came from the index (unchanged since the last pass).
    pub bytes_from_index: u64,
    /// Bytes not read because their extent was already hashed (shared extent).
    pub bytes_shared_not_reread: u64,
    /// Bytes of block references duplicating another block without sharing its
    /// extent (a copy referenced from N snapshots counts N times).
    pub duplicate_bytes: u64,
    /// Bytes of distinct duplicate copies on disk (each physical copy once): the
    /// most that sharing can free, before the bookend effect (see docs/dedupe.md).
    pub duplicate_extent_bytes: u64,
    /// Bytes in duplicate blocks already sharing the chosen source's extent.
    pub already_shared_bytes: u64,
    /// Bytes in duplicate groups no file of which changed since the last pass.
    pub unchanged_duplicate_bytes: u64,
    /// Bytes the kernel reported as deduped (`bytes_deduped`).
    pub bytes_deduped: u64,
    /// Bytes skipped at dedupe time because FIEMAP showed them already shared.
    pub bytes_found_shared_at_dedupe: u64,
    /// Ranges the kernel found different (`FILE_DEDUPE_RANGE_DIFFERS`): stale
    /// hashes or a file changed after hashing; nothing was changed for them.
    pub differs_ranges: u64,
    /// Bytes in those ranges.
    pub differs_bytes: u64,
    /// Bytes not deduped because a send (or another dedupe) held the subvolume
    /// (EAGAIN / ETXTBSY after retries, or our lock was busy); retried next pass.
    pub deferred_bytes: u64,
    /// Destination ranges found busy (the kernel said EAGAIN / ETXTBSY / EBUSY
    /// because a send held the subvolume, or our lock was held) and retried,
    /// counted once per round they were busy in.
    pub busy_ranges: u64,
    /// Retry rounds run after the first (0 when nothing was busy).
    pub retry_rounds: u32,
    /// Dedupe calls made.
    pub ioctl_calls: u64,
    /// Other per-range errors (first few messages in `errors`).
    pub error_count: u64,
    /// The first few error messages.
    pub errors: Vec<String>,
    /// Skipped files by reason.
    pub skipped: Skips,
    /// Filesystem usage before (after a transaction commit).
    pub space_before: SpaceUsed,
    /// Filesystem usage after (after a transaction commit).
    pub space_after: SpaceUsed,
    /// Data bytes freed, from the filesystem's own numbers: data used before minus after.
    pub space_freed: i64,
    /// Metadata growth (dedupe adds extent references), after minus before.
    pub metadata_growth: i64,
    /// Hash partitions used for matching (more than one when over the memory limit).
    pub partitions: u32,
    /// Block records held (32 bytes each).
    pub records: u64,
    /// Indexes that were missing or corrupt and rebuilt.
    pub index_rebuilt: u64,
    /// Seconds spent walking, reading and hashing.
    pub scan_seconds: f64,
    /// Seconds spent sorting and matching.
    pub match_seconds: f64,
    /// Seconds spent in dedupe calls (including retries of busy subvolumes).
    pub dedupe_seconds: f64,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl fmt::Display for DedupeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_trees(f)?;
        self.fmt_scan_and_match(f)?;
        self.fmt_dedupe_and_space(f)?;
        self.fmt_skips_and_errors(f)?;
        write!(
            f,
            "took {:.1} s (scan {:.1} s, match {:.1} s, dedupe {:.1} s)",
            self.seconds, self.scan_seconds, self.match_seconds, self.dedupe_seconds
        )
    }
}

impl DedupeReport {
    /// The mode and block size, then one line per tree.
    fn fmt_trees(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.dry_run {
            " (dry run: nothing shared)"
        } else {
            ""
        };
        writeln!(f, "dedupe{mode}, block size {}", human(self.block_size))?;
        for t in &self.trees {
            writeln!(
                f,
                "  {} {}{}: {} files, {}, read {}",
                if t.readonly { "snapshot" } else { "subvolume" },
                t.path,
                if t.unchanged { " (unchanged)" } else { "" },
                t.files,
                human(t.bytes),
                human(t.bytes_read)
            )?;
        }
        Ok(())
    }

    /// What was scanned and read, and the duplicates found.
    fn fmt_scan_and_match(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "files scanned:         {}", self.files_scanned)?;
        writeln!(f, "bytes scanned:         {}", human(self.bytes_scanned))?;
        writeln!(
            f,
            "  read and hashed:     {}  (from index {}, shared extents not re-read {})",
            human(self.bytes_read),
            human(self.bytes_from_index),
            human(self.bytes_shared_not_reread)
        )?;
        writeln!(
            f,
            "duplicate bytes found: {}  ({} in references from all snapshots)",
            human(self.duplicate_extent_bytes),
            human(self.duplicate_bytes)
        )?;
        writeln!(
            f,
            "  already shared:      {}",
            human(self.already_shared_bytes + self.bytes_found_shared_at_dedupe)
        )
    }

    /// What the dedupe calls did and the space it freed.
    fn fmt_dedupe_and_space(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bytes deduped:         {}  ({} calls)",
            human(self.bytes_deduped),
            self.ioctl_calls
        )?;
        if self.differs_ranges > 0 {
            writeln!(
                f,
                "  data differed:       {} in {} ranges (left alone)",
                human(self.differs_bytes),
                self.differs_ranges
            )?;
        }
        if self.busy_ranges > 0 {
            writeln!(
                f,
                "  busy, retried:       {} ranges in {} retry rounds",
                self.busy_ranges, self.retry_rounds
            )?;
        }
        if self.deferred_bytes > 0 {
            writeln!(
                f,
                "  deferred (busy):     {} (subvolume busy with send; retried next pass)",
                human(self.deferred_bytes)
            )?;
        }
        writeln!(
            f,
            "space freed:           {}  (data used {} -> {}; metadata {})",
            human_signed(self.space_freed),
            human(self.space_before.data),
            human(self.space_after.data),
            human_signed(self.metadata_growth)
        )
    }

    /// Skipped files by reason, and the errors.
    fn fmt_skips_and_errors(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (r, c) in &self.skipped.0 {
            writeln!(
                f,
                "skipped ({}): {} ({}), e.g. {}",
                r.label(),
                c.count,
                human(c.bytes),
                c.examples.join(", ")
            )?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        if self.error_count as usize > self.errors.len() {
            writeln!(
                f,
                "... and {} more errors",
                self.error_count as usize - self.errors.len()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_count_and_cap_examples() {
        let mut s = Skips::default();
        for i in 0..8 {
            s.add(SkipReason::NoDataCow, 10, &format!("f{i}"));
        }
        let c = &s.0[&SkipReason::NoDataCow];
        assert_eq!((c.count, c.bytes, c.examples.len()), (8, 80, 5));
    }

    #[test]
    fn json_names_are_stable() {
        let mut r = DedupeReport {
            bytes_deduped: 5,
            ..Default::default()
        };
        r.skipped.add(SkipReason::NoDataCow, 1, "x");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["bytes_deduped"], 5);
        assert_eq!(v["skipped"]["no_data_cow"]["count"], 1);
        assert!(r.to_string().contains("nodatacow"));
    }
}
