//! btrfs adapter: subvolume info, snapshots, send streams and receive.
//!
//! Everything the kernel can do is done through its ioctls (see `ioctl`, the
//! only module with `unsafe`): GET_SUBVOL_INFO, SUBVOL_GETFLAGS,
//! SNAP_CREATE_V2, SNAP_DESTROY_V2 and SEND. Receiving has no ioctl, so
//! [`receive`] runs `btrfs receive`.
//!
//! ctransid facts the runner relies on (checked by tests/btrfs_adapter.rs):
//! a snapshot's `ctransid` equals its source's `ctransid` at the moment it was
//! taken, and taking it does not change the source's `ctransid` as long as
//! the snapshot directory is not inside the source. So "the source's ctransid
//! equals the newest snapshot's" means "nothing changed, no new snapshot".

mod error;
/// Raw ioctl wrappers, shared with the dedupe engine (GET_SUBVOL_INFO, FS_INFO).
pub(crate) mod ioctl;
mod list;
mod naming;
mod receive;
mod send;
mod subvol;

pub use error::BtrfsError;
pub use list::list_snapshots;
pub use naming::{parse_snapshot_time, snapshot_name};
pub use receive::{receive, ReceiveProcess};
pub(crate) use send::enlarge_pipe;
pub use send::{send, SendStats, SendStream};
pub use subvol::{
    create_snapshot, destroy_subvolume, flushed_subvol_info, is_btrfs, is_subvolume,
    rename_snapshot, subvol_info, SubvolInfo,
};
