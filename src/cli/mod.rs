//! Command-line interface: argument parsing, logging setup and exit codes.
//!
//! Each subcommand lives in its own module with an `execute` function returning
//! `anyhow::Result<ExitCode>`. Errors that mean "fix your config or arguments"
//! are [`UsageError`]s and map to exit status 2; anything else is 1.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit status: everything worked.
pub const EXIT_OK: i32 = 0;
/// Exit status: a source, object or operation failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status: bad config or bad command-line usage.
pub const EXIT_USAGE: i32 = 2;

/// An error the user fixes by changing the config file or the command line.
/// Reported as one line on stderr, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Differential btrfs backups to S3-compatible object storage.
///
/// subvault snapshots each configured source subvolume, sends the snapshots as a
/// tree of differential `btrfs send` streams (yearly full, monthly relative to the
/// yearly, daily relative to the monthly, ...) to object storage, and prunes what
/// the preservation policy no longer keeps.
#[derive(Debug, Parser)]
#[command(name = "subvault", version, about, long_about)]
pub struct Cli {
    /// Config file (YAML).
    #[arg(short, long, global = true, default_value = "/etc/subvault/config.yaml", env = "SUBVAULT_CONFIG")]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {}

/// Parse arguments, run the command, and return the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => EXIT_OK,
                _ => EXIT_USAGE,
            };
        }
    };
    let _ = cli;
    EXIT_OK
}
