//! Command-line interface: argument parsing, logging setup and exit codes.
//!
//! Each subcommand lives in its own module with an `execute` function returning
//! the exit status. Errors that mean "fix your config or arguments" are
//! [`UsageError`]s (or config errors) and map to exit status 2; anything else is 1.
//! Either way the error is one line on stderr.

pub mod check_cmd;
pub mod config_cmd;
pub mod dedupe_cmd;
pub mod key_cmd;
pub mod list_cmd;
pub mod plan_cmd;
pub mod plan_view;
pub mod progress;
pub mod restore_cmd;
pub mod run_cmd;
pub mod time_arg;
pub mod verify_cmd;
pub mod wal_cmd;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::errors::{one_line, UsageError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// Differential btrfs backups to S3-compatible object storage.
///
/// subvault snapshots each configured source subvolume, sends the snapshots as a
/// tree of differential `btrfs send` streams (yearly full, monthly relative to the
/// yearly, daily relative to the monthly, ...) to object storage, and prunes what
/// the preservation policy no longer keeps.
///
/// Start with `subvault config check`, look at `subvault plan --dry-run`, then let
/// the systemd timer call `subvault run` every hour.
#[derive(Debug, Parser)]
#[command(name = "subvault", version, about, long_about)]
pub struct Cli {
    /// Config file (YAML).
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/subvault/config.yaml",
        env = "SUBVAULT_CONFIG"
    )]
    pub config: PathBuf,

    /// More log output (-v: info on a terminal, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass for every source: snapshot if changed, upload, prune.
    ///
    /// Idempotent: a second run with nothing new does nothing. Exit status 0 when
    /// every source succeeded, 1 when one failed (the others still ran), 2 for a
    /// config or usage error.
    Run(run_cmd::RunArgs),
    /// Show the backup tree and the actions a run would take now; changes nothing.
    Plan(plan_cmd::PlanArgs),
    /// Config file commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Share identical blocks between a source's subvolume and its snapshots.
    Dedupe(dedupe_cmd::DedupeArgs),
    /// Download a backup's chain and `btrfs receive` it into a directory.
    ///
    /// The newest backup (or the one at or before --at, or --uuid) is rebuilt
    /// root -> leaf, one read-only subvolume per step; every object is verified
    /// (trailer SHA-256 and length, send-stream CRCs) on the way.
    Restore(restore_cmd::RestoreArgs),
    /// Show the backups on each remote as a tree (full roots, children by send parent).
    List(list_cmd::ListArgs),
    /// Download objects and check them without btrfs; exit 1 listing the bad ones.
    Verify(verify_cmd::VerifyArgs),
    /// Archive one WAL file to every remote of its PostgreSQL source
    /// (`archive_command = 'subvault wal-push %p'`).
    ///
    /// Exit 0 only when the file is stored on every remote; a file already
    /// archived with the same content succeeds, with other content fails.
    WalPush(wal_cmd::WalPushArgs),
    /// Bring one archived WAL file back (`restore_command = 'subvault
    /// wal-fetch --source NAME %f %p'`).
    ///
    /// Exit 1 quietly when the archive does not have it; 126 (which stops
    /// PostgreSQL's recovery) on any other failure, e.g. a copy that does not verify.
    WalFetch(wal_cmd::WalFetchArgs),
    /// Check a PostgreSQL source's WAL archiving end to end: archive settings
    /// that call `subvault wal-push`, the cluster inside its subvolume, and a
    /// forced segment switch arriving in every remote. Exit 1 naming what fails.
    Check(check_cmd::CheckArgs),
    /// Key files of encrypted remotes: generate one, or its write-only copy.
    #[command(subcommand)]
    Key(key_cmd::KeyCommand),
}

/// `subvault config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file and print a short summary.
    Check,
}

/// Parse arguments, run the command, and return the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => EXIT_OK,
                _ => EXIT_USAGE,
            };
        }
    };
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Run(args) => run_cmd::execute(&cli.config, args),
        Command::Plan(args) => plan_cmd::execute(&cli.config, args),
        Command::Config(ConfigCommand::Check) => config_cmd::execute(&cli.config),
        Command::Dedupe(args) => dedupe_cmd::execute(&cli.config, args),
        Command::Restore(args) => restore_cmd::execute(&cli.config, args),
        Command::List(args) => list_cmd::execute(&cli.config, args),
        Command::Verify(args) => verify_cmd::execute(&cli.config, args),
        Command::WalPush(args) => wal_cmd::push(&cli.config, args),
        Command::WalFetch(args) => wal_cmd::fetch(&cli.config, args),
        Command::Check(args) => check_cmd::execute(&cli.config, args),
        Command::Key(cmd) => key_cmd::execute(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("subvault: {}", one_line(&e));
            if e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<ConfigError>().is_some()
            {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            }
        }
    }
}

/// Loads the config, turning its error into a usage error (exit 2). A file
/// that holds secrets and that group or others may read is used, with a
/// warning naming the `chmod` that fixes it (on every command, so the journal
/// shows it until it is fixed).
pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    if let Some(w) = config.secret_exposure() {
        tracing::warn!("{w}");
    }
    Ok(config)
}

/// Logs go to stderr: plain lines without colours or timestamps under systemd
/// (journald stamps them), timestamped otherwise. On a terminal the default level
/// is `warn` (progress bars tell the story); elsewhere `info`. `SUBVAULT_LOG`
/// (an env-filter directive such as `subvault=debug`) overrides both.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let tty = std::io::stderr().is_terminal();
    let level = match (verbose, tty) {
        (0, true) => "warn",
        (0, false) | (1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("SUBVAULT_LOG")
        // aws-config warns once per attempt about each credential provider
        // that found nothing, with Debug dumps; our error says it in one line.
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,aws_config=error,subvault={level}")));
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    if under_systemd {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
