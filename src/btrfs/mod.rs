//! btrfs adapter: subvolume info, snapshots, send streams (kernel ioctls).
