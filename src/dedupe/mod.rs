//! Block-level dedupe of local snapshots with FIDEDUPERANGE.
//!
//! A pass: resolve the trees (the live subvolume first, then snapshots), commit
//! the transaction and read the space info, scan each tree (unchanged files and
//! unchanged read-only snapshots come from the index, blocks of already hashed
//! extents are not re-read), match equal hashes (sorted, per hash partition when
//! over the memory limit), merge adjacent blocks, call the kernel per destination
//! subvolume under its lock, commit again and measure what was freed, then write
//! the index.
//!
//! Memory: 32 bytes per block record (hash 16, physical address 8, file 4, block
//! 4), 16 bytes per duplicate block pair, about 28 bytes per unique physical block
//! while scanning, and the file table. 1 TB of unique data at 128 KiB is ~8M blocks:
//! ~256 MiB of records plus ~220 MiB of scan map. Beyond `max_memory` the records
//! of later trees are spilled to the staged index files and matching runs in
//! several hash-prefix partitions, each loading only its share of the records.

mod apply;
mod index;
mod plan;
mod report;
mod scan;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::progress::Progress;
use crate::sys::btrfs::fs as btrfs_fs;
pub use crate::sys::btrfs::fs::SpaceUsed;
use crate::sys::{extent, io_hints};
pub use report::{DedupeReport, SkipCount, SkipReason, Skips, TreeReport};

use index::{FileEntry, Index, IndexError, IndexHeader};
use plan::{BlockRec, FileFacts};

/// Default block size: 128 KiB, the largest btrfs compressed extent and a good
/// balance between match rate and metadata cost.
pub const DEFAULT_BLOCK_SIZE: u64 = 128 * 1024;
/// Default index directory.
pub const DEFAULT_INDEX_DIR: &str = "/var/lib/subvault/dedupe";
/// Default memory budget for block records.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;
/// Bytes of memory one block record takes.
pub const BYTES_PER_BLOCK_RECORD: usize = plan::BYTES_PER_RECORD;

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct DedupeOptions {
    /// Block size in bytes: a multiple of the filesystem's sector size, at most 16 MiB.
    pub block_size: u64,
    /// Compute everything, call no dedupe ioctl, write no index.
    pub dry_run: bool,
    /// Where the incremental index lives.
    pub index_dir: PathBuf,
    /// Memory budget for block records; beyond it matching is partitioned.
    pub max_memory: u64,
    /// Run at nice 19 and idle IO priority.
    pub low_priority: bool,
    /// How long to wait for a subvolume lock held by a send before deferring.
    pub lock_wait: Duration,
    /// How long to keep retrying subvolumes the kernel reports busy (EAGAIN).
    pub retry_for: Duration,
}

impl Default for DedupeOptions {
    fn default() -> Self {
        DedupeOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            dry_run: false,
            index_dir: PathBuf::from(DEFAULT_INDEX_DIR),
            max_memory: DEFAULT_MAX_MEMORY,
            low_priority: true,
            lock_wait: Duration::from_secs(5),
            retry_for: Duration::from_secs(60),
        }
    }
}

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    /// Nothing to do.
    #[error("no paths to dedupe: give subvolume paths or a configured source")]
    NoPaths,
    /// A path could not be opened or queried.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A path is not on btrfs.
    #[error("{} is not on a btrfs filesystem; dedupe works only on btrfs", .0.display())]
    NotBtrfs(PathBuf),
    /// Paths on different filesystems cannot share extents.
    #[error("{} and {} are on different btrfs filesystems; dedupe them in separate runs", .0.display(), .1.display())]
    DifferentFilesystems(PathBuf, PathBuf),
    /// Bad block size.
    #[error("block size {size} is invalid: it must be a multiple of the filesystem's {sector}-byte sector size and at most 16 MiB")]
    BadBlockSize {
        /// Requested block size.
        size: u64,
        /// The filesystem's sector size.
        sector: u32,
    },
    /// The index could not be written.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// One tree (a subvolume, or a directory inside one) in this pass.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub root: PathBuf,
    pub uuid: uuid::Uuid,
    pub readonly: bool,
    pub dev: u64,
    pub generation: u64,
    pub index_path: PathBuf,
}

/// All files of the pass: file ids are global across trees.
#[derive(Debug, Default)]
pub(crate) struct FileTable {
    pub trees: Vec<Tree>,
    /// (tree, entry)
    pub files: Vec<(u32, FileEntry)>,
    pub block_size: u64,
}

impl FileTable {
    pub fn path(&self, file: u32) -> PathBuf {
        let (t, e) = &self.files[file as usize];
        self.trees[*t as usize].root.join(&e.rel)
    }
}

impl FileFacts for FileTable {
    fn order(&self, file: u32) -> u32 {
        self.files[file as usize].0
    }
    fn pending(&self, file: u32) -> bool {
        self.files[file as usize].1.pending
    }
    fn block_len(&self, file: u32, block: u32) -> u64 {
        let size = self.files[file as usize].1.size;
        size.saturating_sub(block as u64 * self.block_size)
            .min(self.block_size)
    }
}

/// Dedupe the given subvolumes (or directories on one btrfs filesystem). Writable
/// subvolumes are processed before read-only snapshots. Runs at low priority on
/// its own thread when `opts.low_priority`, leaving the caller's priority alone.
pub fn dedupe_paths(
    paths: &[PathBuf],
    opts: &DedupeOptions,
    progress: &dyn Progress,
) -> Result<DedupeReport, DedupeError> {
    if !opts.low_priority {
        return run_pass(paths, opts, progress);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Err(e) = io_hints::lower_priority() {
                tracing::warn!("could not lower CPU/IO priority: {e}");
            }
            run_pass(paths, opts, progress)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DedupeError + 'a {
    move |source| DedupeError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The trees of a pass and the one btrfs filesystem they are on.
struct ResolvedTrees {
    /// Live (writable) trees first, then snapshots.
    trees: Vec<Tree>,
    /// A handle on the filesystem (the first tree's root directory).
    fs: File,
    /// The filesystem's sector size.
    sector_size: u32,
}

/// The filesystem of the first tree, which all others must share.
struct FirstFs {
    dir: File,
    fsid: [u8; 16],
    sector_size: u32,
    root: PathBuf,
}

/// Open the trees, check they share one btrfs, order live before snapshots.
fn resolve_trees(paths: &[PathBuf], opts: &DedupeOptions) -> Result<ResolvedTrees, DedupeError> {
    let mut trees: Vec<Tree> = Vec::new();
    let mut first_fs: Option<FirstFs> = None;
    for p in paths {
        let root = fs::canonicalize(p).map_err(io_err("resolve", p))?;
        if trees.iter().any(|t| t.root == root) {
            continue;
        }
        let dir = File::open(&root).map_err(io_err("open", &root))?;
        let meta = dir.metadata().map_err(io_err("stat", &root))?;
        let btrfs_fs::FsFacts {
            fsid,
            sector_size: sector,
        } = btrfs_fs::fs_info(&dir).map_err(|_| DedupeError::NotBtrfs(root.clone()))?;
        let facts =
            btrfs_fs::subvol_facts(&dir).map_err(io_err("read subvolume info of", &root))?;
        match &first_fs {
            Some(first) if first.fsid != fsid => {
                return Err(DedupeError::DifferentFilesystems(first.root.clone(), root))
            }
            Some(_) => {}
            None => {
                first_fs = Some(FirstFs {
                    dir,
                    fsid,
                    sector_size: sector,
                    root: root.clone(),
                })
            }
        }
        let is_subvol_root = meta.is_dir() && meta.ino() == 256;
        let uuid = uuid::Uuid::from_bytes(facts.uuid);
        trees.push(Tree {
            index_path: index::index_path(&opts.index_dir, &facts.uuid, is_subvol_root, &root),
            root,
            uuid,
            readonly: facts.readonly,
            dev: meta.dev(),
            generation: facts.generation,
        });
    }
    let first_fs = first_fs.ok_or(DedupeError::NoPaths)?;
    // Live (writable) trees first, so their extents become the shared ones that
    // later snapshots inherit; snapshots keep the caller's order (newest first
    // shares the most with the live data).
    trees.sort_by_key(|t| t.readonly);
    Ok(ResolvedTrees {
        trees,
        fs: first_fs.dir,
        sector_size: first_fs.sector_size,
    })
}

fn measure(fs: &File, root: &Path) -> Result<SpaceUsed, DedupeError> {
    crate::sys::btrfs::ioctl::sync(fs.as_fd())
        .map_err(io_err("commit the transaction of", root))?;
    btrfs_fs::space_used(fs).map_err(io_err("read space info of", root))
}

/// A tree's scan result while the pass runs.
struct TreeState {
    files: Vec<FileEntry>,
    /// In memory, or None when spilled to `staged`.
    records: Option<Vec<BlockRec>>,
    staged: PathBuf,
    nrecords: u64,
    base: u32,
}

fn run_pass(
    paths: &[PathBuf],
    opts: &DedupeOptions,
    progress: &dyn Progress,
) -> Result<DedupeReport, DedupeError> {
    let started = Instant::now();
    let ResolvedTrees {
        trees,
        fs: fs_file,
        sector_size: sector,
    } = resolve_trees(paths, opts)?;
    let bs = opts.block_size;
    if bs == 0 || bs % sector as u64 != 0 || bs > extent::MAX_DEDUPE_LEN || bs > u32::MAX as u64 {
        return Err(DedupeError::BadBlockSize { size: bs, sector });
    }
    let mut report = DedupeReport {
        dry_run: opts.dry_run,
        block_size: bs,
        ..Default::default()
    };
    let first_root = trees[0].root.clone();
    report.space_before = measure(&fs_file, &first_root)?;

    let staging = opts
        .index_dir
        .join(format!(".staging-{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(io_err("create index directory", &staging))?;
    let result = scan_match_apply(&trees, opts, &staging, &fs_file, progress, &mut report);
    let _ = fs::remove_dir_all(&staging);
    result?;
    report.space_freed = report.space_before.data as i64 - report.space_after.data as i64;
    report.metadata_growth =
        report.space_after.metadata as i64 - report.space_before.metadata as i64;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

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

fn scan_match_apply(
    trees: &[Tree],
    opts: &DedupeOptions,
    staging: &Path,
    fs_file: &File,
    progress: &dyn Progress,
    report: &mut DedupeReport,
) -> Result<(), DedupeError> {
    let bs = opts.block_size;
    let budget = (opts.max_memory / 2).max(1024);
    let min_size = 4096u64;
    let phys_map: scan::PhysMap = Mutex::new(HashMap::new());
    let mut states: Vec<TreeState> = Vec::new();
    let mut in_memory: u64 = 0;
    let mut skips = Skips::default();

    let t_scan = Instant::now();
    // Phase A: classify every tree's files against its index; reused hashes seed
    // the physical-address map so shared extents of new snapshots are not re-read.
    let mut prepared = Vec::new();
    for tree in trees {
        let old = load_old(tree, bs, report);
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
            prepared.push((true, scan::Prepared::from_index(files, recs)));
            continue;
        }
        let mut old_map: scan::OldIndex = HashMap::new();
        if let Some(Index {
            files,
            records: recs,
            ..
        }) = old
        {
            let mut by_file: Vec<Vec<BlockRec>> = vec![Vec::new(); files.len()];
            for r in recs {
                by_file[r.file as usize].push(r);
            }
            for (f, r) in files.into_iter().zip(by_file) {
                old_map.insert(f.rel.clone(), (f, r));
            }
        }
        prepared.push((
            false,
            scan::prepare_tree(&tree.root, tree.dev, min_size, old_map, &mut skips),
        ));
    }
    let must_read = prepared.iter().any(|(_, p)| !p.to_read.is_empty());
    if must_read {
        let mut map = phys_map.lock().expect("phys map lock");
        for (_, p) in &prepared {
            for r in &p.scan.records {
                if r.phys != 0 {
                    map.insert(r.phys, r.hash);
                }
            }
        }
    }

    // Phase B: read and hash what changed, stage each tree's records.
    let mut base = 0u32;
    for ((unchanged, prep), tree) in prepared.into_iter().zip(trees) {
        let reader = scan::TreeReader {
            root: &tree.root,
            dev: tree.dev,
            block_size: bs,
            phys_map: &phys_map,
        };
        let ts = reader.read_tree(prep, &mut skips, progress);
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
        let nrec = ts.records.len() as u64;
        let staged = staging.join(tree.index_path.file_name().expect("index file name"));
        let hdr = IndexHeader {
            block_size: bs as u32,
            generation: 0,
            uuid: *tree.uuid.as_bytes(),
        };
        let keep = in_memory + nrec * plan::BYTES_PER_RECORD as u64 <= budget;
        let records = if keep {
            in_memory += nrec * plan::BYTES_PER_RECORD as u64;
            Some(ts.records)
        } else {
            index::write(&staged, &hdr, &ts.files, &ts.records)?;
            None
        };
        let n = ts.files.len() as u32;
        states.push(TreeState {
            files: ts.files,
            records,
            staged,
            nrecords: nrec,
            base,
        });
        base += n;
    }
    drop(phys_map);
    report.skipped = skips;

    let mut table = FileTable {
        trees: trees.to_vec(),
        files: Vec::new(),
        block_size: bs,
    };
    for (t, st) in states.iter().enumerate() {
        table
            .files
            .extend(st.files.iter().cloned().map(|f| (t as u32, f)));
    }

    report.scan_seconds = t_scan.elapsed().as_secs_f64();
    let t_match = Instant::now();
    // Matching, one hash partition at a time.
    let total_records: u64 = states.iter().map(|s| s.nrecords).sum();
    report.records = total_records;
    let parts = (total_records * plan::BYTES_PER_RECORD as u64)
        .div_ceil(budget)
        .max(1) as u32;
    report.partitions = parts;
    let mut pairs = Vec::new();
    for p in 0..parts {
        progress.phase(&format!("matching (partition {}/{parts})", p + 1), 0);
        let mut recs: Vec<BlockRec> = Vec::new();
        for st in &states {
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
                    let v = index::read(&st.staged, |r| plan::partition_of(&r.hash, parts) == p)?
                        .records;
                    recs.extend(v.iter().map(globalize));
                }
            }
        }
        let m = plan::match_records(&mut recs, &table, &mut pairs);
        report.duplicate_bytes += m.duplicate_bytes;
        report.duplicate_extent_bytes += m.duplicate_extent_bytes;
        report.already_shared_bytes += m.already_shared_bytes;
        report.unchanged_duplicate_bytes += m.unchanged_group_bytes;
    }
    let ranges = plan::merge_pairs(&mut pairs, bs, &table);
    drop(pairs);
    let calls = plan::batch_calls(ranges, &table);
    report.match_seconds = t_match.elapsed().as_secs_f64();

    if opts.dry_run {
        report.space_after = report.space_before;
        return Ok(());
    }
    let t_dedupe = Instant::now();
    let outcome = apply::Applier::new(&table, bs, opts.lock_wait, opts.retry_for, report, progress)
        .run(calls);
    report.dedupe_seconds = t_dedupe.elapsed().as_secs_f64();
    report.space_after = measure(fs_file, &trees[0].root)?;

    // Index: new physical addresses of moved blocks, pending flags, generation
    // after our own changes (read after the commit in `measure`).
    progress.phase("writing index", 0);
    let mut moved_by_tree: Vec<Vec<(u32, u32, u64)>> = vec![Vec::new(); states.len()];
    for (f, b, p) in outcome.moved {
        let t = table.files[f as usize].0 as usize;
        moved_by_tree[t].push((f - states[t].base, b, p));
    }
    for (t, st) in states.into_iter().enumerate() {
        let tree = &trees[t];
        let mut recs = match st.records {
            Some(v) => v,
            None => index::read(&st.staged, |_| true)?.records,
        };
        recs.sort_unstable_by_key(|r| (r.file, r.block));
        for (f, b, p) in &moved_by_tree[t] {
            if let Ok(i) = recs.binary_search_by_key(&(*f, *b), |r| (r.file, r.block)) {
                recs[i].phys = *p;
            }
        }
        let mut files = st.files;
        for (i, f) in files.iter_mut().enumerate() {
            f.pending = outcome.still_pending.contains(&(st.base + i as u32));
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
    }
    Ok(())
}
