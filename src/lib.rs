//! subvault: a tree of differential btrfs backups in S3-compatible object storage.
//!
//! The pure core (`policy`, `planner`, `object_key`, `model`) does no I/O and is
//! tested without root; the adapters (`btrfs`, `remote`, `stream`, `dedupe`) talk to
//! the kernel, object stores and processes; `cli` wires them to commands.

pub mod cli;
pub mod config;
pub mod core;
pub mod dedupe;
pub mod errors;
pub mod postgres;
pub mod progress;
pub mod remote;
pub mod restore;
pub mod runner;
pub mod stream;
pub mod sys;
#[cfg(test)]
mod test_io;
pub mod units;
