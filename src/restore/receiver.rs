//! `btrfs receive -e DIR` for one chain step, with an abort that really stops it.
//!
//! `btrfs receive` finalizes (sets the received uuid, flips read-only) whatever
//! it has when its input simply ends, so a failed download must never close its
//! stdin first: [`Receiver::abort`] kills the process, waits for it to be gone,
//! and only then may the caller delete the half-received subvolume.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

/// How much of receive's stderr goes into an error message.
const STDERR_TAIL: usize = 1000;

/// A running `btrfs receive`.
pub struct Receiver {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: JoinHandle<String>,
}

impl Receiver {
    /// Starts `btrfs receive -e DIR`.
    pub fn start(dir: &Path) -> std::io::Result<Receiver> {
        let mut child = Command::new("btrfs")
            .arg("receive")
            .arg("-e")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take();
        if let Some(s) = &stdin {
            crate::btrfs::enlarge_pipe(s);
        }
        let mut err = child.stderr.take();
        let stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut buf).await;
            }
            String::from_utf8_lossy(&buf).into_owned()
        });
        Ok(Receiver {
            child,
            stdin,
            stderr,
        })
    }

    /// Writes stream bytes.
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.write_all(data).await,
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Closes the input and waits; `Err` carries receive's complaint.
    pub async fn finish(mut self) -> Result<(), String> {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.shutdown().await;
        }
        self.wait_status().await
    }

    /// Why receive stopped taking input: its exit status and stderr, once it
    /// has exited (after a failed write it is about to, or already did).
    pub async fn failure(mut self) -> String {
        drop(self.stdin.take());
        match self.wait_status().await {
            Ok(()) => "btrfs receive stopped reading its input".into(),
            Err(e) => e,
        }
    }

    /// Kills receive and waits until it is gone, without ever closing its
    /// input first.
    pub async fn abort(mut self) {
        let _ = self.child.kill().await;
        drop(self.stdin.take());
        self.stderr.abort();
    }

    async fn wait_status(&mut self) -> Result<(), String> {
        let status = self.child.wait().await.map_err(|e| e.to_string())?;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let msg: String = stderr
            .lines()
            .filter(|l| !l.starts_with("At subvol") && !l.starts_with("At snapshot"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut start = msg.len().saturating_sub(STDERR_TAIL);
        while !msg.is_char_boundary(start) {
            start += 1;
        }
        Err(format!(
            "btrfs receive failed ({status}): {}",
            &msg[start..]
        ))
    }
}
