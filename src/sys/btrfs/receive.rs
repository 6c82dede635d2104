//! `btrfs receive` as an async sink. There is no receive ioctl: receiving is
//! done in userspace by btrfs-progs, so this spawns
//! `btrfs receive --chroot -e DIR` (`-e`: stop at the stream's end command
//! instead of waiting for more).
//!
//! `--chroot` (btrfs-progs 4.0 and later; `-C`): after opening DIR and its
//! filesystem's root, receive calls `chroot(DIR)` and builds every path of
//! the stream below `/`, so an absolute symlink the stream made (`l -> /etc`)
//! and any `..` resolve inside DIR, never to the host's files. (It keeps
//! descriptors opened before the chroot for finding a snapshot's parent and
//! clone sources by uuid, which only read.) Why a chroot and not a mount
//! namespace: a private mount namespace changes which mounts a process sees,
//! not where `/` is, so `l -> /etc` would still reach the host's /etc;
//! confining the path walk needs a new root, which is what the chroot is.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use super::error::BtrfsError;

/// How much of the tail of btrfs receive's stderr goes into an error message.
const STDERR_TAIL: usize = 2000;

/// Confines `btrfs receive` to its directory (see the module doc).
const RECEIVE_CONFINED: &[&str] = &["--chroot"];

/// A running `btrfs receive`: write the send stream into it (it is an
/// [`AsyncWrite`]), then call [`ReceiveProcess::finish`].
#[derive(Debug)]
pub struct ReceiveProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    output: JoinHandle<io::Result<(Vec<u8>, Vec<u8>)>>,
    action: String,
    dir: PathBuf,
}

/// Starts `btrfs receive --chroot -e <dir>` with its stdin piped (`dir`
/// absolute and canonical: the chroot goes there). Must be called within a
/// Tokio runtime. The process is killed if the handle is dropped without
/// [`ReceiveProcess::finish`].
pub fn receive(dir: &Path) -> Result<ReceiveProcess, BtrfsError> {
    let action = format!("btrfs receive into {}", dir.display());
    let mut child = Command::new("btrfs")
        .arg("receive")
        .args(RECEIVE_CONFINED)
        .arg("-e")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BtrfsError::os(format!("start {action}"), dir, e, false))?;
    let stdin = child.stdin.take();
    if let Some(s) = &stdin {
        super::enlarge_pipe(s);
    }
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    // Drain both outputs while the stream is written, so a chatty receive
    // can never block on a full stderr pipe.
    let output = tokio::spawn(async move {
        let (o, e) = tokio::join!(read_all(out.as_mut()), read_all(err.as_mut()));
        Ok((o?, e?))
    });
    Ok(ReceiveProcess {
        child,
        stdin,
        output,
        action,
        dir: dir.to_path_buf(),
    })
}

async fn read_all<R: AsyncRead + Unpin>(r: Option<&mut R>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        r.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

impl ReceiveProcess {
    /// Closes the stream, waits for `btrfs receive` and checks its exit
    /// status. Call it only after the whole stream was written (see
    /// [`ReceiveProcess::abort`]). Returns the path of the received subvolume, taken from its
    /// "At subvol NAME" / "At snapshot NAME" line.
    pub async fn finish(mut self) -> Result<PathBuf, BtrfsError> {
        drop(self.stdin.take());
        let os = |e: io::Error| BtrfsError::os(&self.action, &self.dir, e, false);
        let status = self.child.wait().await.map_err(os)?;
        let (stdout, stderr) = (&mut self.output)
            .await
            .map_err(|e| os(e.into()))?
            .map_err(os)?;
        let stderr = String::from_utf8_lossy(&stderr);
        let stdout = String::from_utf8_lossy(&stdout);
        if !status.success() {
            // Its progress lines ("At subvol X") would only hide the error.
            let complaint: Vec<&str> = stderr
                .lines()
                .filter(|l| received_name(l).is_none() && !l.starts_with("Chroot to "))
                .collect();
            return Err(BtrfsError::Process {
                action: self.action,
                path: self.dir,
                detail: format!("{status}: {}", tail(complaint.join("; ").trim())),
            });
        }
        match received_name(&stderr).or_else(|| received_name(&stdout)) {
            Some(name) => Ok(self.dir.join(name)),
            None => Err(BtrfsError::Process {
                action: self.action,
                path: self.dir,
                detail: format!(
                    "it succeeded but did not name the received subvolume (stderr: {})",
                    tail(stderr.trim())
                ),
            }),
        }
    }

    /// Stops the receive without letting it finalize: kills `btrfs receive`
    /// and waits for it to exit. Use this instead of [`ReceiveProcess::finish`]
    /// whenever the stream could not be written in full. With `-e`, btrfs-progs
    /// 6.2 rejects a stream that ends without its end command ("unexpected EOF
    /// in stream", tested), but btrfs receive has finalized what it had on a
    /// plain EOF in other versions (received uuid set, read-only), which would
    /// make a truncated stream look like a good subvolume; killing it never
    /// does. A partial subvolume may remain in the directory for the caller
    /// to delete.
    pub async fn abort(mut self) -> Result<(), BtrfsError> {
        self.child
            .kill()
            .await
            .map_err(|e| BtrfsError::os(format!("stop {}", self.action), &self.dir, e, false))
    }

    fn stdin(&mut self) -> io::Result<Pin<&mut ChildStdin>> {
        self.stdin
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "receive stdin closed"))
    }
}

/// The last "At subvol X" / "At snapshot X" in btrfs receive's output.
fn received_name(output: &str) -> Option<&str> {
    output.lines().rev().find_map(|l| {
        let name = l
            .strip_prefix("At subvol ")
            .or_else(|| l.strip_prefix("At snapshot "))?
            .trim_end();
        (!name.is_empty()).then_some(name)
    })
}

fn tail(s: &str) -> &str {
    if s.len() <= STDERR_TAIL {
        return s;
    }
    let mut start = s.len() - STDERR_TAIL;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl AsyncWrite for ReceiveProcess {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stdin() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stdin() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.stdin.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_subvolume_names_are_parsed() {
        assert_eq!(received_name("At subvol data.2026\n"), Some("data.2026"));
        assert_eq!(
            received_name("At snapshot a b\nsomething else\n"),
            Some("a b")
        );
        assert_eq!(received_name("At subvol a\nAt snapshot b\n"), Some("b"));
        assert_eq!(received_name("ERROR: boom\n"), None);
    }

    #[test]
    fn tails_are_cut_on_char_boundaries() {
        let s = "é".repeat(STDERR_TAIL);
        let t = tail(&s);
        assert!(t.len() <= STDERR_TAIL && t.chars().all(|c| c == 'é'));
    }
}
