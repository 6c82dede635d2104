//! Facts about the btrfs filesystem and subvolume an open file lives on, for
//! the dedupe engine: subvolume uuid/generation/read-only, the filesystem's uuid
//! and sector size, and the bytes its data and metadata use.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use super::ioctl;

/// Subvolume facts of the subvolume containing `fd`.
#[derive(Debug, Clone, Copy)]
pub struct SubvolFacts {
    pub uuid: [u8; 16],
    pub generation: u64,
    pub readonly: bool,
}

/// `BTRFS_IOC_GET_SUBVOL_INFO` on an open file or directory (the btrfs adapter's ioctl).
pub fn subvol_facts(file: &File) -> io::Result<SubvolFacts> {
    let a = ioctl::get_subvol_info(file.as_fd())?;
    Ok(SubvolFacts {
        uuid: a.uuid,
        generation: a.generation,
        readonly: a.flags & ioctl::ROOT_SUBVOL_RDONLY != 0,
    })
}

/// Which btrfs filesystem a file is on, and its sector size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsFacts {
    /// The filesystem's uuid (`BTRFS_IOC_FS_INFO`).
    pub fsid: [u8; 16],
    /// Its sector size (`st_blksize`, which btrfs sets to the sector size).
    pub sector_size: u32,
}

/// The [`FsFacts`] of the filesystem holding `file`.
pub fn fs_info(file: &File) -> io::Result<FsFacts> {
    let fsid = ioctl::fsid(file.as_fd())?;
    let blksize = std::os::unix::fs::MetadataExt::blksize(&file.metadata()?);
    Ok(FsFacts {
        fsid,
        sector_size: (blksize as u32).max(4096),
    })
}

/// Used bytes of the filesystem (logical, as `btrfs filesystem df` shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpaceUsed {
    pub data: u64,
    pub metadata: u64,
}

/// Data and metadata bytes used, summed over profiles (the global reserve,
/// a pseudo entry, is not usage).
pub fn space_used(file: &File) -> io::Result<SpaceUsed> {
    let mut used = SpaceUsed::default();
    for s in ioctl::space_info(file.as_fd())? {
        if s.flags & ioctl::SPACE_INFO_GLOBAL_RSV != 0 {
            continue;
        }
        if s.flags & ioctl::BLOCK_GROUP_DATA != 0 {
            used.data += s.used_bytes;
        } else if s.flags & ioctl::BLOCK_GROUP_METADATA != 0 {
            used.metadata += s.used_bytes;
        }
    }
    Ok(used)
}
