//! Getting data back: the chain of objects for a point in time, downloaded,
//! decoded, verified and fed to `btrfs receive`, one read-only subvolume per step.
//!
//! ```text
//! listing ──chain::select/chain──> [full, monthly, daily]   (pure)
//!   per step:  Fetch (GET or parallel ranged GETs, bounded prefetch of the
//!              next) ──> stream::decode ──> first command checked (stream_head)
//!              ──> btrfs receive --chroot -e DIR (paths checked: path_guard)
//!   meanwhile: writeback (syncfs of DIR's filesystem every 300 ms)
//!   at the end: BTRFS_IOC_SYNC
//! ```
//!
//! Safety rules: DIR must exist on btrfs and is canonicalized once ([`Target`]);
//! the name a stream would create is read from its first command before
//! `btrfs receive` starts and must be a plain, unused name in DIR, and the
//! uuid, ctransid and parent uuid of that command must be the ones its key names
//! ([`stream_head::check_against_key`]); `btrfs receive` runs chrooted into DIR
//! and every path of the stream is checked before receive sees it
//! ([`path_guard`]), so nothing is written outside DIR; the last step
//! is refused when DIR already holds a subvolume received from the same uuid,
//! while earlier steps already in DIR (same received uuid, read-only) are reused
//! instead of received again; any failure kills the receive before its input
//! ends and deletes the half-received subvolume.

pub mod fetch;
pub mod path_guard;
pub mod pitr;
pub mod postgres;
mod receive;
pub mod select;
pub mod stream_head;
pub mod target;
pub mod writeback;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

pub use crate::core::chain::{ChainError, Selector};
pub use fetch::Fetch;
pub use receive::{
    download_cause, object_reader, receive_chain, remove_unfinished, ReceiveOptions, Received,
};
pub use select::{choose, Chosen};
pub use target::{Present, Target};

use crate::core::model::Backup;
use crate::progress::Progress;
use crate::remote::{ObjectStore, RemoteError};
use crate::stream::StreamError;

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
    /// The stream's first command cannot be used, or is not what the key says.
    #[error("{0}")]
    Head(#[from] stream_head::HeadError),
    /// A path in the stream would lead out of the received subvolume.
    #[error("{0}")]
    UnsafePath(#[from] path_guard::PathError),
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
                key: steps[i].backup.key().to_string(),
            });
        }
        if !p.readonly {
            return Err(RestoreError::WritableLeftover {
                path: p.path.clone(),
                key: steps[i].backup.key().to_string(),
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

/// What to say when a restore continues an earlier one (a rerun after a kill):
/// the steps already in DIR and the first one still to receive.
pub fn continuing(steps: &[Step]) -> Option<String> {
    let reused = steps
        .iter()
        .position(|s| matches!(s.action, StepAction::Reuse(_)))?;
    let StepAction::Reuse(path) = &steps[reused].action else {
        unreachable!("found above")
    };
    let done = match reused {
        0 => "step 1".to_string(),
        n => format!("steps 1-{}", n + 1),
    };
    let verb = if reused == 0 { "is" } else { "are" };
    Some(format!(
        "continuing: {done} of {} {verb} in DIR already (up to {}), not downloaded again; \
         receiving from step {}",
        steps.len(),
        path.display(),
        reused + 2
    ))
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
            .head(&s.backup.key())
            .await
            .map_err(|e| RestoreError::Object {
                key: s.backup.key().to_string(),
                cause: Box::new(e.into()),
                cleanup: String::new(),
            })?;
        if info.needs_restore() {
            commands.push(restore_request_command(bucket, &s.backup.key()));
        }
    }
    if commands.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::Archived { commands })
    }
}

/// What a finished restore left in DIR.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Each received step, root first (steps reused from DIR are not listed).
    pub received: Vec<Received>,
    /// The writable, prepared copy of a PostgreSQL data directory.
    pub postgres: Option<postgres::PreparedCopy>,
}

impl Restored {
    /// The restored subvolume (the leaf's).
    pub fn path(&self) -> &std::path::Path {
        &self
            .received
            .last()
            .expect("the leaf is always received")
            .path
    }
}

/// Receives the chosen chain into `target`: every object is asked for first
/// (missing or archived ones fail before anything is downloaded), then the
/// steps are received in order. Ctrl-C stops the receive and deletes what it
/// left half done. A PostgreSQL data directory also gets a writable copy
/// prepared to start.
pub async fn restore(
    chosen: Chosen,
    target: &Target,
    prefetch: usize,
    progress: &dyn Progress,
) -> anyhow::Result<Restored> {
    let bucket = crate::ops::remotes::bucket_of(&chosen.remote);
    check_objects(&chosen.store, bucket, &chosen.steps).await?;
    let opts = ReceiveOptions {
        prefetch,
        progress,
        restore_pipe_through: &chosen.restore_pipe_through,
        decoding: &chosen.decoding,
    };
    if let Some(note) = continuing(&chosen.steps) {
        progress.note(&note);
    }
    let before = target.subvolumes()?;
    let received = tokio::select! {
        r = receive_chain(Arc::new(chosen.store), target, &chosen.steps, &opts) => r?,
        _ = tokio::signal::ctrl_c() => {
            // The pipeline future is dropped here, which kills btrfs receive;
            // what it left half-done (writable, or never marked received) goes.
            let removed = remove_unfinished(target, &before);
            // And the marks of what was being received (nothing is left to
            // clear on the next run).
            let _ = target.clear_interrupted();
            anyhow::bail!("interrupted{removed}");
        }
    };
    let mut restored = Restored {
        received,
        postgres: None,
    };
    if chosen.postgres {
        restored.postgres = Some(postgres::prepare_copy(restored.path())?);
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn b(n: u128, parent: Option<u128>) -> Backup {
        Backup {
            key_form: format!("k{n}").into(),
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
    fn a_continued_restore_says_where_it_goes_on() {
        let chain = [b(1, None), b(2, Some(1)), b(3, Some(2))];
        let got = plan_steps(&chain, &present(&[("m", 2, true)])).unwrap();
        assert_eq!(
            continuing(&got).unwrap(),
            "continuing: steps 1-2 of 3 are in DIR already (up to /r/m), not downloaded \
             again; receiving from step 3"
        );
        assert!(continuing(&plan_steps(&chain, &BTreeMap::new()).unwrap()).is_none());
        let got = plan_steps(&chain, &present(&[("y", 1, true)])).unwrap();
        assert!(continuing(&got)
            .unwrap()
            .starts_with("continuing: step 1 of 3 is in DIR already"));
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
