//! `restore --pitr TIME --start`: starts the prepared copy with `pg_ctl` as
//! the data directory's owner and waits until recovery has reached the
//! target (docs/postgres.md, "Point-in-time recovery").
//!
//! It watches two things PostgreSQL writes anyway, so it needs no role or
//! password on the copy: the server log (forced to English with
//! `lc_messages=C` and kept in one file with `logging_collector=off`) and
//! the cluster state in `global/pg_control`. The target is reached when the
//! log says `recovery stopping ...` and then, by `recovery_target_action`:
//! `promote`, the state is "in production" and the server accepts
//! connections; `pause`, the log says `pausing at the end of recovery`;
//! `shutdown`, the server has exited.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// `DBState` in `pg_control` (PostgreSQL 9.4 and later): in production.
const DB_IN_PRODUCTION: u32 = 6;

/// The cluster state at offset 16 of `pg_control` (after the system
/// identifier, `pg_control_version` and `catalog_version_no`).
pub fn control_state(pg_control: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(pg_control.get(16..20)?.try_into().ok()?))
}

/// How to start the copy.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The TCP port (default: a free one on 127.0.0.1).
    pub port: Option<u16>,
    /// Extra `NAME=VALUE` server settings, each passed as `-c`.
    pub settings: Vec<String>,
    /// `recovery_target_action` written into the copy.
    pub action: String,
    /// How long recovery may take.
    pub timeout: Duration,
}

/// A copy that reached its target.
#[derive(Debug, Clone)]
pub struct Started {
    /// The port it listens on (unless it shut down).
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
    /// Whether it is still running (not with `shutdown`).
    pub running: bool,
}

/// A copy that did not reach its target: why, and the end of its log.
#[derive(Debug)]
pub struct StartFailed {
    /// What went wrong.
    pub why: String,
    /// The log file.
    pub log: PathBuf,
    /// Its last lines.
    pub log_tail: String,
}

/// What the log and the state say, as a pure decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Still recovering.
    Waiting,
    /// The target is reached, as the action says.
    Reached,
    /// The server stopped before that.
    Died,
}

/// Decides from the log text, the `pg_control` state and whether the
/// postmaster is alive.
pub fn progress(action: &str, log: &str, state: Option<u32>, alive: bool) -> Progress {
    let stopped = log.contains("recovery stopping ");
    let reached = match action {
        "promote" => {
            stopped
                && state == Some(DB_IN_PRODUCTION)
                && log.contains("database system is ready to accept connections")
        }
        "pause" => stopped && log.contains("pausing at the end of recovery"),
        _ => stopped && !alive,
    };
    match (reached, alive) {
        (true, _) => Progress::Reached,
        (false, false) => Progress::Died,
        (false, true) => Progress::Waiting,
    }
}

/// The `pg_ctl` of the data directory's major version (Debian keeps it in
/// `/usr/lib/postgresql/<major>/bin`), else the one on `PATH`.
fn pg_ctl(datadir: &Path) -> PathBuf {
    let major = std::fs::read_to_string(datadir.join("PG_VERSION")).unwrap_or_default();
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pg_ctl", major.trim()));
    if !major.trim().is_empty() && debian.is_file() {
        debian
    } else {
        PathBuf::from("pg_ctl")
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// The postmaster's pid, when `postmaster.pid` names a live process.
fn postmaster(datadir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        .ok()
        .map(|()| pid)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts the copy in `datadir` and waits for its recovery target.
pub fn start_and_wait(datadir: &Path, opts: &StartOptions) -> Result<Started, StartFailed> {
    let log = datadir.join("subvault-start.log");
    let fail = |why: String| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        StartFailed {
            why,
            log: log.clone(),
            log_tail: tail(&text, 30),
        }
    };
    let port = match opts.port {
        Some(p) => p,
        None => free_port().map_err(|e| fail(format!("{e:#}")))?,
    };
    spawn(datadir, &log, port, opts).map_err(|e| fail(format!("{e:#}")))?;
    let began = Instant::now();
    let mut seen_alive = false;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let alive = postmaster(datadir).is_some();
        seen_alive |= alive;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let state = std::fs::read(datadir.join("global/pg_control"))
            .ok()
            .and_then(|b| control_state(&b));
        // Until the postmaster wrote its pid file it is starting, not dead,
        // unless it already said why it stopped.
        let said_why = text.contains("FATAL:") || text.contains("PANIC:");
        let alive =
            alive || (!seen_alive && !said_why && began.elapsed() < Duration::from_secs(30));
        match progress(&opts.action, &text, state, alive) {
            Progress::Reached => {
                return Ok(Started {
                    port,
                    log,
                    running: opts.action != "shutdown",
                })
            }
            Progress::Died => {
                return Err(fail(
                    "the server stopped before reaching the recovery target".into(),
                ))
            }
            Progress::Waiting if began.elapsed() > opts.timeout => {
                return Err(fail(format!(
                    "recovery did not reach the target within {} s; the server is still running (pg_ctl -D {} stop)",
                    opts.timeout.as_secs(),
                    datadir.display()
                )))
            }
            Progress::Waiting => {}
        }
    }
}

/// `pg_ctl start` without waiting, as the data directory's owner, with the
/// owner's HOME (its `~/.aws` and `~/.pgpass` serve `wal-fetch`).
fn spawn(datadir: &Path, log: &Path, port: u16, opts: &StartOptions) -> Result<()> {
    let meta = std::fs::symlink_metadata(datadir)
        .with_context(|| format!("cannot stat {}", datadir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", datadir.display());
    }
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        bail!(
            "{} is owned by root; PostgreSQL refuses to run as root: chown -R it to the server's user",
            datadir.display()
        );
    }
    // Debian keeps postgresql.conf in /etc: the server needs one in the
    // data directory, and an empty one means the defaults.
    let conf = datadir.join("postgresql.conf");
    if std::fs::symlink_metadata(&conf).is_err() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&conf)
            .with_context(|| format!("cannot create {}", conf.display()))?;
        std::os::unix::fs::chown(&conf, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", conf.display()))?;
    }
    let mut settings = vec![
        format!("port={port}"),
        // The copy must not archive into the original's archive.
        "archive_mode=off".to_string(),
        "logging_collector=off".to_string(),
        "lc_messages=C".to_string(),
    ];
    settings.extend(opts.settings.iter().cloned());
    let server_opts: Vec<String> = settings
        .iter()
        .map(|s| format!("-c {}", crate::ops::restore::pitr::shell_quote(s)))
        .collect();
    let mut cmd = Command::new(pg_ctl(datadir));
    cmd.arg("-D")
        .arg(datadir)
        .arg("-l")
        .arg(log)
        .arg("-W")
        .arg("-o")
        .arg(server_opts.join(" "))
        .arg("start")
        .current_dir(datadir);
    if nix::unistd::getuid().as_raw() != uid {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .ok_or_else(|| {
                anyhow!(
                    "the owner of {} (uid {uid}) has no passwd entry",
                    datadir.display()
                )
            })?;
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", &user.dir)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", pg_ctl(datadir).display()))?;
    if !out.status.success() {
        bail!(
            "pg_ctl start failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_read_from_pg_control() {
        let mut b = vec![0u8; 64];
        b[16..20].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(control_state(&b), Some(DB_IN_PRODUCTION));
        assert_eq!(control_state(&b[..10]), None);
    }

    #[test]
    fn the_target_is_reached_as_the_action_says() {
        let stop = "LOG:  recovery stopping before commit of transaction 812, time 2026-12-03 14:05:30.3+00\n";
        let ready = "LOG:  database system is ready to accept connections\n";
        let paused = "LOG:  pausing at the end of recovery\n";
        let ro = "LOG:  database system is ready to accept read-only connections\n";
        use Progress::*;
        // promote: stopped, in production, and accepting connections.
        assert_eq!(progress("promote", ro, Some(5), true), Waiting);
        assert_eq!(
            progress("promote", &format!("{ro}{stop}"), Some(5), true),
            Waiting
        );
        assert_eq!(
            progress("promote", &format!("{ro}{stop}{ready}"), Some(6), true),
            Reached
        );
        // Ended without the target (the archive ran out): died.
        assert_eq!(
            progress(
                "promote",
                "FATAL:  recovery ended before configured recovery target was reached\n",
                Some(5),
                false
            ),
            Died
        );
        assert_eq!(progress("pause", stop, Some(5), true), Waiting);
        assert_eq!(
            progress("pause", &format!("{stop}{paused}"), Some(5), true),
            Reached
        );
        assert_eq!(progress("shutdown", stop, Some(2), true), Waiting);
        assert_eq!(progress("shutdown", stop, Some(2), false), Reached);
        assert_eq!(progress("shutdown", ro, Some(5), false), Died);
    }
}
