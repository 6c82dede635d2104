//! Pure matching logic: from block records to merged dedupe requests.
//!
//! Records are sorted by hash (the only global ordering step, so it works on one
//! hash-prefix partition at a time when memory is short). A group of equal hashes
//! with more than one physical location yields (source, destination) block pairs;
//! pairs on the same "diagonal" (same file pair, same offset difference) merge into
//! one range of at most 16 MiB; ranges with the same source range share one call.

use crate::sys::extent::{MAX_DEDUPE_DESTS, MAX_DEDUPE_LEN};

/// One hashed block of one file: 32 bytes, the unit of memory accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockRec {
    /// First 128 bits of the block's BLAKE3 hash.
    pub hash: [u8; 16],
    /// Byte address on disk when the block lies inside one plain extent, else 0.
    pub phys: u64,
    /// Global file id (index into the pass's file table).
    pub file: u32,
    /// Block number within the file (offset = block * block_size).
    pub block: u32,
}

/// Bytes of memory per block record.
pub const BYTES_PER_RECORD: usize = std::mem::size_of::<BlockRec>();

/// What the matcher needs to know about a file.
pub trait FileFacts {
    /// Subvolume order of the file (0 = first, the live subvolume when there is one).
    fn order(&self, file: u32) -> u32;
    /// Whether the file is new or changed since the last completed pass; groups
    /// made only of unchanged files were handled by an earlier pass.
    fn pending(&self, file: u32) -> bool;
    /// Length of block `block` of `file` (shorter for the tail block).
    fn block_len(&self, file: u32, block: u32) -> u64;
}

/// A source block and a destination block with identical hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pair {
    pub src_file: u32,
    pub dst_file: u32,
    pub src_block: u32,
    pub dst_block: u32,
    /// Physical address of the source block (0 if unknown); lets the index record
    /// where the destination points after a successful dedupe.
    pub src_phys: u64,
}

/// Totals from matching.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MatchStats {
    /// Bytes in destination blocks: duplicates not yet sharing the source's extent
    /// (a location referenced from N snapshots counts N times).
    pub duplicate_bytes: u64,
    /// Bytes in distinct duplicate locations other than the source's: what sharing
    /// could free at most (each physical copy counts once).
    pub duplicate_extent_bytes: u64,
    /// Bytes in blocks that already share the source's extent.
    pub already_shared_bytes: u64,
    /// Bytes in groups skipped because no member changed since the last pass.
    pub unchanged_group_bytes: u64,
}

/// Sort `recs` by hash and append the pairs of every duplicate group to `pairs`.
///
/// The source of a group is the physical location referenced by the most records
/// (so the fewest references move and a whole old extent can be freed), ties broken
/// by subvolume order so live data wins over snapshots. Records already pointing at
/// the source location are skipped: that is the "already shared" check.
pub fn match_records(
    recs: &mut [BlockRec],
    facts: &dyn FileFacts,
    pairs: &mut Vec<Pair>,
) -> MatchStats {
    recs.sort_unstable_by(|a, b| {
        a.hash
            .cmp(&b.hash)
            .then(a.phys.cmp(&b.phys))
            .then(facts.order(a.file).cmp(&facts.order(b.file)))
            .then(a.file.cmp(&b.file))
            .then(a.block.cmp(&b.block))
    });
    let mut stats = MatchStats::default();
    let mut i = 0;
    while i < recs.len() {
        let mut j = i + 1;
        while j < recs.len() && recs[j].hash == recs[i].hash {
            j += 1;
        }
        let group = &recs[i..j];
        i = j;
        if group.len() < 2 {
            continue;
        }
        let len = facts.block_len(group[0].file, group[0].block);
        if !group.iter().any(|r| facts.pending(r.file)) {
            stats.unchanged_group_bytes += len * (group.len() as u64 - 1);
            continue;
        }
        let src = choose_source(group, facts);
        let mut last_phys = None;
        for r in group {
            if !std::ptr::eq(r, src)
                && (r.phys == 0 || r.phys != src.phys)
                && (r.phys == 0 || last_phys != Some(r.phys))
            {
                stats.duplicate_extent_bytes += facts.block_len(r.file, r.block);
            }
            last_phys = Some(r.phys);
        }
        for r in group {
            if std::ptr::eq(r, src) {
                continue;
            }
            if src.phys != 0 && r.phys == src.phys {
                stats.already_shared_bytes += len;
                continue;
            }
            // Both tails must be the same length (both end at EOF); equal hashes of
            // different lengths cannot happen, but a stale index must not confuse us.
            if facts.block_len(r.file, r.block) != len {
                continue;
            }
            stats.duplicate_bytes += len;
            pairs.push(Pair {
                src_file: src.file,
                dst_file: r.file,
                src_block: src.block,
                dst_block: r.block,
                src_phys: src.phys,
            });
        }
    }
    stats
}

/// The group member whose physical location has the most references; among those,
/// the first in subvolume order. The group is sorted by (phys, order, file, block).
fn choose_source<'a>(group: &'a [BlockRec], facts: &dyn FileFacts) -> &'a BlockRec {
    let mut best: Option<(&BlockRec, usize)> = None;
    let mut k = 0;
    while k < group.len() {
        let mut m = k + 1;
        if group[k].phys != 0 {
            while m < group.len() && group[m].phys == group[k].phys {
                m += 1;
            }
        }
        // Within a run the first member has the lowest subvolume order.
        let cand = group[k..m]
            .iter()
            .min_by_key(|r| (facts.order(r.file), r.file, r.block))
            .expect("run is not empty");
        let count = m - k;
        best = match best {
            None => Some((cand, count)),
            Some((b, c)) => {
                let better =
                    count > c || (count == c && facts.order(cand.file) < facts.order(b.file));
                if better {
                    Some((cand, count))
                } else {
                    Some((b, c))
                }
            }
        };
        k = m;
    }
    best.expect("group is not empty").0
}

/// A contiguous source range to share with a contiguous destination range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub src_file: u32,
    pub src_offset: u64,
    pub dst_file: u32,
    pub dst_offset: u64,
    pub len: u64,
    /// Physical address of the source's first block (0 if unknown).
    pub src_phys: u64,
    /// Number of blocks merged into this range.
    pub blocks: u32,
}

/// Merge pairs on the same diagonal into ranges of at most [`MAX_DEDUPE_LEN`].
/// Ranges within one file never overlap their own source (the kernel rejects that).
pub fn merge_pairs(pairs: &mut [Pair], block_size: u64, facts: &dyn FileFacts) -> Vec<Range> {
    let diag = |p: &Pair| p.src_block as i64 - p.dst_block as i64;
    pairs.sort_unstable_by(|a, b| {
        (a.src_file, a.dst_file, diag(a), a.src_block).cmp(&(
            b.src_file,
            b.dst_file,
            diag(b),
            b.src_block,
        ))
    });
    let max_blocks = (MAX_DEDUPE_LEN / block_size).max(1) as u32;
    let mut out: Vec<Range> = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let p = pairs[i];
        let mut n = 1u32;
        let d = diag(&p);
        let same_file_limit = if p.src_file == p.dst_file {
            d.unsigned_abs().min(u32::MAX as u64) as u32
        } else {
            u32::MAX
        };
        let limit = max_blocks.min(same_file_limit.max(1));
        let mut len = facts.block_len(p.src_file, p.src_block);
        while i + (n as usize) < pairs.len() && n < limit {
            let q = pairs[i + n as usize];
            let contiguous = q.src_file == p.src_file
                && q.dst_file == p.dst_file
                && diag(&q) == d
                && q.src_block == p.src_block + n
                // Only full blocks can be followed by another block.
                && len == n as u64 * block_size;
            if !contiguous {
                break;
            }
            len += facts.block_len(q.src_file, q.src_block);
            n += 1;
        }
        out.push(Range {
            src_file: p.src_file,
            src_offset: p.src_block as u64 * block_size,
            dst_file: p.dst_file,
            dst_offset: p.dst_block as u64 * block_size,
            len,
            src_phys: p.src_phys,
            blocks: n,
        });
        i += n as usize;
    }
    out
}

/// One FIDEDUPERANGE call: a source range and up to 127 destinations, all in one
/// destination subvolume (so one subvolume lock covers the call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub src_file: u32,
    pub src_offset: u64,
    pub len: u64,
    pub src_phys: u64,
    pub dst_order: u32,
    /// (destination file, destination offset, blocks merged)
    pub dests: Vec<(u32, u64, u32)>,
}

/// Group ranges into calls, ordered by destination subvolume (live first, so later
/// snapshots of it inherit the shared extents), then by source file and offset.
pub fn batch_calls(mut ranges: Vec<Range>, facts: &dyn FileFacts) -> Vec<Call> {
    ranges.sort_unstable_by_key(|r| {
        (
            facts.order(r.dst_file),
            r.src_file,
            r.src_offset,
            r.len,
            r.dst_file,
            r.dst_offset,
        )
    });
    let mut calls: Vec<Call> = Vec::new();
    for r in ranges {
        let order = facts.order(r.dst_file);
        if let Some(c) = calls.last_mut() {
            if c.dst_order == order
                && c.src_file == r.src_file
                && c.src_offset == r.src_offset
                && c.len == r.len
                && c.dests.len() < MAX_DEDUPE_DESTS
            {
                c.dests.push((r.dst_file, r.dst_offset, r.blocks));
                continue;
            }
        }
        calls.push(Call {
            src_file: r.src_file,
            src_offset: r.src_offset,
            len: r.len,
            src_phys: r.src_phys,
            dst_order: order,
            dests: vec![(r.dst_file, r.dst_offset, r.blocks)],
        });
    }
    calls
}

/// Which hash partition (of `parts`) a record belongs to.
pub fn partition_of(hash: &[u8; 16], parts: u32) -> u32 {
    u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]]) % parts.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u64 = 4;

    /// Files: (order, pending, size).
    struct Facts(Vec<(u32, bool, u64)>);
    impl FileFacts for Facts {
        fn order(&self, f: u32) -> u32 {
            self.0[f as usize].0
        }
        fn pending(&self, f: u32) -> bool {
            self.0[f as usize].1
        }
        fn block_len(&self, f: u32, b: u32) -> u64 {
            let size = self.0[f as usize].2;
            (size - b as u64 * BS).min(BS)
        }
    }

    fn rec(h: u8, phys: u64, file: u32, block: u32) -> BlockRec {
        BlockRec {
            hash: [h; 16],
            phys,
            file,
            block,
        }
    }

    #[test]
    fn record_is_32_bytes() {
        assert_eq!(BYTES_PER_RECORD, 32);
    }

    #[test]
    fn source_is_the_most_referenced_location_and_shared_blocks_are_skipped() {
        // file 0 (live) at phys 100, files 1 and 2 (snapshots) share phys 200.
        let facts = Facts(vec![(0, true, 8), (1, true, 8), (2, true, 8)]);
        let mut recs = vec![rec(1, 100, 0, 0), rec(1, 200, 1, 0), rec(1, 200, 2, 0)];
        let mut pairs = Vec::new();
        let st = match_records(&mut recs, &facts, &mut pairs);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].src_file, pairs[0].dst_file), (1, 0));
        assert_eq!(st.duplicate_bytes, 4);
        assert_eq!(st.duplicate_extent_bytes, 4);
        assert_eq!(st.already_shared_bytes, 4);
    }

    #[test]
    fn ties_prefer_the_first_subvolume_and_unchanged_groups_are_skipped() {
        let facts = Facts(vec![
            (1, true, 4),
            (0, true, 4),
            (2, false, 4),
            (3, false, 4),
        ]);
        let mut recs = vec![
            rec(1, 10, 0, 0),
            rec(1, 20, 1, 0),
            rec(2, 30, 2, 0),
            rec(2, 40, 3, 0),
        ];
        let mut pairs = Vec::new();
        let st = match_records(&mut recs, &facts, &mut pairs);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].src_file, pairs[0].dst_file), (1, 0));
        assert_eq!(st.unchanged_group_bytes, 4);
    }

    #[test]
    fn unknown_locations_are_never_considered_shared() {
        let facts = Facts(vec![(0, true, 4), (0, true, 4), (1, true, 4), (2, true, 4)]);
        let mut recs = vec![
            rec(1, 0, 0, 0),
            rec(1, 0, 1, 0),
            rec(1, 50, 2, 0),
            rec(1, 50, 3, 0),
        ];
        let mut pairs = Vec::new();
        let st = match_records(&mut recs, &facts, &mut pairs);
        // Source is the twice-referenced location 50; both unknowns are destinations.
        assert_eq!(pairs.len(), 2);
        assert_eq!(st.duplicate_extent_bytes, 8);
    }

    #[test]
    fn adjacent_pairs_merge_and_respect_tail_and_overlap() {
        // file 0 size 10 (blocks 0,1 full, block 2 tail of 2), file 1 same.
        let facts = Facts(vec![(0, true, 10), (1, true, 10), (0, true, 16)]);
        let mut pairs = vec![
            Pair {
                src_file: 0,
                dst_file: 1,
                src_block: 2,
                dst_block: 2,
                src_phys: 0,
            },
            Pair {
                src_file: 0,
                dst_file: 1,
                src_block: 0,
                dst_block: 0,
                src_phys: 0,
            },
            Pair {
                src_file: 0,
                dst_file: 1,
                src_block: 1,
                dst_block: 1,
                src_phys: 0,
            },
            // same file, diagonal 1: must not merge into an overlapping range
            Pair {
                src_file: 2,
                dst_file: 2,
                src_block: 0,
                dst_block: 1,
                src_phys: 0,
            },
            Pair {
                src_file: 2,
                dst_file: 2,
                src_block: 1,
                dst_block: 2,
                src_phys: 0,
            },
        ];
        let ranges = merge_pairs(&mut pairs, BS, &facts);
        let r01: Vec<_> = ranges.iter().filter(|r| r.src_file == 0).collect();
        assert_eq!(r01.len(), 1);
        assert_eq!((r01[0].src_offset, r01[0].len, r01[0].blocks), (0, 10, 3));
        let r2: Vec<_> = ranges.iter().filter(|r| r.src_file == 2).collect();
        assert_eq!(r2.len(), 2);
        assert!(r2.iter().all(|r| r.len == BS));
    }

    #[test]
    fn merged_ranges_never_exceed_16_mib() {
        let bs = 128 * 1024u64;
        let n = 300u32;
        let facts_sizes = n as u64 * bs;
        struct F(u64);
        impl FileFacts for F {
            fn order(&self, f: u32) -> u32 {
                f
            }
            fn pending(&self, _: u32) -> bool {
                true
            }
            fn block_len(&self, _: u32, b: u32) -> u64 {
                (self.0 - b as u64 * 128 * 1024).min(128 * 1024)
            }
        }
        let mut pairs: Vec<Pair> = (0..n)
            .map(|b| Pair {
                src_file: 0,
                dst_file: 1,
                src_block: b,
                dst_block: b,
                src_phys: 0,
            })
            .collect();
        let ranges = merge_pairs(&mut pairs, bs, &F(facts_sizes));
        assert_eq!(ranges.len(), 3);
        assert!(ranges.iter().all(|r| r.len <= MAX_DEDUPE_LEN));
        assert_eq!(ranges.iter().map(|r| r.len).sum::<u64>(), facts_sizes);
    }

    #[test]
    fn calls_batch_destinations_of_one_subvolume() {
        let facts = Facts(vec![(0, true, 8), (1, true, 8), (1, true, 8), (2, true, 8)]);
        let mk = |d: u32| Range {
            src_file: 0,
            src_offset: 0,
            dst_file: d,
            dst_offset: 0,
            len: 8,
            src_phys: 0,
            blocks: 2,
        };
        let calls = batch_calls(vec![mk(3), mk(1), mk(2)], &facts);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].dests.len(), 2);
        assert_eq!(calls[0].dst_order, 1);
        assert_eq!(calls[1].dst_order, 2);
    }

    #[test]
    fn partitions_cover_all_hashes() {
        for h in 0..=255u8 {
            assert!(partition_of(&[h; 16], 7) < 7);
        }
        assert_eq!(partition_of(&[9; 16], 1), 0);
    }
}
