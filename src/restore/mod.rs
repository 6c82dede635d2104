//! Getting data back: the chain of objects for a point in time, downloaded,
//! decoded, verified and fed to `btrfs receive`, one read-only subvolume per step.
//!
//! ```text
//! listing ──chain::select/chain──> [full, monthly, daily]   (pure)
//!   per step:  Fetch (GET or parallel ranged GETs, bounded prefetch of the
//!              next) ──> stream::decode ──> first command checked (stream_head)
//!              ──> btrfs receive -e DIR
//!   meanwhile: writeback (syncfs of DIR's filesystem every 300 ms)
//!   at the end: BTRFS_IOC_SYNC
//! ```
//!
//! Safety rules: DIR must exist on btrfs and is canonicalized once ([`Target`]);
//! the name a stream would create is read from its first command before
//! `btrfs receive` starts and must be a plain, unused name in DIR; the last step
//! is refused when DIR already holds a subvolume received from the same uuid,
//! while earlier steps already in DIR (same received uuid, read-only) are reused
//! instead of received again; any failure kills the receive before its input
//! ends and deletes the half-received subvolume.

pub mod fetch;
pub mod stream_head;
pub mod target;
pub mod writeback;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

pub use crate::core::chain::{ChainError, Selector};
pub use fetch::Fetch;
pub use target::{Present, Target};

use crate::core::model::Backup;
use crate::progress::Progress;
use crate::remote::{ObjectStore, RemoteError};
use crate::stream::{self, StreamError};
use crate::sys::btrfs;
use crate::units::human_bytes;

/// Default bytes buffered ahead for the next object in the chain (and at most
/// for the current one). 32 MiB is ample: with ranged GETs the next object
/// arrives faster than it is decoded; 64 MiB made no difference in speed and
/// added 60 MB to the peak RSS (the current and the next object each fill
/// their buffer).
pub const DEFAULT_PREFETCH: usize = 32 << 20;

/// Why a restore stopped. Each is one line naming the object or directory.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The chain cannot be computed from the listing.
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// The restore directory cannot be used.
    #[error("restore directory {}: {reason}", .dir.display())]
    Target {
        /// The directory as given.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The point asked for is already restored in DIR.
    #[error("{} already holds a subvolume received from snapshot {uuid} ({key}): it is restored already; restore into another directory or delete that subvolume first", .path.display())]
    AlreadyRestored {
        /// The subvolume in DIR.
        path: PathBuf,
        /// Its received uuid.
        uuid: Uuid,
        /// The backup that would be received.
        key: String,
    },
    /// A chain step's received uuid is in DIR, but not as a finished receive.
    #[error("{} was received from {key} but is writable (an interrupted receive, or changed since): delete it (`btrfs subvolume delete {}`) and restore again", .path.display(), .path.display())]
    WritableLeftover {
        /// The subvolume.
        path: PathBuf,
        /// The backup it came from.
        key: String,
    },
    /// Objects sit in an archive storage class and must be restored first.
    #[error("{} object(s) of the chain are in archive storage (GLACIER/DEEP_ARCHIVE) and must be restored to S3 first; run: {}", .commands.len(), .commands.join(" ; "))]
    Archived {
        /// One `aws s3api restore-object ...` command per object.
        commands: Vec<String>,
    },
    /// A chain object could not be restored.
    #[error("object {key}: {cause}{cleanup}")]
    Object {
        /// The object key.
        key: String,
        /// What went wrong (boxed: it is large and errors travel far).
        cause: Box<ObjectFailure>,
        /// What was done about a half-received subvolume ("" when none existed).
        cleanup: String,
    },
}

/// What went wrong with one object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectFailure {
    /// The store could not deliver it (missing, refused, network).
    #[error("{0}")]
    Remote(#[from] RemoteError),
    /// Decompression, checksum, truncation or a damaged send stream.
    #[error("{0}")]
    Stream(StreamError),
    /// The download broke off or failed otherwise.
    #[error("{0}")]
    Download(String),
    /// The stream's first command cannot be used.
    #[error("{0}")]
    Head(#[from] stream_head::HeadError),
    /// The name the stream creates already exists in DIR.
    #[error("{} already exists; restore into another directory or delete it", .0.display())]
    NameTaken(PathBuf),
    /// `btrfs receive` failed.
    #[error("{0}")]
    Receive(String),
}

/// What each step of a chain needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// Already in DIR with the right received uuid: its successor is received on top of it.
    Reuse(PathBuf),
    /// Not needed: a later step is already in DIR.
    Skip,
    /// To download and receive.
    Receive,
}

/// One chain step and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The backup.
    pub backup: Backup,
    /// What to do.
    pub action: StepAction,
}

/// Decides per step whether to receive it, given the subvolumes already in DIR.
/// Refuses when the leaf itself is already there.
pub fn plan_steps(
    chain: &[Backup],
    present: &BTreeMap<OsString, Present>,
) -> Result<Vec<Step>, RestoreError> {
    let find = |u: Uuid| present.values().find(|p| p.received_uuid == Some(u));
    let mut steps: Vec<Step> = chain
        .iter()
        .map(|b| Step {
            backup: b.clone(),
            action: StepAction::Receive,
        })
        .collect();
    for i in (0..steps.len()).rev() {
        let Some(p) = find(steps[i].backup.uuid) else {
            continue;
        };
        if i + 1 == steps.len() {
            return Err(RestoreError::AlreadyRestored {
                path: p.path.clone(),
                uuid: steps[i].backup.uuid,
                key: steps[i].backup.key.clone(),
            });
        }
        if !p.readonly {
            return Err(RestoreError::WritableLeftover {
                path: p.path.clone(),
                key: steps[i].backup.key.clone(),
            });
        }
        steps[i].action = StepAction::Reuse(p.path.clone());
        for s in &mut steps[..i] {
            s.action = StepAction::Skip;
        }
        break;
    }
    Ok(steps)
}

/// The `aws` command that asks S3 to restore an archived object for a week.
pub fn restore_request_command(bucket: &str, key: &str) -> String {
    format!("aws s3api restore-object --bucket {bucket} --key '{key}' --restore-request Days=7")
}

/// Asks the store about every object to receive: a missing one fails here,
/// before anything is downloaded, and archived ones are collected into one
/// [`RestoreError::Archived`] listing the restore-request commands.
pub async fn check_objects<S: ObjectStore>(
    store: &S,
    bucket: &str,
    steps: &[Step],
) -> Result<(), RestoreError> {
    let mut commands = Vec::new();
    for s in steps.iter().filter(|s| s.action == StepAction::Receive) {
        let info = store
            .head(&s.backup.key)
            .await
            .map_err(|e| RestoreError::Object {
                key: s.backup.key.clone(),
                cause: Box::new(e.into()),
                cleanup: String::new(),
            })?;
        if info.needs_restore() {
            commands.push(restore_request_command(bucket, &s.backup.key));
        }
    }
    if commands.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::Archived { commands })
    }
}

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
            b.key.clone(),
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
            b.key,
            b.size
                .map(human_bytes)
                .unwrap_or_else(|| "size unknown".into())
        ));
        let r = receive_one(fetch, b, target).await?;
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

async fn receive_one(
    fetch: Fetch,
    backup: &Backup,
    target: &Target,
) -> Result<Received, RestoreError> {
    let started = Instant::now();
    let fail = |cause: ObjectFailure, cleanup: String| RestoreError::Object {
        key: backup.key.clone(),
        cause: Box::new(cause),
        cleanup,
    };
    let before: BTreeSet<OsString> = target.subvolumes()?.into_keys().collect();
    let mut dec = stream::decode(fetch, backup.codec);
    let mut head_buf = BytesMut::new();
    let head = loop {
        if let Some(h) = stream_head::parse(&head_buf).map_err(|e| fail(e.into(), String::new()))? {
            break h;
        }
        match next_chunk(&mut dec).await {
            Ok(Some(b)) => head_buf.extend_from_slice(&b),
            Ok(None) => {
                return Err(fail(
                    stream_head::HeadError::Malformed("the stream ends before its first command")
                        .into(),
                    String::new(),
                ))
            }
            Err(e) => return Err(fail(e, String::new())),
        }
    };
    if head.uuid != backup.uuid {
        tracing::warn!(
            "{}: the stream sends subvolume {} but the key says {}",
            backup.key,
            head.uuid,
            backup.uuid
        );
    }
    let dest = target.join(&head.name);
    if target.has_entry(&head.name) {
        return Err(fail(ObjectFailure::NameTaken(dest), String::new()));
    }
    let mut rx = btrfs::receive(target.dir())
        .map_err(|e| fail(ObjectFailure::Receive(e.to_string()), String::new()))?;
    let mut pending = head_buf.freeze();
    let stop = loop {
        if !pending.is_empty() && rx.write_all(&pending).await.is_err() {
            break Stop::WriteFailed;
        }
        match next_chunk(&mut dec).await {
            Ok(None) => break Stop::End,
            Ok(Some(b)) => pending = b,
            Err(e) => break Stop::ReadFailed(e),
        }
    };
    let summary = match stop {
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
    };
    let summary = match summary {
        Ok(s) => s,
        Err(cause) => {
            let cleanup = cleanup(target, &before, &head.name);
            return Err(fail(cause, cleanup));
        }
    };
    match btrfs::subvol_info(&dest) {
        Ok(info) if info.readonly && info.received_uuid.is_some() => {}
        Ok(_) => {
            let cleanup = cleanup(target, &before, &head.name);
            return Err(fail(
                ObjectFailure::Receive(format!(
                    "btrfs receive exited successfully but {} is not a finished (read-only, received) subvolume",
                    dest.display()
                )),
                cleanup,
            ));
        }
        Err(e) => {
            let cleanup = cleanup(target, &before, &head.name);
            return Err(fail(ObjectFailure::Receive(e.to_string()), cleanup));
        }
    }
    Ok(Received {
        key: backup.key.clone(),
        path: dest,
        object_len: summary.object_len,
        raw_len: summary.raw_len,
        checksummed: summary.verified,
        seconds: started.elapsed().as_secs_f64(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn b(n: u128, parent: Option<u128>) -> Backup {
        Backup {
            key: format!("k{n}"),
            uuid: Uuid::from_u128(n),
            send_parent_uuid: parent.map(Uuid::from_u128),
            source_uuid: Uuid::nil(),
            ctransid: n as u64,
            time: Utc::now(),
            size: Some(1),
            storage_class: None,
            codec: None,
        }
    }

    fn present(entries: &[(&str, u128, bool)]) -> BTreeMap<OsString, Present> {
        entries
            .iter()
            .map(|(name, u, ro)| {
                (
                    OsString::from(name),
                    Present {
                        path: PathBuf::from("/r").join(name),
                        received_uuid: Some(Uuid::from_u128(*u)),
                        readonly: *ro,
                    },
                )
            })
            .collect()
    }

    fn actions(steps: &[Step]) -> Vec<StepAction> {
        steps.iter().map(|s| s.action.clone()).collect()
    }

    #[test]
    fn earlier_steps_in_dir_are_reused_and_the_leaf_is_refused() {
        let chain = vec![b(1, None), b(2, Some(1)), b(3, Some(2))];
        let all = plan_steps(&chain, &BTreeMap::new()).unwrap();
        assert_eq!(actions(&all), vec![StepAction::Receive; 3]);

        let got = plan_steps(&chain, &present(&[("m", 2, true), ("y", 1, true)])).unwrap();
        assert_eq!(
            actions(&got),
            vec![
                StepAction::Skip,
                StepAction::Reuse(PathBuf::from("/r/m")),
                StepAction::Receive
            ]
        );

        let err = plan_steps(&chain, &present(&[("d", 3, true)])).unwrap_err();
        assert!(matches!(err, RestoreError::AlreadyRestored { ref key, .. } if key == "k3"));
        let err = plan_steps(&chain, &present(&[("y", 1, false)])).unwrap_err();
        assert!(matches!(err, RestoreError::WritableLeftover { .. }));
    }

    #[test]
    fn archive_commands_name_bucket_and_key() {
        let c = restore_request_command("b", "p/k.ctim1");
        assert_eq!(
            c,
            "aws s3api restore-object --bucket b --key 'p/k.ctim1' --restore-request Days=7"
        );
    }
}
