//! Operations: what each command does, from a loaded config to data the
//! command line renders. Nothing here parses arguments or prints results
//! (progress goes to a [`crate::progress::Progress`], logs to `tracing`).
//!
//! - [`run`]: snapshot, upload and prune each source;
//! - [`plan`]: what a run would do now;
//! - [`restore`]: choose a chain, receive it, prepare a PostgreSQL copy;
//! - [`browse`]: single files, listings and mounts of a backup through a cache image;
//! - [`verify`] and [`list`]: read the remotes;
//! - [`dedupe`]: the trees a dedupe pass of configured sources covers.
//!
//! Shared by them: [`remotes`] (the one way to open and list a remote),
//! [`sources`] (a source's local state and the planner's input), [`keys`]
//! (naming new objects) and [`subvols`] (the btrfs side of a run, behind a
//! trait so the executor is unit-tested without root).

pub mod browse;
pub mod check;
pub mod config_init;
pub mod dedupe;
pub mod fleet;
pub mod keys;
pub mod list;
pub mod plan;
pub mod remotes;
pub mod restore;
pub mod run;
pub mod sources;
pub mod status;
pub mod subvols;
pub mod verify;
pub mod wal;
pub mod wal_prefetch;
pub mod wal_retention;
