//! subvault's integration tests: one test binary, one module per area, one
//! shared harness (`common`).
//!
//! Tests that need root, loop-device btrfs, the S3 server or PostgreSQL are
//! `#[ignore]`d with the reason ("needs root + btrfs + S3", ...), so a plain
//! `cargo test` runs the rest; `integration/test.sh` runs them all with the
//! services up. Benchmarks are not tests: they live in `benches/` and
//! `bench/`.

mod common;

mod browse;
mod btrfs_adapter;
mod config_errors;
mod dedupe;
mod encryption;
mod fleet;
mod harness;
mod monitoring;
mod postgres;
mod remote_s3;
mod requests;
mod restore;
mod resume;
mod run;
mod safety;
mod stream_pipeline;
mod trust;
