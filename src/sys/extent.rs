//! File extent ioctls of the VFS, which the dedupe engine is built on:
//! FIDEDUPERANGE (share identical ranges; the kernel compares the bytes),
//! FIEMAP (where a file's extents are, and which are shared) and
//! FS_IOC_GETFLAGS (nodatacow files).
//!
//! Struct layouts follow the kernel's uapi headers (`linux/fs.h`,
//! `linux/fiemap.h`); their sizes are unit-tested against the values the
//! kernel's headers give, because the ioctl numbers encode those sizes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// `struct file_dedupe_range` (24 bytes) without its flexible array.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FileDedupeRange {
    pub src_offset: u64,
    pub src_length: u64,
    pub dest_count: u16,
    pub reserved1: u16,
    pub reserved2: u32,
}

/// `struct file_dedupe_range_info` (32 bytes): one destination of a dedupe call.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FileDedupeRangeInfo {
    pub dest_fd: i64,
    pub dest_offset: u64,
    pub bytes_deduped: u64,
    pub status: i32,
    pub reserved: u32,
}

/// Per-destination status: the ranges were identical and are now shared.
pub const FILE_DEDUPE_RANGE_SAME: i32 = 0;
/// Per-destination status: the bytes differ (BTRFS_SAME_DATA_DIFFERS); nothing changed.
pub const FILE_DEDUPE_RANGE_DIFFERS: i32 = 1;

/// The kernel copies the whole request into one page (`ioctl_file_dedupe_range`
/// rejects larger requests), so (4096 - 24) / 32 destinations fit in one call.
pub const MAX_DEDUPE_DESTS: usize =
    (4096 - std::mem::size_of::<FileDedupeRange>()) / std::mem::size_of::<FileDedupeRangeInfo>();

/// btrfs handles at most 16 MiB per dedupe request (BTRFS_MAX_DEDUPE_LEN).
pub const MAX_DEDUPE_LEN: u64 = 16 * 1024 * 1024;

/// `struct fiemap` header (32 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Fiemap {
    pub fm_start: u64,
    pub fm_length: u64,
    pub fm_flags: u32,
    pub fm_mapped_extents: u32,
    pub fm_extent_count: u32,
    pub fm_reserved: u32,
}

/// `struct fiemap_extent` (56 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FiemapExtent {
    pub fe_logical: u64,
    pub fe_physical: u64,
    pub fe_length: u64,
    pub fe_reserved64: [u64; 2],
    pub fe_flags: u32,
    pub fe_reserved: [u32; 3],
}

/// Last extent of the file.
pub const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Location unknown.
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
/// Not yet written (delayed allocation).
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
/// Compressed or otherwise encoded: the physical address is not byte-addressable.
pub const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
/// Data stored inline in metadata.
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
/// Shared with another file or snapshot.
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// `FS_NOCOW_FL`: the file is nodatacow (and therefore nodatasum).
pub const FS_NOCOW_FL: u32 = 0x0080_0000;

nix::ioctl_readwrite!(ioc_fideduperange, 0x94, 54, FileDedupeRange);
nix::ioctl_readwrite!(ioc_fiemap, b'f', 11, Fiemap);
nix::ioctl_read!(ioc_getflags, b'f', 1, libc::c_long);

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// One destination of a dedupe call and, after the call, its outcome.
#[derive(Debug, Clone, Copy)]
pub struct DedupeDest {
    pub fd: RawFd,
    pub offset: u64,
    /// Out: bytes the kernel shared.
    pub bytes_deduped: u64,
    /// Out: `FILE_DEDUPE_RANGE_SAME`, `FILE_DEDUPE_RANGE_DIFFERS`, or `-errno`.
    pub status: i32,
}

/// Ask the kernel to share `len` bytes of `src` at `src_offset` with each destination.
/// The kernel compares the bytes first, so differing data is never touched.
/// Per-destination results are written back into `dests`.
pub fn fideduperange(
    src: &File,
    src_offset: u64,
    len: u64,
    dests: &mut [DedupeDest],
) -> io::Result<()> {
    assert!(dests.len() <= MAX_DEDUPE_DESTS && len <= MAX_DEDUPE_LEN);
    // One contiguous u64 buffer keeps the header and the info array correctly aligned.
    let words = (24 + 32 * dests.len()) / 8;
    let mut buf = vec![0u64; words];
    let base = buf.as_mut_ptr() as *mut u8;
    // SAFETY: buf is large enough for the header plus dests.len() infos, 8-aligned.
    unsafe {
        let hdr = base as *mut FileDedupeRange;
        (*hdr).src_offset = src_offset;
        (*hdr).src_length = len;
        (*hdr).dest_count = dests.len() as u16;
        let infos = base.add(24) as *mut FileDedupeRangeInfo;
        for (i, d) in dests.iter().enumerate() {
            *infos.add(i) = FileDedupeRangeInfo {
                dest_fd: d.fd as i64,
                dest_offset: d.offset,
                ..Default::default()
            };
        }
        ioc_fideduperange(src.as_raw_fd(), hdr).map_err(errno)?;
        for (i, d) in dests.iter_mut().enumerate() {
            let info = *infos.add(i);
            d.bytes_deduped = info.bytes_deduped;
            d.status = info.status;
        }
    }
    Ok(())
}

/// One extent as FIEMAP reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

impl Extent {
    /// Whether `physical` is a plain byte address on disk (so equal addresses mean
    /// the same bytes). Compressed, inline, delayed and unknown extents are not.
    pub fn addressable(&self) -> bool {
        self.flags
            & (FIEMAP_EXTENT_ENCODED
                | FIEMAP_EXTENT_DATA_INLINE
                | FIEMAP_EXTENT_DELALLOC
                | FIEMAP_EXTENT_UNKNOWN)
            == 0
    }
}

/// The extents of `file` overlapping `[start, start + len)`, in logical order.
/// One ioctl per 256 extents.
pub fn fiemap(file: &File, start: u64, len: u64) -> io::Result<Vec<Extent>> {
    const BATCH: usize = 256;
    let mut out = Vec::new();
    let end = start.saturating_add(len);
    let mut pos = start;
    let words = (32 + 56 * BATCH) / 8;
    let mut buf = vec![0u64; words];
    loop {
        if pos >= end {
            break;
        }
        buf.iter_mut().for_each(|w| *w = 0);
        let base = buf.as_mut_ptr() as *mut u8;
        // SAFETY: buf holds the header plus BATCH extents, 8-aligned.
        let (n, last) = unsafe {
            let hdr = base as *mut Fiemap;
            (*hdr).fm_start = pos;
            (*hdr).fm_length = end - pos;
            (*hdr).fm_extent_count = BATCH as u32;
            ioc_fiemap(file.as_raw_fd(), hdr).map_err(errno)?;
            let n = (*hdr).fm_mapped_extents as usize;
            let exts = base.add(32) as *const FiemapExtent;
            let mut last = n == 0;
            for i in 0..n {
                let e = *exts.add(i);
                out.push(Extent {
                    logical: e.fe_logical,
                    physical: e.fe_physical,
                    length: e.fe_length,
                    flags: e.fe_flags,
                });
                if e.fe_flags & FIEMAP_EXTENT_LAST != 0 {
                    last = true;
                }
            }
            (n, last)
        };
        if last || n < BATCH {
            break;
        }
        let e = out.last().expect("n > 0");
        pos = e.logical + e.length;
    }
    Ok(out)
}

/// The inode flags (`FS_IOC_GETFLAGS`). The kernel writes an int despite the
/// `long` in the ioctl number, so only the low 32 bits are meaningful.
pub fn inode_flags(file: &File) -> io::Result<u32> {
    let mut v: libc::c_long = 0;
    // SAFETY: v is a valid out-pointer.
    unsafe { ioc_getflags(file.as_raw_fd(), &mut v) }.map_err(errno)?;
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    // Expected sizes are the kernel uapi headers' sizeof() values (checked with a C
    // compiler against /usr/include/linux/{fs,fiemap}.h).
    #[test]
    fn struct_sizes_match_kernel_headers() {
        assert_eq!(size_of::<FileDedupeRange>(), 24);
        assert_eq!(size_of::<FileDedupeRangeInfo>(), 32);
        assert_eq!(size_of::<Fiemap>(), 32);
        assert_eq!(size_of::<FiemapExtent>(), 56);
    }

    #[test]
    fn ioctl_numbers_match_kernel_headers() {
        assert_eq!(
            nix::request_code_readwrite!(0x94, 54, size_of::<FileDedupeRange>()) as u64,
            0xc018_9436
        );
        assert_eq!(
            nix::request_code_readwrite!(b'f', 11, size_of::<Fiemap>()) as u64,
            0xc020_660b
        );
        assert_eq!(
            nix::request_code_read!(b'f', 1, size_of::<libc::c_long>()) as u64,
            0x8008_6601
        );
    }

    #[test]
    fn one_page_holds_127_destinations() {
        assert_eq!(MAX_DEDUPE_DESTS, 127);
    }
}
