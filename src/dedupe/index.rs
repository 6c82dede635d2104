//! The incremental index: one file per scanned subvolume tree, so a later pass
//! re-hashes only what changed.
//!
//! File name: `<uuid>.idx` for a subvolume root, `<uuid>-<path hash>.idx` for a
//! directory inside one. Content (little endian): magic, version, block size,
//! subvolume generation at the end of the last pass, uuid, file table (relative
//! path, inode, size, mtime, ctime, pending flag), block records (32 bytes each),
//! and a BLAKE3 checksum of all of it. Written to a temp file, fsynced, renamed,
//! and the directory fsynced, so a crash leaves the old or the new index, never
//! a torn one; a missing or corrupt index (bad checksum, other version or block
//! size) just means a full re-scan of that tree.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::plan::BlockRec;

const MAGIC: &[u8; 8] = b"SVDEDUP1";
const VERSION: u32 = 1;

/// Why an index file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading or writing failed.
    #[error("dedupe index {path}: {source}")]
    Io {
        /// The index file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a complete index of this version (it will be rebuilt).
    #[error("dedupe index {path} is corrupt or from another version ({what}); it will be rebuilt")]
    Corrupt {
        /// The index file.
        path: PathBuf,
        /// What did not match.
        what: &'static str,
    },
}

/// Identity of a file's content as far as the index is concerned: if all of these
/// are unchanged the stored hashes are reused without reading the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the scanned root.
    pub rel: PathBuf,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// New or changed since the last completed pass (or its dedupe was deferred).
    pub pending: bool,
}

/// Header facts of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub block_size: u32,
    pub generation: u64,
    pub uuid: [u8; 16],
}

/// The index file of a scanned tree.
pub fn index_path(dir: &Path, uuid: &[u8; 16], root_is_subvol: bool, root: &Path) -> PathBuf {
    let u = uuid::Uuid::from_bytes(*uuid);
    if root_is_subvol {
        dir.join(format!("{u}.idx"))
    } else {
        let h = blake3::hash(root.as_os_str().as_bytes());
        dir.join(format!("{u}-{}.idx", &h.to_hex()[..16]))
    }
}

/// Write an index atomically (temp file, fsync, rename, fsync of the directory).
/// `records` carry file ids local to `files`.
pub fn write(
    path: &Path,
    hdr: &IndexHeader,
    files: &[FileEntry],
    records: &[BlockRec],
) -> Result<(), IndexError> {
    let io_err = |source| IndexError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut w = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, f),
            hasher: blake3::Hasher::new(),
        };
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&hdr.block_size.to_le_bytes())?;
        w.write_all(&hdr.generation.to_le_bytes())?;
        w.write_all(&hdr.uuid)?;
        w.write_all(&(files.len() as u64).to_le_bytes())?;
        w.write_all(&(records.len() as u64).to_le_bytes())?;
        for f in files {
            let p = f.rel.as_os_str().as_bytes();
            w.write_all(&(p.len() as u32).to_le_bytes())?;
            w.write_all(p)?;
            w.write_all(&f.ino.to_le_bytes())?;
            w.write_all(&f.size.to_le_bytes())?;
            w.write_all(&f.mtime_ns.to_le_bytes())?;
            w.write_all(&f.ctime_ns.to_le_bytes())?;
            w.write_all(&(f.pending as u32).to_le_bytes())?;
        }
        for r in records {
            w.write_all(&encode(r))?;
        }
        let sum = w.hasher.finalize();
        let mut inner = w.inner;
        inner.write_all(sum.as_bytes())?;
        let f = inner.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_err)
}

/// An index as read back: its header, file table and the records a read kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Block size, generation and uuid.
    pub header: IndexHeader,
    /// The file table; record file ids index into it.
    pub files: Vec<FileEntry>,
    /// The block records a read's filter kept (file-local ids).
    pub records: Vec<BlockRec>,
}

/// Read an index: header, file table, and the records for which `keep` is true
/// (records keep their file-local ids). The checksum covers the whole file, so a
/// filtered read still detects corruption.
pub fn read(path: &Path, keep: impl FnMut(&BlockRec) -> bool) -> Result<Index, IndexError> {
    let mut r = IndexReader::open(path)?;
    let Preamble {
        header,
        nfiles,
        nrecs,
    } = r.preamble()?;
    let files = r.file_table(nfiles)?;
    let records = r.records(nrecs, nfiles, keep)?;
    r.verify_checksum()?;
    Ok(Index {
        header,
        files,
        records,
    })
}

/// The fixed-size start of an index: its header and how many files and records
/// follow.
struct Preamble {
    header: IndexHeader,
    nfiles: u64,
    nrecs: u64,
}

/// One index file being read: a checksumming reader whose errors name the file.
struct IndexReader<'a> {
    path: &'a Path,
    /// Length of the file, to reject counts that cannot fit in it.
    total: u64,
    r: HashingReader<BufReader<File>>,
}

impl<'a> IndexReader<'a> {
    /// Opens `path` for reading.
    fn open(path: &'a Path) -> Result<Self, IndexError> {
        let io_err = |source| IndexError::Io {
            path: path.to_owned(),
            source,
        };
        let f = File::open(path).map_err(io_err)?;
        let total = f.metadata().map_err(io_err)?.len();
        Ok(IndexReader {
            path,
            total,
            r: HashingReader {
                inner: BufReader::with_capacity(1 << 20, f),
                hasher: blake3::Hasher::new(),
            },
        })
    }

    /// The file is not a valid index: `what` did not match.
    fn corrupt(&self, what: &'static str) -> IndexError {
        IndexError::Corrupt {
            path: self.path.to_owned(),
            what,
        }
    }

    /// A read error: the file ending early means it is truncated.
    fn eof(&self, e: io::Error) -> IndexError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.corrupt("truncated")
        } else {
            IndexError::Io {
                path: self.path.to_owned(),
                source: e,
            }
        }
    }

    /// Fills `buf` (checksummed).
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), IndexError> {
        self.r.read_exact(buf).map_err(|e| self.eof(e))
    }

    /// A little-endian u32 (checksummed).
    fn u32(&mut self) -> Result<u32, IndexError> {
        self.r.u32().map_err(|e| self.eof(e))
    }

    /// A little-endian u64 (checksummed).
    fn u64(&mut self) -> Result<u64, IndexError> {
        self.r.u64().map_err(|e| self.eof(e))
    }

    /// Magic, version, header and counts; counts the file cannot hold are corrupt.
    fn preamble(&mut self) -> Result<Preamble, IndexError> {
        let mut magic = [0u8; 8];
        self.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(self.corrupt("bad magic"));
        }
        if self.u32()? != VERSION {
            return Err(self.corrupt("version"));
        }
        let block_size = self.u32()?;
        let generation = self.u64()?;
        let mut uuid = [0u8; 16];
        self.read_exact(&mut uuid)?;
        let nfiles = self.u64()?;
        let nrecs = self.u64()?;
        if nrecs.saturating_mul(32) > self.total || nfiles.saturating_mul(40) > self.total {
            return Err(self.corrupt("counts larger than the file"));
        }
        Ok(Preamble {
            header: IndexHeader {
                block_size,
                generation,
                uuid,
            },
            nfiles,
            nrecs,
        })
    }

    /// The file table of `nfiles` entries.
    fn file_table(&mut self, nfiles: u64) -> Result<Vec<FileEntry>, IndexError> {
        let mut files = Vec::with_capacity(nfiles as usize);
        for _ in 0..nfiles {
            let plen = self.u32()? as u64;
            if plen > 1 << 16 {
                return Err(self.corrupt("path length"));
            }
            let mut p = vec![0u8; plen as usize];
            self.read_exact(&mut p)?;
            files.push(FileEntry {
                rel: PathBuf::from(std::ffi::OsStr::from_bytes(&p)),
                ino: self.u64()?,
                size: self.u64()?,
                mtime_ns: self.u64()? as i64,
                ctime_ns: self.u64()? as i64,
                pending: self.u32()? != 0,
            });
        }
        Ok(files)
    }

    /// The `nrecs` block records, keeping those for which `keep` is true; each
    /// must name one of the `nfiles` files.
    fn records(
        &mut self,
        nrecs: u64,
        nfiles: u64,
        mut keep: impl FnMut(&BlockRec) -> bool,
    ) -> Result<Vec<BlockRec>, IndexError> {
        let mut recs = Vec::new();
        let mut buf = [0u8; 32];
        for _ in 0..nrecs {
            self.read_exact(&mut buf)?;
            let rec = decode(&buf);
            if rec.file as u64 >= nfiles {
                return Err(self.corrupt("record names a file that does not exist"));
            }
            if keep(&rec) {
                recs.push(rec);
            }
        }
        Ok(recs)
    }

    /// Compares the checksum stored at the end with the one of everything read.
    fn verify_checksum(mut self) -> Result<(), IndexError> {
        let want = self.r.hasher.finalize();
        let mut got = [0u8; 32];
        self.r.inner.read_exact(&mut got).map_err(|e| self.eof(e))?;
        if want.as_bytes() != &got {
            return Err(self.corrupt("checksum mismatch"));
        }
        Ok(())
    }
}

fn encode(r: &BlockRec) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&r.hash);
    b[16..24].copy_from_slice(&r.phys.to_le_bytes());
    b[24..28].copy_from_slice(&r.file.to_le_bytes());
    b[28..32].copy_from_slice(&r.block.to_le_bytes());
    b
}

fn decode(b: &[u8; 32]) -> BlockRec {
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&b[..16]);
    BlockRec {
        hash,
        phys: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        file: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
        block: u32::from_le_bytes(b[28..32].try_into().expect("4 bytes")),
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: Read> HashingReader<R> {
    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let header = IndexHeader {
            block_size: 131072,
            generation: 42,
            uuid: [7; 16],
        };
        let files = vec![
            FileEntry {
                rel: "a/b".into(),
                ino: 257,
                size: 300000,
                mtime_ns: 1,
                ctime_ns: 2,
                pending: false,
            },
            FileEntry {
                rel: "c".into(),
                ino: 258,
                size: 5,
                mtime_ns: -3,
                ctime_ns: 4,
                pending: true,
            },
        ];
        let records = (0..100u32)
            .map(|i| BlockRec {
                hash: [i as u8; 16],
                phys: i as u64 * 4096,
                file: i % 2,
                block: i,
            })
            .collect();
        Index {
            header,
            files,
            records,
        }
    }

    #[test]
    fn roundtrip_and_filtered_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.idx");
        let Index {
            header: hdr,
            files,
            records: recs,
        } = sample();
        write(&p, &hdr, &files, &recs).unwrap();
        let Index {
            header: h2,
            files: f2,
            records: r2,
        } = read(&p, |_| true).unwrap();
        assert_eq!((h2, f2, r2), (hdr, files, recs.clone()));
        let odd = read(&p, |r| r.block % 2 == 1).unwrap().records;
        assert_eq!(odd.len(), 50);
        // No temp file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.idx");
        let Index {
            header: hdr,
            files,
            records: recs,
        } = sample();
        write(&p, &hdr, &files, &recs).unwrap();
        let mut bytes = fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            read(&p, |_| true),
            Err(IndexError::Corrupt { .. })
        ));
        bytes[mid] ^= 0x40;
        bytes.truncate(bytes.len() - 10);
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            read(&p, |_| true),
            Err(IndexError::Corrupt { .. })
        ));
        fs::write(&p, b"garbage").unwrap();
        assert!(matches!(
            read(&p, |_| true),
            Err(IndexError::Corrupt { .. })
        ));
    }
}
