//! `pipe_through`: a chain of external commands (stdin -> stdout) the encoded bytes
//! pass through before upload, each one's exit status checked.

use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::error::StreamError;

/// How much of each command's stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;

/// One running command of the chain.
pub(crate) struct Proc {
    command: String,
    child: Child,
    stderr: JoinHandle<String>,
}

/// The running chain: write into `stdin`, read from `stdout`, then [`wait_all`].
pub(crate) struct Chain {
    pub(crate) stdin: ChildStdin,
    pub(crate) first_command: String,
    pub(crate) stdout: ChildStdout,
    pub(crate) procs: Vec<Proc>,
}

/// A command line as shown in messages.
pub(crate) fn show(cmd: &[String]) -> String {
    cmd.join(" ")
}

/// Starts every command, each reading the previous one's stdout. The children are
/// killed if the chain is dropped before [`wait_all`].
pub(crate) fn spawn_chain(cmds: &[Vec<String>]) -> Result<Chain, StreamError> {
    let mut procs: Vec<Proc> = Vec::with_capacity(cmds.len());
    let mut stdin = None;
    let mut prev_stdout: Option<ChildStdout> = None;
    for cmd in cmds {
        let program = cmd.first().ok_or(StreamError::EmptyCommand)?;
        let command = show(cmd);
        let input: Stdio = match prev_stdout.take() {
            None => Stdio::piped(),
            Some(out) => out.try_into().map_err(|e| StreamError::PipeSpawn {
                command: command.clone(),
                source: Arc::new(e),
            })?,
        };
        let mut child = Command::new(program)
            .args(&cmd[1..])
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| StreamError::PipeSpawn {
                command: command.clone(),
                source: Arc::new(e),
            })?;
        if stdin.is_none() {
            stdin = child.stdin.take();
        }
        prev_stdout = child.stdout.take();
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            String::from_utf8_lossy(&tail).trim().to_string()
        });
        procs.push(Proc {
            command,
            child,
            stderr,
        });
    }
    match (stdin, prev_stdout) {
        (Some(stdin), Some(stdout)) => Ok(Chain {
            stdin,
            first_command: procs[0].command.clone(),
            stdout,
            procs,
        }),
        _ => Err(StreamError::Internal(
            "pipe_through chain without commands".into(),
        )),
    }
}

/// Waits for every command; the first one (in chain order) that failed is the error.
pub(crate) async fn wait_all(procs: Vec<Proc>) -> Result<(), StreamError> {
    let mut first_error = None;
    for mut p in procs {
        let status = p.child.wait().await;
        let stderr = p.stderr.await.unwrap_or_default();
        let failed = match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(s.to_string()),
            Err(e) => Some(format!("could not wait for it: {e}")),
        };
        if let (Some(status), None) = (failed, &first_error) {
            first_error = Some(StreamError::PipeFailed {
                command: p.command,
                status,
                stderr: if stderr.is_empty() {
                    "(empty)".to_string()
                } else {
                    stderr
                },
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}
