//! One pass over resolved trees: scan (phase A classifies each tree's files
//! against its index, phase B reads and hashes what changed and stages the
//! records), match per hash partition, apply the calls, write the indexes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use super::apply;
use super::index::{self, FileEntry, Index, IndexError, IndexHeader};
use super::plan::{self, BlockRec, Call};
use super::report::{DedupeReport, Skips, TreeReport};
use super::scan;
use super::{btrfs_fs, measure, DedupeError, DedupeOptions, FileTable, Tree};
use crate::progress::Progress;

/// Files smaller than this are skipped as tiny.
const MIN_FILE_SIZE: u64 = 4096;

/// A tree's scan result while the pass runs.
struct TreeState {
    files: Vec<FileEntry>,
    /// In memory, or None when spilled to `staged`.
    records: Option<Vec<BlockRec>>,
    staged: PathBuf,
    nrecords: u64,
    base: u32,
}

/// A tree after phase A.
struct Classified {
    /// A read-only snapshot whose index is current: everything comes from the index.
    unchanged: bool,
    /// Records reused from the index, and the files still to be read.
    prepared: scan::Prepared,
}

/// What the phases of a pass share.
pub(super) struct Pass<'a> {
    /// Live trees first, then snapshots.
    trees: &'a [Tree],
    opts: &'a DedupeOptions,
    /// Where the records of trees beyond the memory budget are spilled.
    staging: &'a Path,
    progress: &'a dyn Progress,
    report: &'a mut DedupeReport,
    /// Bytes of block records kept in memory: half of `max_memory`.
    budget: u64,
}

impl<'a> Pass<'a> {
    /// A pass over `trees` that spills to `staging` and fills `report`.
    pub(super) fn new(
        trees: &'a [Tree],
        opts: &'a DedupeOptions,
        staging: &'a Path,
        progress: &'a dyn Progress,
        report: &'a mut DedupeReport,
    ) -> Self {
        Pass {
            trees,
            opts,
            staging,
            progress,
            report,
            budget: (opts.max_memory / 2).max(1024),
        }
    }

    /// Scan, match, apply (unless a dry run), then write the indexes. `fs_file`
    /// is the filesystem whose space is measured after the dedupe calls.
    pub(super) fn run(mut self, fs_file: &File) -> Result<(), DedupeError> {
        let bs = self.opts.block_size;
        let t_scan = Instant::now();
        let states = self.scan()?;
        let table = file_table(self.trees, &states, bs);
        self.report.scan_seconds = t_scan.elapsed().as_secs_f64();

        let t_match = Instant::now();
        let calls = self.match_partitions(&states, &table)?;
        self.report.match_seconds = t_match.elapsed().as_secs_f64();

        if self.opts.dry_run {
            self.report.space_after = self.report.space_before;
            return Ok(());
        }
        let t_dedupe = Instant::now();
        let outcome = apply::Applier::new(
            &table,
            bs,
            self.opts.lock_wait,
            self.opts.retry_for,
            self.report,
            self.progress,
        )
        .run(calls);
        self.report.dedupe_seconds = t_dedupe.elapsed().as_secs_f64();
        self.report.space_after = measure(fs_file, &self.trees[0].root)?;

        self.progress.phase("writing index", 0);
        write_indexes(self.trees, states, &table, outcome, bs)
    }

    /// Phase A and phase B over every tree; records the skipped files.
    fn scan(&mut self) -> Result<Vec<TreeState>, DedupeError> {
        let mut skips = Skips::default();
        // Phase A: classify every tree's files against its index; reused hashes seed
        // the physical-address map so shared extents of new snapshots are not re-read.
        let trees = self.trees;
        let mut classified = Vec::new();
        for tree in trees {
            classified.push(self.classify(tree, &mut skips));
        }
        let phys_map = seed_phys_map(&classified);

        // Phase B: read and hash what changed, stage each tree's records.
        let states = self.read_and_stage(classified, &phys_map, &mut skips)?;
        drop(phys_map);
        self.report.skipped = skips;
        Ok(states)
    }

    /// Phase A for one tree: a read-only snapshot unchanged since its index is
    /// taken from the index whole; otherwise its files are walked and those
    /// unchanged since the index reuse their records.
    fn classify(&mut self, tree: &Tree, skips: &mut Skips) -> Classified {
        let old = load_old(tree, self.opts.block_size, self.report);
        let unchanged = tree.readonly
            && old.as_ref().is_some_and(|idx| {
                idx.header.generation == tree.generation && !idx.files.iter().any(|f| f.pending)
            });
        if let Some(Index {
            header: h, files, ..
        }) = &old
        {
            tracing::debug!(
                "index of {}: generation {} (now {}), {} pending files",
                tree.root.display(),
                h.generation,
                tree.generation,
                files.iter().filter(|f| f.pending).count()
            );
        }
        if unchanged {
            let Index {
                files,
                records: recs,
                ..
            } = old.expect("checked above");
            return Classified {
                unchanged: true,
                prepared: scan::Prepared::from_index(files, recs),
            };
        }
        let old_map = old.map(old_index_by_path).unwrap_or_default();
        Classified {
            unchanged: false,
            prepared: scan::prepare_tree(&tree.root, tree.dev, MIN_FILE_SIZE, old_map, skips),
        }
    }

    /// Phase B: read and hash each tree's changed files, add them to the report
    /// and stage the tree's records. File ids become global by each tree's `base`.
    fn read_and_stage(
        &mut self,
        classified: Vec<Classified>,
        phys_map: &scan::PhysMap,
        skips: &mut Skips,
    ) -> Result<Vec<TreeState>, DedupeError> {
        let mut states = Vec::new();
        let mut in_memory: u64 = 0;
        let mut base = 0u32;
        for (c, tree) in classified.into_iter().zip(self.trees) {
            let reader = scan::TreeReader {
                root: &tree.root,
                dev: tree.dev,
                block_size: self.opts.block_size,
                phys_map,
            };
            let ts = reader.read_tree(c.prepared, skips, self.progress);
            self.report_tree(tree, c.unchanged, &ts);
            let n = ts.files.len() as u32;
            states.push(self.stage(tree, ts, base, &mut in_memory)?);
            base += n;
        }
        Ok(states)
    }

    /// Adds a scanned tree to the report.
    fn report_tree(&mut self, tree: &Tree, unchanged: bool, ts: &scan::TreeScan) {
        let report = &mut *self.report;
        report.trees.push(TreeReport {
            path: tree.root.display().to_string(),
            uuid: tree.uuid.to_string(),
            readonly: tree.readonly,
            unchanged,
            files: ts.files_scanned,
            bytes: ts.bytes_in_files,
            bytes_read: ts.bytes_read,
        });
        report.files_scanned += ts.files_scanned;
        report.bytes_scanned += ts.bytes_in_files;
        report.bytes_read += ts.bytes_read;
        report.bytes_from_index += ts.bytes_from_index;
        report.bytes_shared_not_reread += ts.bytes_known_shared;
    }

    /// Keeps a tree's records in memory while `in_memory` stays within the
    /// budget, else spills them to the tree's staged index file.
    fn stage(
        &self,
        tree: &Tree,
        ts: scan::TreeScan,
        base: u32,
        in_memory: &mut u64,
    ) -> Result<TreeState, DedupeError> {
        let nrec = ts.records.len() as u64;
        let staged = self
            .staging
            .join(tree.index_path.file_name().expect("index file name"));
        let hdr = IndexHeader {
            block_size: self.opts.block_size as u32,
            generation: 0,
            uuid: *tree.uuid.as_bytes(),
        };
        let keep = *in_memory + nrec * plan::BYTES_PER_RECORD as u64 <= self.budget;
        let records = if keep {
            *in_memory += nrec * plan::BYTES_PER_RECORD as u64;
            Some(ts.records)
        } else {
            index::write(&staged, &hdr, &ts.files, &ts.records)?;
            None
        };
        Ok(TreeState {
            files: ts.files,
            records,
            staged,
            nrecords: nrec,
            base,
        })
    }

    /// Matching, one hash partition at a time (as many as the budget needs), then
    /// merging adjacent duplicate blocks into ranges and batching them into calls.
    fn match_partitions(
        &mut self,
        states: &[TreeState],
        table: &FileTable,
    ) -> Result<Vec<Call>, DedupeError> {
        let total_records: u64 = states.iter().map(|s| s.nrecords).sum();
        self.report.records = total_records;
        let parts = (total_records * plan::BYTES_PER_RECORD as u64)
            .div_ceil(self.budget)
            .max(1) as u32;
        self.report.partitions = parts;
        let mut pairs = Vec::new();
        for p in 0..parts {
            self.progress
                .phase(&format!("matching (partition {}/{parts})", p + 1), 0);
            let mut recs = partition_records(states, p, parts)?;
            let m = plan::match_records(&mut recs, table, &mut pairs);
            self.report.duplicate_bytes += m.duplicate_bytes;
            self.report.duplicate_extent_bytes += m.duplicate_extent_bytes;
            self.report.already_shared_bytes += m.already_shared_bytes;
            self.report.unchanged_duplicate_bytes += m.unchanged_group_bytes;
        }
        let ranges = plan::merge_pairs(&mut pairs, self.opts.block_size, table);
        drop(pairs);
        Ok(plan::batch_calls(ranges, table))
    }
}

/// The tree's index from the last pass if it is of this block size and
/// subvolume; a missing one is ignored, an unreadable one is counted as rebuilt.
fn load_old(tree: &Tree, bs: u64, report: &mut DedupeReport) -> Option<Index> {
    match index::read(&tree.index_path, |_| true) {
        Ok(idx)
            if idx.header.block_size as u64 == bs && idx.header.uuid == *tree.uuid.as_bytes() =>
        {
            Some(idx)
        }
        Ok(_) => None,
        Err(IndexError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("{e}");
            report.index_rebuilt += 1;
            None
        }
    }
}

/// An index's files with their records, by relative path.
fn old_index_by_path(old: Index) -> scan::OldIndex {
    let mut old_map: scan::OldIndex = HashMap::new();
    let mut by_file: Vec<Vec<BlockRec>> = vec![Vec::new(); old.files.len()];
    for r in old.records {
        by_file[r.file as usize].push(r);
    }
    for (f, r) in old.files.into_iter().zip(by_file) {
        old_map.insert(f.rel.clone(), (f, r));
    }
    old_map
}

/// The physical-address map for phase B, seeded with the reused hashes when
/// any tree has files to read (else it stays empty).
fn seed_phys_map(classified: &[Classified]) -> scan::PhysMap {
    let phys_map: scan::PhysMap = Mutex::new(HashMap::new());
    let must_read = classified.iter().any(|c| !c.prepared.to_read.is_empty());
    if must_read {
        let mut map = phys_map.lock().expect("phys map lock");
        for c in classified {
            for r in &c.prepared.scan.records {
                if r.phys != 0 {
                    map.insert(r.phys, r.hash);
                }
            }
        }
    }
    phys_map
}

/// All trees' files under global ids (tree by tree, in pass order).
fn file_table(trees: &[Tree], states: &[TreeState], block_size: u64) -> FileTable {
    let mut table = FileTable {
        trees: trees.to_vec(),
        files: Vec::new(),
        block_size,
    };
    for (t, st) in states.iter().enumerate() {
        table
            .files
            .extend(st.files.iter().cloned().map(|f| (t as u32, f)));
    }
    table
}

/// The records of hash partition `p` of `parts` from every tree, with global file
/// ids; spilled trees are read back keeping only that partition.
fn partition_records(
    states: &[TreeState],
    p: u32,
    parts: u32,
) -> Result<Vec<BlockRec>, DedupeError> {
    let mut recs: Vec<BlockRec> = Vec::new();
    for st in states {
        let globalize = |r: &BlockRec| BlockRec {
            file: r.file + st.base,
            ..*r
        };
        match &st.records {
            Some(v) => recs.extend(
                v.iter()
                    .filter(|r| plan::partition_of(&r.hash, parts) == p)
                    .map(globalize),
            ),
            None => {
                let v =
                    index::read(&st.staged, |r| plan::partition_of(&r.hash, parts) == p)?.records;
                recs.extend(v.iter().map(globalize));
            }
        }
    }
    Ok(recs)
}

/// Index: new physical addresses of moved blocks, pending flags, generation
/// after our own changes (read after the commit in `measure`).
fn write_indexes(
    trees: &[Tree],
    states: Vec<TreeState>,
    table: &FileTable,
    outcome: apply::Outcome,
    bs: u64,
) -> Result<(), DedupeError> {
    let mut moved_by_tree: Vec<Vec<(u32, u32, u64)>> = vec![Vec::new(); states.len()];
    for (f, b, p) in outcome.moved {
        let t = table.files[f as usize].0 as usize;
        moved_by_tree[t].push((f - states[t].base, b, p));
    }
    for (t, st) in states.into_iter().enumerate() {
        write_tree_index(&trees[t], st, &moved_by_tree[t], &outcome.still_pending, bs)?;
    }
    Ok(())
}

/// Writes one tree's index: `moved` (tree-local file, block, new physical
/// address) updates its records, files in `still_pending` (global ids) stay
/// pending.
fn write_tree_index(
    tree: &Tree,
    st: TreeState,
    moved: &[(u32, u32, u64)],
    still_pending: &HashSet<u32>,
    bs: u64,
) -> Result<(), DedupeError> {
    let mut recs = match st.records {
        Some(v) => v,
        None => index::read(&st.staged, |_| true)?.records,
    };
    recs.sort_unstable_by_key(|r| (r.file, r.block));
    for (f, b, p) in moved {
        if let Ok(i) = recs.binary_search_by_key(&(*f, *b), |r| (r.file, r.block)) {
            recs[i].phys = *p;
        }
    }
    let mut files = st.files;
    for (i, f) in files.iter_mut().enumerate() {
        f.pending = still_pending.contains(&(st.base + i as u32));
    }
    let generation = File::open(&tree.root)
        .and_then(|d| btrfs_fs::subvol_facts(&d))
        .map(|f| f.generation)
        .unwrap_or(0);
    let hdr = IndexHeader {
        block_size: bs as u32,
        generation,
        uuid: *tree.uuid.as_bytes(),
    };
    index::write(&tree.index_path, &hdr, &files, &recs)?;
    Ok(())
}
