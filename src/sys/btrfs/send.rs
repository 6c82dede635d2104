//! `btrfs send` as an async byte stream, straight from the kernel.
//!
//! Why the ioctl rather than spawning `btrfs send`: no extra process and no
//! extra copy through its stdout, and the kernel's errno tells precisely why
//! a send failed. BTRFS_IOC_SEND blocks until the whole stream is written, so
//! it runs on a dedicated thread writing into a pipe (enlarged to 1 MiB so the
//! kernel writes big chunks); the read end is read asynchronously by tokio.
//!
//! A failure part way through ends the stream early with an EOF that looks
//! like a normal end; only [`SendStream::finish`] tells the two apart, so
//! callers must always call it before trusting the bytes they read.
//!
//! Dropping a [`SendStream`] (or calling `finish` before EOF) closes the read
//! end: the kernel's next write into the pipe fails with EPIPE, the ioctl
//! returns and the thread exits. (Rust binaries ignore SIGPIPE, so the signal
//! that goes with EPIPE is harmless.)

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::error::BtrfsError;
use super::ioctl;
use super::subvol::{fsid_of, info_of_open, open_subvolume, SubvolInfo};

/// The pipe size asked for; the kernel's default of 64 KiB costs throughput.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// What a completed send produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    /// Bytes of send stream the reader consumed.
    pub bytes: u64,
    /// Time from the start of the send to its end.
    pub elapsed: Duration,
}

/// A running `btrfs send`: read it with [`AsyncRead`] to EOF, then call
/// [`SendStream::finish`] to learn whether the stream is complete.
#[derive(Debug)]
pub struct SendStream {
    reader: pipe::Receiver,
    done: oneshot::Receiver<io::Result<()>>,
    ctransid: u64,
    bytes: u64,
    started: Instant,
    action: String,
    path: PathBuf,
}

impl SendStream {
    /// The snapshot's ctransid, read from the open snapshot just before the
    /// send started: the ctransid the stream's first command carries (the
    /// snapshot is read-only, so only a dedupe changes it, and the caller
    /// holds the dedupe lock).
    pub fn ctransid(&self) -> u64 {
        self.ctransid
    }

    /// Waits for the send to end and reports whether it succeeded. If the
    /// stream was not read to EOF, the send is aborted and this is an error.
    /// A send that failed part way is an error here even though the reader
    /// saw a plain EOF.
    pub async fn finish(self) -> Result<SendStats, BtrfsError> {
        let SendStream {
            reader,
            done,
            bytes,
            started,
            action,
            path,
            ..
        } = self;
        drop(reader);
        let result = done
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the send thread ended without a result")));
        result.map_err(|e| BtrfsError::os(action, path, e, false))?;
        Ok(SendStats {
            bytes,
            elapsed: started.elapsed(),
        })
    }

    /// Bytes read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

impl AsyncRead for SendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.reader).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.bytes += (buf.filled().len() - before) as u64;
        }
        poll
    }
}

/// Starts sending the read-only snapshot `snapshot`, in full or relative to
/// the read-only snapshot `parent` (`btrfs send -p`). The parent must be on
/// the same filesystem and a snapshot of the same source (or the snapshot's
/// own source / child): subvault's chains never relate anything else, and
/// a stream relative to an unrelated parent could not be restored from the
/// bucket. Must be called within a Tokio runtime. Needs root (CAP_SYS_ADMIN).
pub fn send(snapshot: &Path, parent: Option<&Path>) -> Result<SendStream, BtrfsError> {
    let action = match parent {
        Some(p) => format!("send {} relative to {}", snapshot.display(), p.display()),
        None => format!("send {}", snapshot.display()),
    };
    let snap_fd = open_subvolume(snapshot, &action)?;
    let snap = info_of_open(&snap_fd, snapshot, &action)?;
    check_readonly(&snap, snapshot, &action)?;
    let parent_root = match parent {
        None => None,
        Some(parent) => {
            let parent_fd = open_subvolume(parent, &action)?;
            let p = info_of_open(&parent_fd, parent, &action)?;
            check_readonly(&p, parent, &action)?;
            if fsid_of(&parent_fd, parent, &action)? != fsid_of(&snap_fd, snapshot, &action)? {
                return Err(invalid(
                    &action,
                    parent,
                    "the parent is on another filesystem",
                ));
            }
            if !related(&snap, &p) {
                return Err(invalid(
                    &action,
                    parent,
                    &format!(
                        "the parent ({}) is not a snapshot of the same subvolume as {} \
                         (parent uuids {} and {})",
                        p.uuid,
                        snapshot.display(),
                        show(p.parent_uuid),
                        show(snap.parent_uuid)
                    ),
                ));
            }
            Some(p.id)
        }
    };

    let os = |e: io::Error| BtrfsError::os(&action, snapshot, e, false);
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| os(e.into()))?;
    enlarge_pipe(&write_end);
    let reader = pipe::Receiver::from_owned_fd(read_end).map_err(os)?;
    let (tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("btrfs-send".to_string())
        .spawn(move || {
            let result = ioctl::send(snap_fd.as_fd(), write_end.as_fd(), parent_root);
            // Close the write end before reporting, so the reader sees EOF.
            drop(write_end);
            drop(snap_fd);
            let _ = tx.send(result);
        })
        .map_err(os)?;
    tracing::debug!(snapshot = %snapshot.display(), ?parent_root, "btrfs send started");
    Ok(SendStream {
        reader,
        done,
        ctransid: snap.ctransid,
        bytes: 0,
        started: Instant::now(),
        action,
        path: snapshot.to_path_buf(),
    })
}

/// Whether a stream of `snap` relative to `parent` is one subvault makes:
/// siblings (snapshots of one source) or a direct snapshot relation.
fn related(snap: &SubvolInfo, parent: &SubvolInfo) -> bool {
    (snap.parent_uuid.is_some() && snap.parent_uuid == parent.parent_uuid)
        || snap.parent_uuid == Some(parent.uuid)
        || parent.parent_uuid == Some(snap.uuid)
}

fn check_readonly(info: &SubvolInfo, path: &Path, action: &str) -> Result<(), BtrfsError> {
    if info.readonly {
        return Ok(());
    }
    Err(invalid(
        action,
        path,
        &format!(
            "{} is writable; btrfs sends only read-only snapshots",
            path.display()
        ),
    ))
}

fn invalid(action: &str, path: &Path, reason: &str) -> BtrfsError {
    BtrfsError::Invalid {
        action: action.to_string(),
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn show(u: Option<uuid::Uuid>) -> String {
    u.map_or_else(|| "none".to_string(), |u| u.to_string())
}

/// Grows a pipe to 1 MiB so a stream moves in few large writes instead of
/// 64 KiB ones, each waking the other side. Best effort: a small pipe only
/// costs speed (and unprivileged users may be capped by
/// /proc/sys/fs/pipe-max-size).
pub(crate) fn enlarge_pipe(fd: &impl AsRawFd) {
    // SAFETY: fcntl on a valid fd with an integer argument.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    if r < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot enlarge a stream pipe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use uuid::Uuid;

    fn info(uuid: u128, parent: Option<u128>) -> SubvolInfo {
        SubvolInfo {
            id: 256,
            name: "x".into(),
            uuid: Uuid::from_u128(uuid),
            parent_uuid: parent.map(Uuid::from_u128),
            received_uuid: None,
            generation: 1,
            ctransid: 1,
            otransid: 1,
            ctime: DateTime::default(),
            otime: DateTime::default(),
            readonly: true,
        }
    }

    #[test]
    fn send_parents_must_be_related() {
        let (a, b) = (info(1, Some(9)), info(2, Some(9)));
        assert!(related(&a, &b), "siblings");
        assert!(related(&a, &info(9, None)), "the source itself");
        assert!(related(&info(9, None), &a), "a snapshot of the snapshot");
        assert!(
            !related(&a, &info(3, Some(8))),
            "snapshot of another source"
        );
        assert!(
            !related(&info(1, None), &info(2, None)),
            "two unrelated subvolumes"
        );
    }
}
