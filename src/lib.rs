//! subvault: a tree of differential btrfs backups in S3-compatible object storage.
//!
//! Layers, each using only the ones below it (docs/architecture.md draws them):
//! - `cli`: argument parsing and rendering, nothing else;
//! - `ops`: what each command does (run, plan, restore, verify, list, dedupe),
//!   returning data;
//! - adapters: `remote` (object stores), `stream` (send stream -> compressed,
//!   optionally encrypted object and back), `crypt` (key files of encrypted
//!   remotes), `postgres`, `dedupe` (the block dedupe engine), `sys` (btrfs
//!   ioctls, extent ioctls, locks), and `config`;
//! - `core`: the pure model, policy, object keys, planner and restore chains,
//!   tested without root;
//! - leaves every layer may use: `errors`, `units`, `progress`.

// `run`'s future nests the stores' futures deeply; clippy's layout queries
// on it pass the default depth of 128.
#![recursion_limit = "256"]

pub mod cli;
pub mod config;
pub mod core;
pub mod crypt;
pub mod dedupe;
pub mod errors;
pub mod ops;
pub mod postgres;
pub mod progress;
pub mod remote;
pub mod stream;
pub mod sys;
#[cfg(test)]
mod test_io;
pub mod units;
