//! Thin adapters to the kernel: btrfs subvolumes, send and receive; the file
//! extent ioctls of the dedupe engine; I/O hints and priorities; and the
//! advisory locks between subvault processes.
//!
//! Every raw system call subvault makes lives here, and so does nearly all of
//! its `unsafe` (the rest is the allocator tuning in `main.rs`). Callers get
//! safe functions with typed errors that name the path involved.

pub mod btrfs;
pub mod extent;
pub mod io_hints;
pub mod lock;
