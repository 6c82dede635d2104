//! Command-line interface: argument parsing, logging setup and exit codes.
//!
//! Each subcommand lives in its own module with an `execute` function returning
//! the exit status. Errors that mean "fix your config or arguments" are
//! [`UsageError`]s (or config errors) and map to exit status 2; anything else is 1.
//! Either way the error is one line on stderr.

pub mod browse_cmd;
pub mod check_cmd;
pub mod completions_cmd;
pub mod config_cmd;
pub mod config_init;
pub mod dedupe_cmd;
pub mod fleet_view;
pub mod journal;
pub mod key_cmd;
pub mod list_cmd;
pub mod plan_cmd;
pub mod plan_view;
pub mod progress;
pub mod restore_cmd;
pub mod run_cmd;
pub mod status_cmd;
pub mod time_arg;
pub mod verify_cmd;
pub mod wal_cmd;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

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
/// Start with `subvault config init` or `subvault config check`, look at
/// `subvault plan --dry-run`, then let the systemd timer call `subvault run`
/// every hour; `subvault status` tells whether every source is backed up.
#[derive(Debug, Parser)]
#[command(name = "subvault", version, about, long_about, after_help = EXIT_STATUS_HELP)]
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
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only errors and warnings (for cron): no summary lines, no
    /// progress. JSON asked for with --json is still printed.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The exit statuses, shown under `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success (status: every source fresh and restorable)
  1    a source, remote or object failed or was held back; the other sources
       still ran (status: a source is stale, broken, empty or unreachable, or
       its last run failed)
  2    config or usage error
  3    another run of this config holds the lock; nothing was attempted
  130  stopped by SIGINT, 143 stopped by SIGTERM (resumable S3 uploads stay open for the next run, others are aborted)";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass for every source: snapshot if changed, upload, prune.
    ///
    /// Idempotent: a second run with nothing new does nothing. Sources run in
    /// parallel (max_parallel_sources). A backup whose chain is broken is a
    /// WARNING line, not a failure (`status` fails on it). After the run the
    /// state file, the metrics file and the hooks are written and run.
    #[command(after_help = EXIT_STATUS_HELP)]
    Run(run_cmd::RunArgs),
    /// Is every source backed up, recently and restorably? For monitoring.
    ///
    /// Per source and remote: the newest restorable backup and its age, broken
    /// chains, backups and bytes per storage class, and the last run's outcome
    /// (from the state file `run` writes). One listing per remote. Exit status
    /// 0 when every source is fresh and healthy, 1 when one is stale (older than
    /// --max-age, or the source's max_age), broken, empty or unreachable, or its
    /// last run failed; 2 for a usage or config error. With --fleet: every
    /// host under each remote's prefix (docs/fleet.md).
    Status(status_cmd::StatusArgs),
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
    /// List the files of one backup (mode, owner, size, mtime, path), through
    /// the browse cache; no btrfs target needed.
    Ls(browse_cmd::LsArgs),
    /// Mount one backup read-only at an empty directory until `subvault umount`.
    Mount(browse_cmd::MountArgs),
    /// Unmount a `subvault mount` (and the browse cache when nothing else uses it).
    Umount(browse_cmd::UmountArgs),
    /// The browse cache of `restore --path`, `ls` and `mount`.
    #[command(subcommand)]
    Cache(browse_cmd::CacheCommand),
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
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(completions_cmd::CompletionsArgs),
    /// Print the man page (roff) on stdout.
    Man,
}

/// `subvault config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file and print a short summary.
    Check(config_cmd::CheckArgs),
    /// Write a commented starter config (-c, default /etc/subvault/config.yaml)
    /// for one source and one bucket, then check it. Never overwrites.
    Init(config_init::InitArgs),
}

static QUIET: AtomicBool = AtomicBool::new(false);

/// Whether `-q` was given: commands print no summary lines.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
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
    QUIET.store(cli.quiet, Ordering::Relaxed);
    init_logging(cli.verbose, cli.quiet);
    let result = match &cli.command {
        Command::Run(args) => run_cmd::execute(&cli.config, args),
        Command::Status(args) => status_cmd::execute(&cli.config, args),
        Command::Plan(args) => plan_cmd::execute(&cli.config, args),
        Command::Config(ConfigCommand::Check(args)) => config_cmd::execute(&cli.config, args),
        Command::Config(ConfigCommand::Init(args)) => config_init::execute(&cli.config, args),
        Command::Completions(args) => completions_cmd::completions(args),
        Command::Man => completions_cmd::man(),
        Command::Dedupe(args) => dedupe_cmd::execute(&cli.config, args),
        Command::Restore(args) => restore_cmd::execute(&cli.config, args),
        Command::List(args) => list_cmd::execute(&cli.config, args),
        Command::Ls(args) => browse_cmd::ls(&cli.config, args),
        Command::Mount(args) => browse_cmd::mount(&cli.config, args),
        Command::Umount(args) => browse_cmd::umount(args),
        Command::Cache(browse_cmd::CacheCommand::Clean(args)) => browse_cmd::cache_clean(args),
        Command::Verify(args) => verify_cmd::execute(&cli.config, args),
        Command::WalPush(args) => wal_cmd::push(&cli.config, args),
        Command::WalFetch(args) => wal_cmd::fetch(&cli.config, args),
        Command::Check(args) => check_cmd::execute(&cli.config, args),
        Command::Key(cmd) => key_cmd::execute(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            journal::error(&format!("subvault: {}", one_line(&e)));
            if e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<ConfigError>().is_some()
            {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            }
        }
    }
}

/// Writes `value` as pretty JSON and a newline to stdout as it serializes,
/// without building the document as a string first (a listing of 100,000
/// backups is tens of MiB of JSON).
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Text written to stdout as it is rendered (buffered), instead of built in
/// memory first: the text of 100k backups is 10 MiB (issue 21). The first
/// write error stops the rendering and is returned by [`StdoutText::finish`].
pub struct StdoutText {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    error: Option<std::io::Error>,
}

impl StdoutText {
    /// Locks stdout for the rendering.
    pub fn new() -> StdoutText {
        StdoutText {
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            error: None,
        }
    }

    /// Flushes what is left; the first write error, if any.
    pub fn finish(mut self) -> std::io::Result<()> {
        use std::io::Write as _;
        match self.error.take() {
            Some(e) => Err(e),
            None => self.out.flush(),
        }
    }
}

impl Default for StdoutText {
    fn default() -> Self {
        StdoutText::new()
    }
}

impl std::fmt::Write for StdoutText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        use std::io::Write as _;
        if self.error.is_some() {
            return Err(std::fmt::Error);
        }
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            std::fmt::Error
        })
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
/// (journald stamps them, and each line carries its priority: see
/// [`journal`]), timestamped otherwise. On a terminal the default level is
/// `warn` (progress bars tell the story); elsewhere `info`; with `-q` `warn`.
/// `SUBVAULT_LOG` (an env-filter directive such as `subvault=debug`)
/// overrides all of them.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let tty = std::io::stderr().is_terminal();
    let level = match (verbose, tty) {
        _ if quiet => "warn",
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
        .with_writer(journal::StderrWriter)
        .with_ansi(tty)
        .with_target(false);
    if under_systemd {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
