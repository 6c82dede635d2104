//! Make a freshly taken snapshot read-only after `backup_label` was written into it.
//!
//! BTRFS_IOC_SUBVOL_SETFLAGS with BTRFS_SUBVOL_RDONLY. Flipping read-write to
//! read-only is safe for a snapshot that was never sent or received (the danger
//! the kernel warns about is the other direction, on a received subvolume, whose
//! received_uuid would then lie).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use super::error::PgError;
use crate::sys::btrfs::ioctl;

/// Mark the subvolume at `path` read-only (keeping its other flags).
pub(crate) fn set_readonly(path: &Path) -> Result<(), PgError> {
    let dir = File::open(path).map_err(PgError::io("open the snapshot", path))?;
    let flags =
        ioctl::subvol_getflags(dir.as_fd()).map_err(PgError::io("read the flags of", path))?;
    ioctl::subvol_setflags(dir.as_fd(), flags | ioctl::SUBVOL_RDONLY)
        .map_err(PgError::io("make read-only", path))?;
    Ok(())
}
