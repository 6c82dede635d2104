//! `pipe_through`: a chain of external commands (stdin -> stdout) the encoded bytes
//! pass through before upload, each one's exit status checked; and its
//! reverse, `restore_pipe_through`, which an object passes through before it
//! is decoded ([`unpipe`]).
//!
//! The commands are other programs (gpg, a cloud KMS client, a script): they
//! get subvault's environment without its secrets ([`SECRET_ENV_PREFIXES`],
//! [`SECRET_ENV`]), and a passphrase given on their command line is not
//! repeated in messages ([`show`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::error::StreamError;

/// Environment variables whose name starts with one of these are not passed
/// to the commands: AWS credentials (`AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, ...) and subvault's own settings.
pub const SECRET_ENV_PREFIXES: &[&str] = &["AWS_", "SUBVAULT_"];
/// Single variables not passed to the commands: libpq's password.
pub const SECRET_ENV: &[&str] = &["PGPASSWORD"];

/// Whether the environment variable `name` may hold a secret of subvault's.
pub fn is_secret_env(name: &str) -> bool {
    SECRET_ENV.contains(&name) || SECRET_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Arguments whose next argument (or `=value`) is a secret: gpg's and
/// openssl's passphrase options.
const SECRET_ARGS: &[&str] = &["--passphrase", "-passphrase", "--password", "-pass"];

/// How much of each command's stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;

/// One running command of the chain.
pub(crate) struct Proc {
    setting: &'static str,
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

/// A command line as shown in messages (and by `config check`): the value of a
/// passphrase option (`--passphrase X`, `--passphrase=X`, openssl's
/// `-pass pass:X`) is shown as `***`.
pub fn show(cmd: &[String]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(cmd.len());
    let mut hide_next = false;
    for arg in cmd {
        if hide_next {
            out.push("***");
            hide_next = false;
            continue;
        }
        match arg.split_once('=') {
            Some((opt, _)) if SECRET_ARGS.contains(&opt) => {
                out.push(opt);
                out.push("=***");
            }
            _ => {
                hide_next = SECRET_ARGS.contains(&arg.as_str());
                out.push(arg);
            }
        }
    }
    out.join(" ").replace(" =***", "=***")
}

/// Starts every command, each reading the previous one's stdout, with the
/// environment minus its secrets ([`is_secret_env`]). `setting` names the
/// config field in messages (`pipe_through`, `restore_pipe_through`). The
/// children are killed if the chain is dropped before [`wait_all`].
pub(crate) fn spawn_chain(
    cmds: &[Vec<String>],
    setting: &'static str,
) -> Result<Chain, StreamError> {
    let mut procs: Vec<Proc> = Vec::with_capacity(cmds.len());
    let mut stdin = None;
    let mut prev_stdout: Option<ChildStdout> = None;
    for cmd in cmds {
        let program = cmd.first().ok_or(StreamError::EmptyCommand)?;
        let command = show(cmd);
        let input: Stdio = match prev_stdout.take() {
            None => Stdio::piped(),
            Some(out) => out.try_into().map_err(|e| StreamError::PipeSpawn {
                setting,
                command: command.clone(),
                source: Arc::new(e),
            })?,
        };
        let mut child = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(is_secret_env) {
                child.env_remove(name);
            }
        }
        let mut child = child
            .args(&cmd[1..])
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| StreamError::PipeSpawn {
                setting,
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
            // One line: it goes into an error line (gpg writes several).
            let text = String::from_utf8_lossy(&tail);
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            lines.join("; ")
        });
        procs.push(Proc {
            setting,
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
                setting: p.setting,
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

/// An object read back through `restore_pipe_through`: the object is written
/// into the first command, and this reads the last one's output. Its end is
/// an EOF only when every command exited successfully; a command that failed
/// (gpg that found the message tampered with, after writing what it had
/// decrypted) makes the last read fail instead, so the decoder never passes on
/// the end of the stream. A failure to read the object itself is returned as
/// it came (a download error stays a download error).
pub struct Unpiped {
    stdout: ChildStdout,
    /// Feeds the object into the chain, then waits for every command.
    finish: JoinHandle<Result<(), Fed>>,
    ended: bool,
}

/// Why feeding the chain failed.
#[derive(Debug)]
enum Fed {
    /// Reading the object failed.
    Read(io::Error),
    /// A command failed, or the chain misbehaved.
    Chain(StreamError),
}

/// Starts `cmds` (the `restore_pipe_through` commands) and feeds `obj` into
/// them; see [`Unpiped`]. Must be called inside a Tokio runtime.
pub fn unpipe(
    mut obj: impl AsyncRead + Unpin + Send + 'static,
    cmds: &[Vec<String>],
) -> Result<Unpiped, StreamError> {
    let chain = spawn_chain(cmds, "restore_pipe_through")?;
    let Chain {
        mut stdin,
        first_command,
        stdout,
        procs,
    } = chain;
    let finish = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 << 10];
        let mut write_failed = None;
        loop {
            let n = match obj.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                // Dropping the chain here kills the commands.
                Err(e) => return Err(Fed::Read(e)),
            };
            if let Err(e) = stdin.write_all(&buf[..n]).await {
                // The command stopped reading: its exit status says why.
                write_failed = Some(e);
                break;
            }
        }
        drop(stdin);
        wait_all(procs).await.map_err(Fed::Chain)?;
        match write_failed {
            None => Ok(()),
            Some(e) => Err(Fed::Chain(StreamError::PipeIo {
                setting: "restore_pipe_through",
                command: first_command,
                source: Arc::new(e),
            })),
        }
    });
    Ok(Unpiped {
        stdout,
        finish,
        ended: false,
    })
}

impl AsyncRead for Unpiped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stdout).poll_read(cx, buf))?;
        if buf.filled().len() > before || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // The last command's output ended: EOF only if every command succeeded.
        let fed = ready!(Pin::new(&mut this.finish).poll(cx));
        this.ended = true;
        Poll::Ready(match fed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Fed::Read(e))) => Err(e),
            Ok(Err(Fed::Chain(e))) => Err(e.into()),
            Err(e) => {
                Err(StreamError::Internal(format!("restore_pipe_through feeder: {e}")).into())
            }
        })
    }
}

impl Drop for Unpiped {
    /// Stops the feeder, which kills the commands, when the reader is dropped
    /// before its end (the decoder failed).
    fn drop(&mut self) {
        self.finish.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn passphrases_on_a_command_line_are_not_shown() {
        let cases = [
            (
                &["gpg", "--batch", "--passphrase", "hunter2", "-c"][..],
                "gpg --batch --passphrase *** -c",
            ),
            (
                &["gpg", "--passphrase=hunter2", "-c"],
                "gpg --passphrase=*** -c",
            ),
            (
                &["openssl", "enc", "-aes-256-cbc", "-pass", "pass:hunter2"],
                "openssl enc -aes-256-cbc -pass ***",
            ),
            (&["zstd", "-k", "-3"], "zstd -k -3"),
            (
                &["gpg", "--encrypt", "-r", "me@example.com"],
                "gpg --encrypt -r me@example.com",
            ),
        ];
        for (cmd, want) in cases {
            assert_eq!(show(&argv(cmd)), want);
        }
    }

    #[test]
    fn secret_variables_are_recognised() {
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "PGPASSWORD",
            "SUBVAULT_CONFIG",
        ] {
            assert!(is_secret_env(name), "{name}");
        }
        for name in ["PATH", "HOME", "GNUPGHOME", "PGHOST", "LANG"] {
            assert!(!is_secret_env(name), "{name}");
        }
    }

    async fn read_all(mut r: Unpiped) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.err();
        (out, e)
    }

    #[tokio::test]
    async fn unpipe_passes_the_object_through_every_command() {
        let obj = std::io::Cursor::new(b"hello world".repeat(100_000));
        let r = unpipe(obj, &[argv(&["cat"]), argv(&["tr", "a-z", "A-Z"])]).unwrap();
        let (out, e) = read_all(r).await;
        assert!(e.is_none(), "{e:?}");
        assert_eq!(out, b"HELLO WORLD".repeat(100_000));
    }

    #[tokio::test]
    async fn a_reverse_command_that_fails_after_its_output_is_an_error() {
        // The output is complete and right, but the command says it failed
        // (as gpg does for a tampered message): the end is an error, not EOF.
        let obj = std::io::Cursor::new(b"data".to_vec());
        let r = unpipe(
            obj,
            &[argv(&[
                "sh",
                "-c",
                "cat; printf 'bad MDC\\n\\ntwice\\n' >&2; exit 2",
            ])],
        )
        .unwrap();
        let (out, e) = read_all(r).await;
        assert_eq!(out, b"data");
        let e = e.expect("an error instead of EOF");
        let msg = e.to_string();
        assert!(
            msg.contains("restore_pipe_through command `sh -c")
                && msg.contains("exit status: 2")
                && msg.contains("bad MDC; twice"),
            "{msg}"
        );
        let err = unpipe(
            std::io::Cursor::new(vec![]),
            &[argv(&["no-such-command-subvault"])],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("restore_pipe_through"), "{err}");
    }

    #[tokio::test]
    async fn a_failed_object_read_stays_the_error() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the download broke off",
                )))
            }
        }
        let (_, e) = read_all(unpipe(Broken, &[argv(&["cat"])]).unwrap()).await;
        let e = e.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
}
