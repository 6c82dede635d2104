//! `hooks: {on_success, on_failure, timeout}`: a command run after each run
//! (a healthchecks ping, a mail, a chat message), so subvault need not build
//! each of them in.
//!
//! The command is an argv (no shell), gets the run's summary ([`RunRecord`],
//! the same JSON as `run --json`) on stdin and a few variables:
//! `SUBVAULT_EVENT` (`success` or `failure`), `SUBVAULT_EXIT_STATUS`,
//! `SUBVAULT_FAILED_SOURCES` (space-separated names) and
//! `SUBVAULT_DURATION_SECONDS`. It does not inherit `AWS_*`, `PGPASSWORD` nor
//! any other `SUBVAULT_*` (as `pipe_through` commands). It runs in its own
//! process group, which is killed when the timeout passes.
//!
//! A hook runs after everything was backed up, pruned and recorded, and its
//! failure is reported (a warning line, and in the state file), never turned
//! into a change of what was backed up or of the run's exit status.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::state::{HookRecord, Outcome, RunRecord};
use crate::config::Config;
use crate::stream::is_secret_env;

/// How much of a hook's output is kept for the report.
const OUTPUT_TAIL: usize = 400;

/// Runs the hook the run's outcome calls for, if configured.
pub async fn run(config: &Config, run: &RunRecord) -> Option<HookRecord> {
    let (name, argv) = match run.outcome {
        Outcome::Ok => ("on_success", config.hooks.on_success.as_ref()?),
        Outcome::Failed | Outcome::Interrupted => ("on_failure", config.hooks.on_failure.as_ref()?),
    };
    let started = Instant::now();
    let result = run_one(argv, run, config.hooks.timeout).await;
    let seconds = started.elapsed().as_secs_f64();
    Some(match result {
        Ok(()) => HookRecord {
            hook: name.into(),
            ok: true,
            error: None,
            seconds,
        },
        Err(e) => HookRecord {
            hook: name.into(),
            ok: false,
            error: Some(format!("{}: {e}", crate::stream::show_command(argv))),
            seconds,
        },
    })
}

async fn run_one(argv: &[String], run: &RunRecord, timeout: Duration) -> Result<(), String> {
    let mut cmd = Command::new(&argv[0]);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_secret_env) {
            cmd.env_remove(name);
        }
    }
    let failed: Vec<&str> = run
        .sources
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.source.as_str())
        .collect();
    let event = if run.outcome == Outcome::Ok {
        "success"
    } else {
        "failure"
    };
    cmd.args(&argv[1..])
        .env("SUBVAULT_EVENT", event)
        .env("SUBVAULT_EXIT_STATUS", run.exit_status.to_string())
        .env("SUBVAULT_FAILED_SOURCES", failed.join(" "))
        .env(
            "SUBVAULT_DURATION_SECONDS",
            format!("{:.0}", run.duration_seconds),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let pid = child.id();
    let summary = serde_json::to_vec_pretty(run).map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // A hook that never reads its stdin must not block us: write alongside.
    let feed = async move {
        let _ = stdin.write_all(&summary).await;
        drop(stdin);
    };
    let collect = async move {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        out.extend_from_slice(&err);
        out
    };
    let work = async {
        let ((), output, status) = tokio::join!(feed, collect, child.wait());
        (output, status)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok((output, Ok(status))) if status.success() => {
            let text = tail(&output);
            if !text.is_empty() {
                tracing::info!("hook {}: {text}", argv[0]);
            }
            Ok(())
        }
        Ok((output, Ok(status))) => Err(format!("{status}{}", with_output(&output))),
        Ok((_, Err(e))) => Err(format!("cannot wait for it: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                // The whole group: a hook's own children go too.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!(
                "killed after the hook timeout of {} s",
                timeout.as_secs()
            ))
        }
    }
}

/// The end of a hook's output, on one line.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(OUTPUT_TAIL)
        .map_or(0, |(i, _)| i);
    text[start..].replace('\n', " | ")
}

fn with_output(output: &[u8]) -> String {
    let t = tail(output);
    if t.is_empty() {
        String::new()
    } else {
        format!(" (output: {t})")
    }
}
