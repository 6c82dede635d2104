//! Make a freshly taken snapshot read-only after `backup_label` was written into it.
//!
//! BTRFS_IOC_SUBVOL_SETFLAGS with BTRFS_SUBVOL_RDONLY. Flipping read-write to
//! read-only is safe for a snapshot that was never sent or received (the danger
//! the kernel warns about is the other direction, on a received subvolume, whose
//! received_uuid would then lie). The btrfs adapter has no setter, so this module
//! carries the one ioctl it needs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::error::PgError;

/// `BTRFS_IOCTL_MAGIC`.
const MAGIC: u8 = 0x94;
/// `BTRFS_SUBVOL_RDONLY`.
const SUBVOL_RDONLY: u64 = 1 << 1;

mod raw {
    nix::ioctl_read!(subvol_getflags, super::MAGIC, 25, u64);
    nix::ioctl_write_ptr!(subvol_setflags, super::MAGIC, 26, u64);
}

/// Mark the subvolume at `path` read-only (keeping its other flags).
pub(crate) fn set_readonly(path: &Path) -> Result<(), PgError> {
    let dir = File::open(path).map_err(PgError::io("open the snapshot", path))?;
    let fd = dir.as_raw_fd();
    let mut flags = 0u64;
    // SAFETY: `fd` is open for the duration of the call; the kernel writes one u64.
    unsafe { raw::subvol_getflags(fd, &mut flags) }
        .map_err(|e| PgError::io("read the flags of", path)(e.into()))?;
    let flags = flags | SUBVOL_RDONLY;
    // SAFETY: `fd` is open; the kernel reads one u64.
    unsafe { raw::subvol_setflags(fd, &flags) }
        .map_err(|e| PgError::io("make read-only", path)(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_numbers_match_linux_btrfs_h() {
        // _IOR(0x94, 25, __u64) and _IOW(0x94, 26, __u64) from linux/btrfs.h.
        assert_eq!(nix::request_code_read!(super::MAGIC, 25, 8), 0x8008_9419);
        assert_eq!(nix::request_code_write!(super::MAGIC, 26, 8), 0x4008_941a);
    }
}
