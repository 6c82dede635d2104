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
mod pass;
mod plan;
mod report;
mod scan;

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::progress::Progress;
use crate::sys::btrfs::fs as btrfs_fs;
pub use crate::sys::btrfs::fs::SpaceUsed;
use crate::sys::{extent, io_hints};
pub use report::{DedupeReport, SkipCount, SkipReason, Skips, TreeReport};

use index::{FileEntry, IndexError};
use pass::Pass;
use plan::FileFacts;

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

/// Maps an I/O error of `action` on `path` to [`DedupeError::Io`].
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

/// Commit the transaction, then read the filesystem's space usage.
fn measure(fs: &File, root: &Path) -> Result<SpaceUsed, DedupeError> {
    crate::sys::btrfs::ioctl::sync(fs.as_fd())
        .map_err(io_err("commit the transaction of", root))?;
    btrfs_fs::space_used(fs).map_err(io_err("read space info of", root))
}

/// A block size must be a multiple of the sector size, fit in one dedupe call and
/// in the index's 32-bit field.
fn check_block_size(bs: u64, sector: u32) -> Result<(), DedupeError> {
    if bs == 0 || bs % sector as u64 != 0 || bs > extent::MAX_DEDUPE_LEN || bs > u32::MAX as u64 {
        return Err(DedupeError::BadBlockSize { size: bs, sector });
    }
    Ok(())
}

/// One pass: resolve the trees, measure, run the phases (see [`pass::Pass`]) with
/// a staging directory for spilled records, measure again.
fn run_pass(
    paths: &[PathBuf],
    opts: &DedupeOptions,
    progress: &dyn Progress,
) -> Result<DedupeReport, DedupeError> {
    let started = Instant::now();
    let ResolvedTrees {
        trees,
        fs: fs_file,
        sector_size,
    } = resolve_trees(paths, opts)?;
    check_block_size(opts.block_size, sector_size)?;
    let mut report = DedupeReport {
        dry_run: opts.dry_run,
        block_size: opts.block_size,
        ..Default::default()
    };
    report.space_before = measure(&fs_file, &trees[0].root)?;

    let staging = opts
        .index_dir
        .join(format!(".staging-{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(io_err("create index directory", &staging))?;
    let result = Pass::new(&trees, opts, &staging, progress, &mut report).run(&fs_file);
    let _ = fs::remove_dir_all(&staging);
    result?;
    report.space_freed = report.space_before.data as i64 - report.space_after.data as i64;
    report.metadata_growth =
        report.space_after.metadata as i64 - report.space_before.metadata as i64;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
