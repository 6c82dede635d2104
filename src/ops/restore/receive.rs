//! Receiving a chain: each object downloaded (with the next one prefetched),
//! decoded and verified on the way into `btrfs receive`, one step at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::fetch::{self, Fetch};
use super::path_guard::PathGuard;
use super::target::{Present, Target};
use super::{stream_head, writeback, ObjectFailure, RestoreError, Step, StepAction};
use crate::core::model::Backup;
use crate::ops::remotes::Decoding;
use crate::progress::Progress;
use crate::remote::ObjectStore;
use crate::stream::{self, StreamError};
use crate::sys::btrfs::{self, ReceiveProcess};
use crate::units::human_bytes;

/// What receiving one step did.
#[derive(Debug, Clone)]
pub struct Received {
    /// The backup.
    pub key: String,
    /// The read-only subvolume it became.
    pub path: PathBuf,
    /// Object bytes downloaded.
    pub object_len: u64,
    /// Raw send-stream bytes received.
    pub raw_len: u64,
    /// True when the object carried a checksum trailer and it matched (false
    /// for btrfs2s3 objects, which only have the send stream's own CRCs).
    pub checksummed: bool,
    /// Wall time of the step.
    pub seconds: f64,
}

/// Knobs of [`receive_chain`].
pub struct ReceiveOptions<'a> {
    /// Bytes to buffer ahead of the object being received (see [`Fetch`]).
    pub prefetch: usize,
    /// Told a line before and after each step.
    pub progress: &'a dyn Progress,
    /// The source's `restore_pipe_through` commands (see [`object_reader`]).
    pub restore_pipe_through: &'a [Vec<String>],
    /// How the objects are decoded (decrypted and authenticated, for an
    /// encrypted remote).
    pub decoding: &'a Decoding,
}

/// Receives the steps marked [`StepAction::Receive`] in order, prefetching the
/// next object while the current one is received. Stops at the first failure,
/// leaving the steps already received in place (a retry reuses them).
pub async fn receive_chain<S: ObjectStore + 'static>(
    store: Arc<S>,
    target: &Target,
    steps: &[Step],
    opts: &ReceiveOptions<'_>,
) -> Result<Vec<Received>, RestoreError> {
    let todo: Vec<&Backup> = steps
        .iter()
        .filter(|s| s.action == StepAction::Receive)
        .map(|s| &s.backup)
        .collect();
    let start = |b: &Backup| {
        Fetch::start(
            store.clone(),
            b.key().to_string(),
            b.size.unwrap_or(u64::MAX),
            opts.prefetch,
        )
    };
    let mut out = Vec::new();
    let writeback = writeback::Writeback::start(target.dir());
    let mut next = todo.first().map(|b| start(b));
    for (i, b) in todo.iter().enumerate() {
        let fetch = next.take().expect("a fetch per step");
        next = todo.get(i + 1).map(|n| start(n));
        opts.progress.note(&format!(
            "receiving {}/{}: {} ({})",
            i + 1,
            todo.len(),
            b.key(),
            b.size
                .map(human_bytes)
                .unwrap_or_else(|| "size unknown".into())
        ));
        let r = receive_one(fetch, b, target, opts.restore_pipe_through, opts.decoding).await?;
        opts.progress.note(&format!(
            "received {} ({} raw in {:.1} s, {:.0} MB/s)",
            r.path.display(),
            human_bytes(r.raw_len),
            r.seconds,
            r.raw_len as f64 / 1e6 / r.seconds.max(1e-3)
        ));
        out.push(r);
    }
    writeback.stop();
    let synced = Instant::now();
    // `btrfs receive` only wrote into the page cache: "restored X" followed by
    // a power cut must not lose X, so the data goes to disk first. (Most of it
    // is there already: `writeback` flushed it while the chain was received.)
    let dir = target.dir().to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir).and_then(|d| btrfs::ioctl::sync(d.as_fd()))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(|e| RestoreError::Target {
        dir: target.dir().to_path_buf(),
        reason: format!("the restored data could not be written to disk (BTRFS_IOC_SYNC): {e}"),
    })?;
    opts.progress.note(&format!(
        "synced to disk in {:.1} s",
        synced.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// The next verified piece of the raw stream (`None` at its end), keeping the
/// cause of a failure. Pieces go to `btrfs receive` as they come, uncopied.
async fn next_chunk(dec: &mut stream::Decoded) -> Result<Option<Bytes>, ObjectFailure> {
    dec.next_chunk().await.map_err(|e| {
        if let Some(s) = StreamError::from_io(&e) {
            if let StreamError::ObjectRead(inner) = s {
                return ObjectFailure::Download(download_cause(inner));
            }
            return ObjectFailure::Stream(s.clone());
        }
        ObjectFailure::Download(e.to_string())
    })
}

/// The download error inside an object-read failure, without repeating the key.
pub fn download_cause(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<fetch::FetchError>())
    {
        Some(fetch::FetchError::Remote(r)) if r.is_not_found() => {
            "the object is missing (deleted after the listing?)".into()
        }
        Some(f) => f.to_string(),
        None => e.to_string(),
    }
}

/// Why the copy into `btrfs receive` stopped.
enum Stop {
    /// The decoder reached the verified end of the stream.
    End,
    /// The object failed to download or verify.
    ReadFailed(ObjectFailure),
    /// `btrfs receive` stopped taking input.
    WriteFailed,
}

/// Receives one object: its first command is checked (a plain new name in
/// DIR, the uuid, ctransid and parent its key names) before `btrfs receive` starts,
/// and every later path as it passes ([`PathGuard`]).
async fn receive_one(
    fetch: Fetch,
    backup: &Backup,
    target: &Target,
    restore_pipe_through: &[Vec<String>],
    decoding: &Decoding,
) -> Result<Received, RestoreError> {
    let started = Instant::now();
    let fail = |cause: ObjectFailure, cleanup: String| RestoreError::Object {
        key: backup.key().to_string(),
        cause: Box::new(cause),
        cleanup,
    };
    let before: BTreeSet<OsString> = target.subvolumes()?.into_keys().collect();
    let mut dec = decode_object(fetch, backup, restore_pipe_through, decoding)
        .map_err(|e| fail(ObjectFailure::Stream(e), String::new()))?;
    let (head, head_buf) = read_head(&mut dec)
        .await
        .map_err(|e| fail(e, String::new()))?;
    stream_head::check_against_key(&head, backup).map_err(|e| fail(e.into(), String::new()))?;
    let dest = target.join(&head.name);
    if target.has_entry(&head.name) {
        return Err(fail(ObjectFailure::NameTaken(dest), String::new()));
    }
    // Marked first, so a restore killed mid-receive (SIGKILL) leaves proof
    // that the half-received subvolume is ours to delete on the next run.
    target
        .mark_receiving(&head.name, &backup.key())
        .map_err(|e| {
            fail(
                ObjectFailure::Receive(format!("cannot write into DIR: {e}")),
                String::new(),
            )
        })?;
    let rx = match btrfs::receive(target.dir()) {
        Ok(rx) => rx,
        Err(e) => {
            target.unmark_receiving(&head.name);
            return Err(fail(ObjectFailure::Receive(e.to_string()), String::new()));
        }
    };
    let received = match feed(dec, rx, head_buf.freeze()).await {
        Ok(summary) => check_finished(&dest).map(|()| summary),
        Err(e) => Err(e),
    };
    let received = received.map_err(|cause| fail(cause, cleanup(target, &before, &head.name)));
    target.unmark_receiving(&head.name);
    let summary = received?;
    Ok(Received {
        key: backup.key().to_string(),
        path: dest,
        object_len: summary.object_len,
        raw_len: summary.raw_len,
        checksummed: summary.verified,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The bytes of `backup`'s object to decode, and how to decode them: `body`
/// itself, or `body` passed through the `restore_pipe_through` commands when
/// there are some and the key names no codec (what `pipe_through` and btrfs2s3
/// write; keys naming subvault's own codec were never piped). In an encrypted
/// remote the object was encrypted after `pipe_through`, so it is decrypted
/// before the commands, and the decoder still checks its keyed trailer and
/// body MAC. Used by `restore` and `verify`.
pub fn object_reader(
    body: Fetch,
    backup: &Backup,
    restore_pipe_through: &[Vec<String>],
    decoding: &Decoding,
) -> Result<(Box<dyn AsyncRead + Unpin + Send>, stream::DecodeOptions), StreamError> {
    let mut opts = decoding.options(backup);
    if backup.codec.is_some() || restore_pipe_through.is_empty() {
        return Ok((Box::new(body), opts));
    }
    let plain: Box<dyn AsyncRead + Unpin + Send> = match opts.unseal.as_mut() {
        Some(u) => match u.identities.take() {
            Some(ids) => Box::new(stream::decrypt(body, ids, u.key_file.clone())),
            None => Box::new(body),
        },
        None => Box::new(body),
    };
    Ok((Box::new(stream::unpipe(plain, restore_pipe_through)?), opts))
}

/// [`stream::decode_with`] of [`object_reader`].
fn decode_object(
    body: Fetch,
    backup: &Backup,
    restore_pipe_through: &[Vec<String>],
    decoding: &Decoding,
) -> Result<stream::Decoded, StreamError> {
    let (obj, opts) = object_reader(body, backup, restore_pipe_through, decoding)?;
    Ok(stream::decode_with(obj, opts))
}

/// Reads the decoded stream until its first command (which names the subvolume
/// it creates) is complete; returns it and every byte read so far.
async fn read_head(
    dec: &mut stream::Decoded,
) -> Result<(stream_head::StreamHead, BytesMut), ObjectFailure> {
    let mut buf = BytesMut::new();
    loop {
        if let Some(h) = stream_head::parse(&buf)? {
            return Ok((h, buf));
        }
        match next_chunk(dec).await? {
            Some(b) => buf.extend_from_slice(&b),
            None => {
                return Err(stream_head::HeadError::Malformed(
                    "the stream ends before its first command",
                )
                .into())
            }
        }
    }
}

/// Feeds the rest of the stream (after `pending`) into `btrfs receive` and
/// ends it: finished when the decoder verified the whole stream, killed
/// (never finalized) otherwise. Every piece passes the [`PathGuard`] before
/// receive sees it.
async fn feed(
    mut dec: stream::Decoded,
    mut rx: ReceiveProcess,
    mut pending: Bytes,
) -> Result<stream::DecodeSummary, ObjectFailure> {
    let mut guard = PathGuard::new();
    let stop = loop {
        if let Err(e) = guard.update(&pending) {
            break Stop::ReadFailed(ObjectFailure::UnsafePath(e));
        }
        if !pending.is_empty() && rx.write_all(&pending).await.is_err() {
            break Stop::WriteFailed;
        }
        match next_chunk(&mut dec).await {
            Ok(None) => break Stop::End,
            Ok(Some(b)) => pending = b,
            Err(e) => break Stop::ReadFailed(e),
        }
    };
    match stop {
        Stop::End => match dec.finish().await {
            Ok(s) => rx
                .finish()
                .await
                .map(|_| s)
                .map_err(|e| ObjectFailure::Receive(e.to_string())),
            Err(e) => {
                let _ = rx.abort().await;
                Err(ObjectFailure::Stream(e))
            }
        },
        Stop::ReadFailed(e) => {
            let _ = rx.abort().await;
            Err(e)
        }
        // A failed write means receive stopped reading: its exit status and
        // stderr say why.
        Stop::WriteFailed => Err(ObjectFailure::Receive(match rx.finish().await {
            Ok(_) => "btrfs receive stopped reading its input".into(),
            Err(e) => e.to_string(),
        })),
    }
}

/// A successful `btrfs receive` must have left a finished subvolume: read-only
/// and marked received.
fn check_finished(dest: &Path) -> Result<(), ObjectFailure> {
    match btrfs::subvol_info(dest) {
        Ok(info) if info.readonly && info.received_uuid.is_some() => Ok(()),
        Ok(_) => Err(ObjectFailure::Receive(format!(
            "btrfs receive exited successfully but {} is not a finished (read-only, received) subvolume",
            dest.display()
        ))),
        Err(e) => Err(ObjectFailure::Receive(e.to_string())),
    }
}

/// After an interrupted restore: deletes the subvolumes that appeared in DIR
/// since `before` and are not finished receives (writable or without a
/// received uuid). Says what it did, for the error line.
pub fn remove_unfinished(target: &Target, before: &BTreeMap<OsString, Present>) -> String {
    std::thread::sleep(std::time::Duration::from_millis(200)); // let the killed receive exit
    let Ok(now) = target.subvolumes() else {
        return String::new();
    };
    let mut notes = Vec::new();
    for p in now
        .iter()
        .filter(|(n, p)| !before.contains_key(*n) && (!p.readonly || p.received_uuid.is_none()))
        .map(|(_, p)| p)
    {
        notes.push(match btrfs::destroy_subvolume(&p.path) {
            Ok(()) => format!("the partial subvolume {} was deleted", p.path.display()),
            Err(e) => format!("delete the partial subvolume {} ({e})", p.path.display()),
        });
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    }
}

/// Deletes every subvolume that appeared in DIR during the failed step (the
/// stream's own name first); says what it did, for the error line.
fn cleanup(target: &Target, before: &BTreeSet<OsString>, name: &str) -> String {
    let now = match target.subvolumes() {
        Ok(now) => now,
        Err(e) => {
            return format!(
                "; could not check {} for a partial subvolume ({e}): delete {} if it exists",
                target.dir().display(),
                target.join(name).display()
            )
        }
    };
    let mut notes = Vec::new();
    for p in now
        .iter()
        .filter(|(n, _)| !before.contains(*n))
        .map(|(_, p)| p)
    {
        match btrfs::destroy_subvolume(&p.path) {
            Ok(()) => notes.push(format!(
                "the partial subvolume {} was deleted",
                p.path.display()
            )),
            Err(e) => notes.push(format!(
                "could not delete the partial subvolume {} ({e}): run `btrfs subvolume delete {}`",
                p.path.display(),
                p.path.display()
            )),
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    }
}
