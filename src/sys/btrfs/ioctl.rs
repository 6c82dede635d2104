//! Raw btrfs ioctls: `#[repr(C)]` mirrors of the argument structs in
//! `linux/btrfs.h` (uapi) and the request numbers, wrapped by nix's ioctl macros.
//!
//! The structs are plain old data; the unit
//! tests pin their sizes and request numbers to the kernel header's values so a
//! layout slip cannot silently corrupt an argument block.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BTRFS_IOCTL_MAGIC`.
const MAGIC: u8 = 0x94;

/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root dir.
pub const FIRST_FREE_OBJECTID: u64 = 256;

/// `BTRFS_SUBVOL_RDONLY`, in `vol_args_v2.flags` and `SUBVOL_GETFLAGS`.
pub const SUBVOL_RDONLY: u64 = 1 << 1;

/// `BTRFS_SUBVOL_NAME_MAX`: the name buffer of `vol_args_v2` holds this + NUL.
const SUBVOL_NAME_MAX: usize = 4039;

/// `BTRFS_PATH_NAME_MAX`: the name buffer of `vol_args` holds this + NUL.
const PATH_NAME_MAX: usize = 4087;

/// `struct btrfs_ioctl_vol_args` (SNAP_DESTROY, pre-5.7 fallback).
#[repr(C)]
pub struct VolArgs {
    pub fd: i64,
    pub name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (SNAP_CREATE_V2, SNAP_DESTROY_V2). The
/// kernel's first union (`size` + `qgroup_inherit` / `unused[4]`) is `unused`
/// here because we never inherit qgroups; the second union is `name`.
#[repr(C)]
pub struct VolArgsV2 {
    pub fd: i64,
    pub transid: u64,
    pub flags: u64,
    pub unused: [u64; 4],
    pub name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_timespec`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Timespec {
    pub sec: u64,
    pub nsec: u32,
}

/// `struct btrfs_ioctl_get_subvol_info_args` (GET_SUBVOL_INFO, kernel >= 4.18;
/// works without root).
#[repr(C)]
pub struct GetSubvolInfoArgs {
    pub treeid: u64,
    pub name: [u8; 256],
    pub parent_id: u64,
    pub dirid: u64,
    pub generation: u64,
    pub flags: u64,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub received_uuid: [u8; 16],
    pub ctransid: u64,
    pub otransid: u64,
    pub stransid: u64,
    pub rtransid: u64,
    pub ctime: Timespec,
    pub otime: Timespec,
    pub stime: Timespec,
    pub rtime: Timespec,
    pub reserved: [u64; 8],
}

/// `struct btrfs_ioctl_send_args` (SEND).
#[repr(C)]
pub struct SendArgs {
    pub send_fd: i64,
    pub clone_sources_count: u64,
    pub clone_sources: *const u64,
    pub parent_root: u64,
    pub flags: u64,
    pub version: u32,
    pub reserved: [u8; 28],
}

/// `struct btrfs_ioctl_fs_info_args` (FS_INFO); only `fsid` is used, to tell
/// whether two paths live on the same filesystem (st_dev differs per subvolume).
#[repr(C)]
pub struct FsInfoArgs {
    pub max_id: u64,
    pub num_devices: u64,
    pub fsid: [u8; 16],
    pub nodesize: u32,
    pub sectorsize: u32,
    pub clone_alignment: u32,
    pub csum_type: u16,
    pub csum_size: u16,
    pub flags: u64,
    pub generation: u64,
    pub metadata_uuid: [u8; 16],
    pub reserved: [u8; 944],
}

/// `struct btrfs_ioctl_space_args` header (16 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SpaceArgs {
    pub space_slots: u64,
    pub total_spaces: u64,
}

/// `struct btrfs_ioctl_space_info` (24 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SpaceInfo {
    pub flags: u64,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

/// Block group type bit for data.
pub const BLOCK_GROUP_DATA: u64 = 1;
/// Block group type bit for metadata.
pub const BLOCK_GROUP_METADATA: u64 = 4;
/// The global reserve pseudo space info; not real usage.
pub const SPACE_INFO_GLOBAL_RSV: u64 = 1 << 49;

/// Root item flag (BTRFS_ROOT_SUBVOL_RDONLY): the subvolume is read-only.
/// BTRFS_IOC_GET_SUBVOL_INFO returns the root item's flags, where read-only is
/// bit 0 (bit 1 is the different BTRFS_SUBVOL_RDONLY of SUBVOL_GETFLAGS).
pub const ROOT_SUBVOL_RDONLY: u64 = 1 << 0;

mod raw {
    use super::*;
    nix::ioctl_none!(sync, MAGIC, 8);
    nix::ioctl_write_ptr!(snap_destroy, MAGIC, 15, VolArgs);
    nix::ioctl_readwrite!(space_info, MAGIC, 20, SpaceArgs);
    nix::ioctl_write_ptr!(snap_create_v2, MAGIC, 23, VolArgsV2);
    nix::ioctl_read!(subvol_getflags, MAGIC, 25, u64);
    nix::ioctl_write_ptr!(subvol_setflags, MAGIC, 26, u64);
    nix::ioctl_read!(fs_info, MAGIC, 31, FsInfoArgs);
    nix::ioctl_write_ptr!(send, MAGIC, 38, SendArgs);
    nix::ioctl_read!(get_subvol_info, MAGIC, 60, GetSubvolInfoArgs);
    nix::ioctl_write_ptr!(snap_destroy_v2, MAGIC, 63, VolArgsV2);
}

/// Copies `name` into a NUL-terminated fixed buffer; the caller has already
/// checked that it fits and contains no NUL.
fn fill_name(buf: &mut [u8], name: &[u8]) {
    debug_assert!(name.len() < buf.len());
    buf[..name.len()].copy_from_slice(name);
    buf[name.len()] = 0;
}

/// Longest name `snap_create_v2` / `snap_destroy_v2` accept.
pub const NAME_MAX: usize = 255;

fn to_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// BTRFS_IOC_SNAP_CREATE_V2 on `dest_dir`: snapshot of the subvolume `source`
/// named `name` (a single component, at most [`NAME_MAX`] bytes, no NUL).
pub fn snap_create_v2(
    dest_dir: BorrowedFd<'_>,
    source: BorrowedFd<'_>,
    name: &[u8],
    readonly: bool,
) -> io::Result<()> {
    // SAFETY: VolArgsV2 is plain old data; all-zero is a valid value.
    let mut args: Box<VolArgsV2> = Box::new(unsafe { std::mem::zeroed() });
    args.fd = i64::from(source.as_raw_fd());
    args.flags = if readonly { SUBVOL_RDONLY } else { 0 };
    fill_name(&mut args.name, name);
    // SAFETY: valid fd, pointer to a fully initialised struct of the right size.
    unsafe { raw::snap_create_v2(dest_dir.as_raw_fd(), &*args) }
        .map(drop)
        .map_err(to_io)
}

/// BTRFS_IOC_SNAP_DESTROY_V2 on `parent_dir`, by name (kernel >= 5.7).
pub fn snap_destroy_v2(parent_dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    // SAFETY: plain old data.
    let mut args: Box<VolArgsV2> = Box::new(unsafe { std::mem::zeroed() });
    fill_name(&mut args.name, name);
    // SAFETY: valid fd and argument block.
    unsafe { raw::snap_destroy_v2(parent_dir.as_raw_fd(), &*args) }
        .map(drop)
        .map_err(to_io)
}

/// BTRFS_IOC_SNAP_DESTROY on `parent_dir`, by name (every kernel).
pub fn snap_destroy(parent_dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    // SAFETY: plain old data.
    let mut args: Box<VolArgs> = Box::new(unsafe { std::mem::zeroed() });
    fill_name(&mut args.name, name);
    // SAFETY: valid fd and argument block.
    unsafe { raw::snap_destroy(parent_dir.as_raw_fd(), &*args) }
        .map(drop)
        .map_err(to_io)
}

/// BTRFS_IOC_SUBVOL_GETFLAGS: the subvolume's flags (`SUBVOL_RDONLY`).
pub fn subvol_getflags(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut flags = 0u64;
    // SAFETY: valid fd, pointer to a u64 the kernel writes.
    unsafe { raw::subvol_getflags(fd.as_raw_fd(), &mut flags) }.map_err(to_io)?;
    Ok(flags)
}

/// BTRFS_IOC_SUBVOL_SETFLAGS: replace the subvolume's flags (e.g. add
/// `SUBVOL_RDONLY`).
pub fn subvol_setflags(fd: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    // SAFETY: valid fd, pointer to a u64 the kernel reads.
    unsafe { raw::subvol_setflags(fd.as_raw_fd(), &flags) }.map_err(to_io)?;
    Ok(())
}

/// BTRFS_IOC_SPACE_INFO: one entry per block group type and profile.
pub fn space_info(fd: BorrowedFd<'_>) -> io::Result<Vec<SpaceInfo>> {
    let mut hdr = SpaceArgs::default();
    // SAFETY: with space_slots = 0 the kernel only fills total_spaces.
    unsafe { raw::space_info(fd.as_raw_fd(), &mut hdr) }.map_err(to_io)?;
    let n = hdr.total_spaces as usize;
    // One u64 buffer keeps the header and the entries 8-aligned.
    let mut buf = vec![0u64; ((16 + 24 * n) / 8).max(2)];
    buf[0] = n as u64;
    let base = buf.as_mut_ptr() as *mut u8;
    // SAFETY: buf holds the header plus n entries; the kernel writes at most
    // space_slots (= n) of them and says how many in total_spaces.
    unsafe {
        raw::space_info(fd.as_raw_fd(), base as *mut SpaceArgs).map_err(to_io)?;
        let got = (*(base as *const SpaceArgs)).total_spaces.min(n as u64) as usize;
        let infos = base.add(16) as *const SpaceInfo;
        Ok((0..got).map(|i| *infos.add(i)).collect())
    }
}

/// BTRFS_IOC_GET_SUBVOL_INFO for the subvolume containing `fd`.
pub fn get_subvol_info(fd: BorrowedFd<'_>) -> io::Result<Box<GetSubvolInfoArgs>> {
    // SAFETY: plain old data.
    let mut args: Box<GetSubvolInfoArgs> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: valid fd, pointer to a struct of the size the kernel writes.
    unsafe { raw::get_subvol_info(fd.as_raw_fd(), &mut *args) }.map_err(to_io)?;
    Ok(args)
}

/// BTRFS_IOC_SYNC on the filesystem holding `fd`: writes all dirty data and
/// commits the transaction (what `syncfs` does, and what makes freed extents
/// show up in the space info).
pub fn sync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd; the ioctl takes no argument.
    unsafe { raw::sync(fd.as_raw_fd()) }.map_err(to_io)?;
    Ok(())
}

/// BTRFS_IOC_FS_INFO: the filesystem's fsid.
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<[u8; 16]> {
    // SAFETY: plain old data.
    let mut args: Box<FsInfoArgs> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: valid fd and argument block.
    unsafe { raw::fs_info(fd.as_raw_fd(), &mut *args) }.map_err(to_io)?;
    Ok(args.fsid)
}

/// BTRFS_IOC_SEND of the read-only subvolume `snapshot` into `out` (a pipe),
/// relative to the subvolume with tree id `parent_root` when given. Blocks
/// until the whole stream is written or writing fails (EPIPE once the reader
/// is gone). Stream protocol version 1 (flags 0), which every `btrfs receive`
/// understands.
pub fn send(
    snapshot: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    parent_root: Option<u64>,
) -> io::Result<()> {
    let clone_sources: Vec<u64> = parent_root.into_iter().collect();
    let args = SendArgs {
        send_fd: i64::from(out.as_raw_fd()),
        clone_sources_count: clone_sources.len() as u64,
        clone_sources: if clone_sources.is_empty() {
            std::ptr::null()
        } else {
            clone_sources.as_ptr()
        },
        parent_root: parent_root.unwrap_or(0),
        flags: 0,
        version: 0,
        reserved: [0; 28],
    };
    // SAFETY: valid fds; `clone_sources` outlives the call.
    unsafe { raw::send(snapshot.as_raw_fd(), &args) }
        .map(drop)
        .map_err(to_io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Sizes from `sizeof()` of the structs in linux/btrfs.h (x86_64, aarch64).
    #[test]
    fn struct_sizes_match_the_kernel_header() {
        assert_eq!(size_of::<VolArgs>(), 4096);
        assert_eq!(size_of::<VolArgsV2>(), 4096);
        assert_eq!(size_of::<Timespec>(), 16);
        assert_eq!(size_of::<GetSubvolInfoArgs>(), 504);
        assert_eq!(size_of::<SendArgs>(), 72);
        assert_eq!(size_of::<FsInfoArgs>(), 1024);
        assert_eq!(size_of::<SpaceArgs>(), 16);
        assert_eq!(size_of::<SpaceInfo>(), 24);
    }

    /// Request numbers as the kernel header's _IOW/_IOR macros compute them.
    #[test]
    // The request type is u64 on glibc but c_int on musl: keep the cast.
    #[allow(clippy::unnecessary_cast)]
    fn request_numbers_match_the_kernel_header() {
        use nix::{request_code_read, request_code_readwrite, request_code_write};
        let w = |nr, size| request_code_write!(MAGIC, nr, size) as u64;
        let r = |nr, size| request_code_read!(MAGIC, nr, size) as u64;
        assert_eq!(w(15, size_of::<VolArgs>()), 0x5000_940f);
        assert_eq!(
            request_code_readwrite!(MAGIC, 20, size_of::<SpaceArgs>()) as u64,
            0xc010_9414
        );
        assert_eq!(w(23, size_of::<VolArgsV2>()), 0x5000_9417);
        assert_eq!(r(25, size_of::<u64>()), 0x8008_9419);
        assert_eq!(w(26, size_of::<u64>()), 0x4008_941a);
        assert_eq!(r(31, size_of::<FsInfoArgs>()), 0x8400_941f);
        assert_eq!(w(38, size_of::<SendArgs>()), 0x4048_9426);
        assert_eq!(r(60, size_of::<GetSubvolInfoArgs>()), 0x81f8_943c);
        assert_eq!(w(63, size_of::<VolArgsV2>()), 0x5000_943f);
    }

    #[test]
    fn name_buffers_are_nul_terminated() {
        let mut buf = [0xffu8; 8];
        fill_name(&mut buf, b"abc");
        assert_eq!(&buf[..4], b"abc\0");
    }
}
