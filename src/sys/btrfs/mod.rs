//! btrfs adapter: subvolume info, snapshots, send streams and receive.
//!
//! Everything the kernel can do is done through its ioctls (the raw calls and
//! their argument structs are in `ioctl`): GET_SUBVOL_INFO, SUBVOL_GETFLAGS
//! and SETFLAGS, SNAP_CREATE_V2, SNAP_DESTROY_V2, SEND, FS_INFO, SPACE_INFO and
//! SYNC. Receiving has no ioctl, so [`receive`] runs `btrfs receive`.
//!
//! ctransid facts the runner relies on (checked by tests/integration/btrfs_adapter.rs):
//! a snapshot's `ctransid` equals its source's `ctransid` at the moment it was
//! taken, and taking it does not change the source's `ctransid` as long as
//! the snapshot directory is not inside the source. So "the source's ctransid
//! equals the newest snapshot's" means "nothing changed, no new snapshot".

mod error;
pub mod fs;
/// Raw ioctl wrappers, shared with the dedupe engine and the PostgreSQL seal.
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
