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

/// Read an index: header, file table, and the records for which `keep` is true
/// (records keep their file-local ids). The checksum covers the whole file, so a
/// filtered read still detects corruption.
pub fn read(
    path: &Path,
    mut keep: impl FnMut(&BlockRec) -> bool,
) -> Result<(IndexHeader, Vec<FileEntry>, Vec<BlockRec>), IndexError> {
    let io_err = |source| IndexError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |what| IndexError::Corrupt {
        path: path.to_owned(),
        what,
    };
    let f = File::open(path).map_err(io_err)?;
    let total = f.metadata().map_err(io_err)?.len();
    let mut r = HashingReader {
        inner: BufReader::with_capacity(1 << 20, f),
        hasher: blake3::Hasher::new(),
    };
    let eof = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("truncated")
        } else {
            io_err(e)
        }
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(eof)?;
    if &magic != MAGIC {
        return Err(corrupt("bad magic"));
    }
    if r.u32().map_err(eof)? != VERSION {
        return Err(corrupt("version"));
    }
    let block_size = r.u32().map_err(eof)?;
    let generation = r.u64().map_err(eof)?;
    let mut uuid = [0u8; 16];
    r.read_exact(&mut uuid).map_err(eof)?;
    let nfiles = r.u64().map_err(eof)?;
    let nrecs = r.u64().map_err(eof)?;
    if nrecs.saturating_mul(32) > total || nfiles.saturating_mul(40) > total {
        return Err(corrupt("counts larger than the file"));
    }
    let mut files = Vec::with_capacity(nfiles as usize);
    for _ in 0..nfiles {
        let plen = r.u32().map_err(eof)? as u64;
        if plen > 1 << 16 {
            return Err(corrupt("path length"));
        }
        let mut p = vec![0u8; plen as usize];
        r.read_exact(&mut p).map_err(eof)?;
        files.push(FileEntry {
            rel: PathBuf::from(std::ffi::OsStr::from_bytes(&p)),
            ino: r.u64().map_err(eof)?,
            size: r.u64().map_err(eof)?,
            mtime_ns: r.u64().map_err(eof)? as i64,
            ctime_ns: r.u64().map_err(eof)? as i64,
            pending: r.u32().map_err(eof)? != 0,
        });
    }
    let mut recs = Vec::new();
    let mut buf = [0u8; 32];
    for _ in 0..nrecs {
        r.read_exact(&mut buf).map_err(eof)?;
        let rec = decode(&buf);
        if rec.file as u64 >= nfiles {
            return Err(corrupt("record names a file that does not exist"));
        }
        if keep(&rec) {
            recs.push(rec);
        }
    }
    let want = r.hasher.finalize();
    let mut got = [0u8; 32];
    r.inner.read_exact(&mut got).map_err(eof)?;
    if want.as_bytes() != &got {
        return Err(corrupt("checksum mismatch"));
    }
    Ok((
        IndexHeader {
            block_size,
            generation,
            uuid,
        },
        files,
        recs,
    ))
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

    fn sample() -> (IndexHeader, Vec<FileEntry>, Vec<BlockRec>) {
        let hdr = IndexHeader {
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
        let recs = (0..100u32)
            .map(|i| BlockRec {
                hash: [i as u8; 16],
                phys: i as u64 * 4096,
                file: i % 2,
                block: i,
            })
            .collect();
        (hdr, files, recs)
    }

    #[test]
    fn roundtrip_and_filtered_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.idx");
        let (hdr, files, recs) = sample();
        write(&p, &hdr, &files, &recs).unwrap();
        let (h2, f2, r2) = read(&p, |_| true).unwrap();
        assert_eq!((h2, f2, r2), (hdr, files, recs.clone()));
        let (_, _, odd) = read(&p, |r| r.block % 2 == 1).unwrap();
        assert_eq!(odd.len(), 50);
        // No temp file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.idx");
        let (hdr, files, recs) = sample();
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
