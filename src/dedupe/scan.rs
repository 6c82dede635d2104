//! Scanning one tree: walk, decide what must be read, read and hash blocks.
//!
//! A reader thread does the syscalls (open, FS_IOC_GETFLAGS, one FIEMAP per file,
//! big sequential `pread`s into 4 MiB buffers) while the calling thread hashes, so
//! hashing runs on the second core. Data is read with O_DIRECT where the
//! filesystem allows it: one 4 MiB request goes to the device as a whole instead
//! of as page-cache readahead (3 GiB on a loop btrfs: 2.1 s instead of 4.6-5 s),
//! and a scan of a large tree does not push everything else out of the page
//! cache. Blocks whose physical location was already hashed in this pass or a
//! previous one (a snapshot sharing the live subvolume's extents) get that hash
//! without being read; holes are never read.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Mutex;

use super::index::FileEntry;
use super::plan::BlockRec;
use super::report::{SkipReason, Skips};
use crate::progress::Progress;
use crate::sys::{extent, io_hints};

/// Size of one read; a multiple of the block size.
const READ_BUF: usize = 4 << 20;
/// Buffers in flight between reader and hasher.
const BUFFERS: usize = 4;
/// Alignment of read buffers: O_DIRECT needs the filesystem's sector size (4 KiB
/// on x86_64, up to 64 KiB where pages are larger).
const DIRECT_ALIGN: usize = 64 << 10;

/// A zeroed byte buffer whose start is aligned to [`DIRECT_ALIGN`], as O_DIRECT
/// reads require; over-allocates a `Vec` so no unsafe allocation code is needed.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + DIRECT_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Physical address -> hash of blocks hashed so far (about 28 bytes per unique
/// block while scanning; dropped after the scan).
pub type PhysMap = Mutex<HashMap<u64, [u8; 16]>>;

/// Result of scanning one tree. Record file ids are local to `files`.
#[derive(Debug, Default)]
pub struct TreeScan {
    pub files: Vec<FileEntry>,
    pub records: Vec<BlockRec>,
    /// Regular files considered (not skipped).
    pub files_scanned: u64,
    /// Bytes of those files.
    pub bytes_in_files: u64,
    /// Bytes read from disk and hashed.
    pub bytes_read: u64,
    /// Bytes whose hash came from another file sharing the same extent.
    pub bytes_known_shared: u64,
    /// Bytes whose hash came from the index (file unchanged since the last pass).
    pub bytes_from_index: u64,
    /// Files whose hashes came from the index.
    pub files_from_index: u64,
}

/// The previous index of this tree, by relative path.
pub type OldIndex = HashMap<PathBuf, (FileEntry, Vec<BlockRec>)>;

struct Candidate {
    rel: PathBuf,
    meta: fs::Metadata,
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn entry_for(rel: PathBuf, m: &fs::Metadata, pending: bool) -> FileEntry {
    FileEntry {
        rel,
        ino: m.ino(),
        size: m.size(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        pending,
    }
}

/// Walk `root` without crossing into other filesystems or nested subvolumes (both
/// show up as a different `st_dev` on btrfs).
fn walk(root: &Path, dev: u64, skips: &mut Skips) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                skips.add(
                    SkipReason::Unreadable,
                    0,
                    &format!("{}: {e}", dir.display()),
                );
                continue;
            }
        };
        for ent in rd.flatten() {
            let child = rel.join(ent.file_name());
            let Ok(m) = ent.metadata() else {
                skips.add(
                    SkipReason::Unreadable,
                    0,
                    &root.join(&child).display().to_string(),
                );
                continue;
            };
            if m.dev() != dev {
                skips.add(
                    SkipReason::OtherFilesystem,
                    0,
                    &root.join(&child).display().to_string(),
                );
                continue;
            }
            if m.is_dir() {
                stack.push(child);
            } else if m.is_file() {
                out.push(Candidate {
                    rel: child,
                    meta: m,
                });
            }
        }
    }
    // Inode order approximates creation order, which approximates disk order.
    out.sort_unstable_by_key(|c| c.meta.ino());
    out
}

/// Blocks read from disk, on their way to be hashed.
struct ReadBlocks {
    file: u32,
    /// First block of the run.
    block0: u32,
    /// `phys[i]` is the physical address of block `block0 + i` (or 0).
    phys: Vec<u64>,
    buf: AlignedBuf,
    /// Bytes of `buf` holding data.
    len: usize,
    block_size: usize,
}

/// What the reader thread sends the hashing side.
enum Msg {
    /// Blocks read from disk: `phys[i]` belongs to block `block0 + i`.
    Data(ReadBlocks),
    /// Blocks whose hash is known from a shared extent.
    Known {
        file: u32,
        recs: Vec<BlockRec>,
        bytes: u64,
    },
    /// End of a file; `ok` is false when it changed while being read.
    End { file: u32, ok: bool },
    /// A file was skipped by the reader.
    Skip {
        file: u32,
        reason: SkipReason,
        bytes: u64,
        what: String,
    },
}

/// A tree after the walk: reused records are in `scan`, the rest must be read.
#[derive(Debug, Default)]
pub struct Prepared {
    pub scan: TreeScan,
    /// (file id, relative path, metadata at walk time)
    pub to_read: Vec<(u32, PathBuf, fs::Metadata)>,
}

impl Prepared {
    /// A tree taken entirely from its index without a walk.
    pub fn from_index(files: Vec<FileEntry>, records: Vec<BlockRec>) -> Prepared {
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        Prepared {
            scan: TreeScan {
                files_scanned: files.len() as u64,
                files_from_index: files.len() as u64,
                bytes_in_files: bytes,
                bytes_from_index: bytes,
                files,
                records,
                ..Default::default()
            },
            to_read: Vec::new(),
        }
    }
}

/// Walk a tree and split its files into reusable (unchanged since the index) and
/// to-be-read.
pub fn prepare_tree(
    root: &Path,
    dev: u64,
    min_size: u64,
    mut old: OldIndex,
    skips: &mut Skips,
) -> Prepared {
    let mut out = TreeScan::default();
    let cands = walk(root, dev, skips);
    let mut to_read: Vec<(u32, PathBuf, fs::Metadata)> = Vec::new();
    for c in cands {
        let size = c.meta.size();
        if size < min_size {
            skips.add(
                SkipReason::Tiny,
                size,
                &root.join(&c.rel).display().to_string(),
            );
            continue;
        }
        out.files_scanned += 1;
        out.bytes_in_files += size;
        let fresh = entry_for(c.rel.clone(), &c.meta, true);
        if let Some((e, recs)) = old.remove(&c.rel) {
            if (e.ino, e.size, e.mtime_ns, e.ctime_ns)
                == (fresh.ino, fresh.size, fresh.mtime_ns, fresh.ctime_ns)
            {
                let id = out.files.len() as u32;
                out.files_from_index += 1;
                out.bytes_from_index += size;
                out.records
                    .extend(recs.into_iter().map(|r| BlockRec { file: id, ..r }));
                out.files.push(e);
                continue;
            }
        }
        let id = out.files.len() as u32;
        out.files.push(fresh);
        to_read.push((id, c.rel, c.meta));
    }
    Prepared { scan: out, to_read }
}

/// What reading the files of one tree needs besides the files themselves.
pub struct TreeReader<'a> {
    /// The tree's root directory.
    pub root: &'a Path,
    /// Its `st_dev`: a file now on another device is skipped.
    pub dev: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Hashes by physical address, shared by all trees of the pass.
    pub phys_map: &'a PhysMap,
}

impl TreeReader<'_> {
    /// Read and hash the files of a prepared tree that could not be reused.
    pub fn read_tree(
        &self,
        prep: Prepared,
        skips: &mut Skips,
        progress: &dyn Progress,
    ) -> TreeScan {
        let Prepared { scan: out, to_read } = prep;
        if to_read.is_empty() {
            return out;
        }
        let total: u64 = to_read.iter().map(|(_, _, m)| m.size()).sum();
        progress.phase(&format!("hashing {}", self.root.display()), total);

        let bs = self.block_size as usize;
        let buf_len = (READ_BUF / bs).max(1) * bs;
        let (tx, rx) = sync_channel::<Msg>(BUFFERS * 2);
        let (buf_tx, buf_rx) = channel::<AlignedBuf>();
        for _ in 0..BUFFERS {
            buf_tx
                .send(AlignedBuf::new(buf_len))
                .expect("receiver alive");
        }
        let mut collector = Collector {
            dropped: vec![false; out.files.len()],
            out,
            pending: HashMap::new(),
            root: self.root,
            phys_map: self.phys_map,
            buf_tx,
            skips,
            progress,
        };
        std::thread::scope(|s| {
            let reader = Reader {
                tree: self,
                per_buf: (buf_len as u64 / self.block_size) as u32,
                tx,
                buf_rx,
                buf_back: collector.buf_tx.clone(),
            };
            let reader_files = &to_read;
            s.spawn(move || reader.run(reader_files));
            for msg in rx {
                collector.handle(msg);
            }
        });
        collector.finish()
    }
}

/// The calling thread's side of a tree read: hashes what the reader sends and
/// collects each file's records until its end decides whether they are kept.
struct Collector<'a> {
    out: TreeScan,
    /// Records of files whose end has not come yet.
    pending: HashMap<u32, Vec<BlockRec>>,
    /// Files skipped or changed while read, to be removed from `out`.
    dropped: Vec<bool>,
    root: &'a Path,
    phys_map: &'a PhysMap,
    /// Gives hashed buffers back to the reader.
    buf_tx: Sender<AlignedBuf>,
    skips: &'a mut Skips,
    progress: &'a dyn Progress,
}

impl Collector<'_> {
    /// Takes one message from the reader.
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Data(data) => self.hash(data),
            Msg::Known { file, recs, bytes } => {
                self.out.bytes_known_shared += bytes;
                self.progress.advance(bytes);
                self.pending.entry(file).or_default().extend(recs);
            }
            Msg::End { file, ok } => self.end_file(file, ok),
            Msg::Skip {
                file,
                reason,
                bytes,
                what,
            } => {
                self.pending.remove(&file);
                self.dropped[file as usize] = true;
                self.skips.add(reason, bytes, &what);
            }
        }
    }

    /// Hashes blocks read from disk into the file's records, makes their physical
    /// addresses known, and gives the buffer back to the reader.
    fn hash(&mut self, data: ReadBlocks) {
        let ReadBlocks {
            file,
            block0,
            phys,
            buf,
            len,
            block_size,
        } = data;
        let recs = self.pending.entry(file).or_default();
        let mut new_known = Vec::new();
        for (i, chunk) in buf[..len].chunks(block_size).enumerate() {
            let h = blake3::hash(chunk);
            let mut hash = [0u8; 16];
            hash.copy_from_slice(&h.as_bytes()[..16]);
            let p = phys[i];
            recs.push(BlockRec {
                hash,
                phys: p,
                file,
                block: block0 + i as u32,
            });
            if p != 0 {
                new_known.push((p, hash));
            }
        }
        self.out.bytes_read += len as u64;
        self.progress.advance(len as u64);
        if !new_known.is_empty() {
            self.phys_map
                .lock()
                .expect("phys map lock")
                .extend(new_known);
        }
        let _ = self.buf_tx.send(buf);
    }

    /// A file's end: its records are kept, or the file is dropped when it changed
    /// while being read.
    fn end_file(&mut self, file: u32, ok: bool) {
        let recs = self.pending.remove(&file).unwrap_or_default();
        if ok {
            self.out.records.extend(recs);
        } else {
            self.dropped[file as usize] = true;
            let e = &self.out.files[file as usize];
            self.skips.add(
                SkipReason::ChangedDuringScan,
                e.size,
                &self.root.join(&e.rel).display().to_string(),
            );
        }
    }

    /// The tree's scan without the dropped files.
    fn finish(mut self) -> TreeScan {
        if self.dropped.iter().any(|d| *d) {
            compact(&mut self.out, &self.dropped);
        }
        self.out
    }
}

/// Remove dropped files from the table and renumber the records.
fn compact(out: &mut TreeScan, dropped: &[bool]) {
    let mut remap = vec![u32::MAX; out.files.len()];
    let mut files = Vec::with_capacity(out.files.len());
    for (i, f) in std::mem::take(&mut out.files).into_iter().enumerate() {
        if dropped[i] {
            out.files_scanned -= 1;
            out.bytes_in_files -= f.size;
            continue;
        }
        remap[i] = files.len() as u32;
        files.push(f);
    }
    out.files = files;
    out.records.retain_mut(|r| {
        let n = remap[r.file as usize];
        r.file = n;
        n != u32::MAX
    });
}

/// Opens `path` read-only with `flags`, plus O_NOATIME where allowed (it
/// needs ownership or CAP_FOWNER and fails with EPERM otherwise).
fn open_read(path: &Path, flags: i32) -> io::Result<File> {
    let open = |flags| OpenOptions::new().read(true).custom_flags(flags).open(path);
    match open(flags | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(flags),
        r => r,
    }
}

fn open_noatime(path: &Path) -> io::Result<File> {
    open_read(path, 0)
}

/// Opens `path` for O_DIRECT reads (fails where the filesystem does not support it).
fn open_direct(path: &Path) -> io::Result<File> {
    open_read(path, libc::O_DIRECT)
}

/// Physical address of each block if it lies inside one addressable extent (else 0),
/// or `None` for a block that is entirely a hole or inline data.
fn block_phys(exts: &[extent::Extent], size: u64, bs: u64) -> Vec<Option<u64>> {
    let nblocks = size.div_ceil(bs) as usize;
    let mut out = vec![None; nblocks];
    let mut k = 0usize;
    for (b, slot) in out.iter_mut().enumerate() {
        let start = b as u64 * bs;
        let end = (start + bs).min(size);
        while k < exts.len() && exts[k].logical + exts[k].length <= start {
            k += 1;
        }
        let mut covered = false;
        let mut inline = false;
        let mut single: Option<u64> = None;
        let mut j = k;
        while j < exts.len() && exts[j].logical < end {
            let e = &exts[j];
            covered = true;
            if e.flags & extent::FIEMAP_EXTENT_DATA_INLINE != 0 {
                inline = true;
            }
            if e.logical <= start && e.logical + e.length >= end && e.addressable() {
                single = Some(e.physical + (start - e.logical));
            }
            j += 1;
        }
        if covered && !inline {
            *slot = Some(single.unwrap_or(0));
        }
    }
    out
}

/// The reader thread of a tree read: its ends of the channels.
struct Reader<'a> {
    tree: &'a TreeReader<'a>,
    /// Blocks that fit in one buffer.
    per_buf: u32,
    tx: SyncSender<Msg>,
    /// Free buffers.
    buf_rx: Receiver<AlignedBuf>,
    /// Returns a buffer that is not sent on (after a short read).
    buf_back: Sender<AlignedBuf>,
}

/// The hashing side is gone: the reader stops.
struct Disconnected;

/// A file that was opened and passed the checks.
struct OpenedFile {
    /// The buffered descriptor (FIEMAP and the flags used it).
    f: File,
    /// Its metadata when opened.
    before: fs::Metadata,
    exts: Vec<extent::Extent>,
}

/// Why the reader skips a file, and what to say about it.
struct Skipped {
    reason: SkipReason,
    what: String,
}

/// Where the hashes of a file's blocks come from.
struct BlockSources {
    /// Blocks whose extent was already hashed.
    known: Vec<BlockRec>,
    /// Bytes of the known blocks.
    known_bytes: u64,
    /// (block, physical address or 0) of the blocks to read; holes are in neither.
    to_read: Vec<(u32, u64)>,
}

impl Reader<'_> {
    /// Reads `files` in order until done or the hashing side is gone.
    fn run(&self, files: &[(u32, PathBuf, fs::Metadata)]) {
        for (id, rel, meta) in files {
            if self.read_file(*id, rel, meta).is_err() {
                return;
            }
        }
    }

    /// One file: open and check it, send the hashes known from shared extents,
    /// send the rest of its blocks read, then its end. `meta` is from the walk.
    fn read_file(&self, id: u32, rel: &Path, meta: &fs::Metadata) -> Result<(), Disconnected> {
        let path = self.tree.root.join(rel);
        let opened = match self.open_checked(&path) {
            Ok(opened) => opened,
            Err(Skipped { reason, what }) => {
                let _ = self.tx.send(Msg::Skip {
                    file: id,
                    reason,
                    bytes: meta.size(),
                    what,
                });
                return Ok(());
            }
        };
        let size = opened.before.size();
        let phys = block_phys(&opened.exts, size, self.tree.block_size);
        let sources = self.block_sources(id, &phys, size);
        if !sources.known.is_empty() {
            let _ = self.tx.send(Msg::Known {
                file: id,
                recs: sources.known,
                bytes: sources.known_bytes,
            });
        }
        let mut ok = self.read_blocks(id, &path, &opened, &sources.to_read)?;
        // Re-stat: a file written while we read it is skipped (its hashes may mix
        // old and new data; the kernel would refuse the dedupe anyway).
        match fs::symlink_metadata(&path) {
            Ok(after) if same_version(&after, &opened.before) && same_version(&after, meta) => {}
            _ => ok = false,
        }
        self.tx
            .send(Msg::End { file: id, ok })
            .map_err(|_| Disconnected)
    }

    /// Opens a file and checks that it can be deduped: still on the tree's
    /// device, copy-on-write, its extents mappable, not a small inline file.
    fn open_checked(&self, path: &Path) -> Result<OpenedFile, Skipped> {
        let skip = |reason, what: String| Skipped { reason, what };
        let f = open_noatime(path)
            .map_err(|e| skip(SkipReason::Unreadable, format!("{}: {e}", path.display())))?;
        let Ok(before) = f.metadata() else {
            return Err(skip(SkipReason::Unreadable, path.display().to_string()));
        };
        if before.dev() != self.tree.dev {
            return Err(skip(
                SkipReason::OtherFilesystem,
                path.display().to_string(),
            ));
        }
        match extent::inode_flags(&f) {
            Ok(fl) if fl & extent::FS_NOCOW_FL != 0 => {
                return Err(skip(SkipReason::NoDataCow, path.display().to_string()));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(skip(
                    SkipReason::Unreadable,
                    format!("{}: FS_IOC_GETFLAGS: {e}", path.display()),
                ));
            }
        }
        let size = before.size();
        let exts = extent::fiemap(&f, 0, size).map_err(|e| {
            skip(
                SkipReason::Unreadable,
                format!("{}: FIEMAP: {e}", path.display()),
            )
        })?;
        if exts
            .iter()
            .any(|e| e.flags & extent::FIEMAP_EXTENT_DATA_INLINE != 0)
            && size <= self.tree.block_size
        {
            return Err(skip(SkipReason::Tiny, path.display().to_string()));
        }
        Ok(OpenedFile { f, before, exts })
    }

    /// Resolve blocks whose extent was already hashed; the rest are read.
    fn block_sources(&self, id: u32, phys: &[Option<u64>], size: u64) -> BlockSources {
        let bs = self.tree.block_size;
        let mut known = Vec::new();
        let mut known_bytes = 0u64;
        let mut read_blocks: Vec<(u32, u64)> = Vec::new();
        let map = self.tree.phys_map.lock().expect("phys map lock");
        for (b, p) in phys.iter().enumerate() {
            let Some(p) = *p else { continue };
            if p != 0 {
                if let Some(h) = map.get(&p) {
                    known.push(BlockRec {
                        hash: *h,
                        phys: p,
                        file: id,
                        block: b as u32,
                    });
                    known_bytes += (size - b as u64 * bs).min(bs);
                    continue;
                }
            }
            read_blocks.push((b as u32, p));
        }
        BlockSources {
            known,
            known_bytes,
            to_read: read_blocks,
        }
    }

    /// Reads `blocks` (block, physical address) in runs and sends them to be
    /// hashed; Ok(false) when the file is shorter than at stat time.
    fn read_blocks(
        &self,
        id: u32,
        path: &Path,
        opened: &OpenedFile,
        blocks: &[(u32, u64)],
    ) -> Result<bool, Disconnected> {
        let bs = self.tree.block_size;
        let size = opened.before.size();
        // O_DIRECT for the data when the filesystem takes it; the buffered
        // descriptor stays the fallback (and the one FIEMAP and flags used).
        let mut direct = None;
        if !blocks.is_empty() {
            direct = open_direct(path).ok();
            if direct.is_none() {
                io_hints::fadvise_sequential(&opened.f);
            }
        }
        let mut ok = true;
        let mut i = 0;
        while i < blocks.len() && ok {
            let block0 = blocks[i].0;
            let n = run_len(blocks, i, self.per_buf);
            let off = block0 as u64 * bs;
            let want = ((n as u64 * bs).min(size - off)) as usize;
            let Ok(mut buf) = self.buf_rx.recv() else {
                return Err(Disconnected);
            };
            match read_chunk(&mut direct, &opened.f, &mut buf, off, want, bs) {
                Ok(got) if got == want => {
                    let phys = blocks[i..i + n].iter().map(|(_, p)| *p).collect();
                    let data = ReadBlocks {
                        file: id,
                        block0,
                        phys,
                        buf,
                        len: want,
                        block_size: bs as usize,
                    };
                    self.tx.send(Msg::Data(data)).map_err(|_| Disconnected)?;
                }
                _ => {
                    // Shorter than at stat time: the file is being written.
                    ok = false;
                    let _ = self.buf_back.send(buf);
                }
            }
            i += n;
        }
        Ok(ok)
    }
}

/// A run of consecutive blocks starting at `blocks[i]`, at most one buffer
/// (`per_buf` blocks) long: its length.
fn run_len(blocks: &[(u32, u64)], i: usize, per_buf: u32) -> usize {
    let block0 = blocks[i].0;
    let mut n = 1usize;
    while i + n < blocks.len() && (n as u32) < per_buf && blocks[i + n].0 == block0 + n as u32 {
        n += 1;
    }
    n
}

/// Same inode, size, mtime and ctime.
fn same_version(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    (
        a.ino(),
        a.size(),
        a.mtime(),
        a.mtime_nsec(),
        a.ctime(),
        a.ctime_nsec(),
    ) == (
        b.ino(),
        b.size(),
        b.mtime(),
        b.mtime_nsec(),
        b.ctime(),
        b.ctime_nsec(),
    )
}

/// Reads `want` bytes at `off` into `buf`: through `direct` while it works,
/// asking for whole blocks (aligned; the kernel stops at end of file). Anything
/// odd there (a short read, EINVAL on an unaligned tail) drops `direct`, and the
/// rest of the file is read through the buffered `f`.
fn read_chunk(
    direct: &mut Option<File>,
    f: &File,
    buf: &mut [u8],
    off: u64,
    want: usize,
    bs: u64,
) -> io::Result<usize> {
    if let Some(d) = direct {
        let req = (want as u64).div_ceil(bs) as usize * bs as usize;
        match read_at_least(d, &mut buf[..req], off, want) {
            Ok(n) if n >= want => return Ok(want),
            _ => {
                *direct = None;
                io_hints::fadvise_sequential(f);
            }
        }
    }
    read_full(f, &mut buf[..want], off)
}

fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let len = buf.len();
    read_at_least(f, buf, off, len)
}

/// Reads into `buf` at `off` until `want` bytes are in or end of file; returns
/// the bytes read (up to `buf.len()`: an O_DIRECT read asks for whole blocks).
fn read_at_least(f: &File, buf: &mut [u8], off: u64, want: usize) -> io::Result<usize> {
    let mut done = 0;
    while done < want {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(logical: u64, physical: u64, length: u64, flags: u32) -> extent::Extent {
        extent::Extent {
            logical,
            physical,
            length,
            flags,
        }
    }

    #[test]
    fn aligned_buffers_start_on_the_direct_io_boundary() {
        for len in [4096, 4 << 20, 5000] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % DIRECT_ALIGN, 0);
            b[len - 1] = 7;
            assert_eq!(b[len - 1], 7);
        }
    }

    /// The O_DIRECT path asks for whole blocks and must return exactly the file's
    /// bytes at the unaligned tail. Needs a filesystem with O_DIRECT (not tmpfs):
    /// the test file lives under /var/tmp.
    #[test]
    fn direct_read_of_an_unaligned_tail_returns_the_file_bytes() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let bs = 128 * 1024u64;
        let data: Vec<u8> = (0..bs as usize + 5000)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        fs::write(&path, &data).unwrap();
        let f = open_direct(&path).expect("/var/tmp takes O_DIRECT");
        let mut buf = AlignedBuf::new(2 * bs as usize);
        let got = read_at_least(&f, &mut buf[..2 * bs as usize], bs, 5000).unwrap();
        assert_eq!(got, 5000);
        assert_eq!(&buf[..5000], &data[bs as usize..]);
        let got = read_at_least(&f, &mut buf[..2 * bs as usize], 0, bs as usize + 5000).unwrap();
        assert_eq!(got, data.len());
        assert_eq!(&buf[..got], &data[..]);
    }

    #[test]
    fn block_phys_handles_holes_splits_and_encoded_extents() {
        let bs = 8;
        let exts = vec![
            ext(0, 1000, 16, 0), // blocks 0,1 inside one extent
            ext(16, 5000, 4, 0), // block 2 split across two extents
            ext(20, 7000, 4, 0),
            ext(40, 9000, 8, extent::FIEMAP_EXTENT_ENCODED), // block 5 compressed
        ];
        // size 50: blocks 0..=6; block 3,4 hole; block 6 (48..50) hole
        let p = block_phys(&exts, 50, bs);
        assert_eq!(
            p,
            vec![Some(1000), Some(1008), Some(0), None, None, Some(0), None]
        );
    }
}
