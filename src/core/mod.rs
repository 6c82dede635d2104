//! The pure core: the nouns (snapshots, backups), preservation policies and
//! their calendar spans, the object key format, the planner, restore chains and
//! the MACs that authenticate an encrypted remote's keys and bodies, and the
//! retention rule stated from the policy alone (what tests hold the planner to).
//!
//! Nothing here does I/O or reads the clock: every function is a function of its
//! arguments, so every rule is tested without root, btrfs or object storage.
//! Everything else in subvault depends on this layer; it depends on nothing of
//! subvault's.

pub mod auth;
pub mod browse;
pub mod chain;
pub mod cost;
pub mod coverage;
pub mod fleet;
pub mod guards;
pub mod inventory;
pub mod model;
pub mod object_key;
pub mod pg_record;
pub mod pitr;
pub mod planner;
pub mod policy;
pub mod wal;
pub mod wal_retention;
pub mod wal_spool;
