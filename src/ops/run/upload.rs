//! One upload: send the snapshot, encode the stream (compress, checksum
//! trailer) and stream it into the remote under its key.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, ReadBuf};
use uuid::Uuid;

use crate::config::{Config, Source};
use crate::core::planner::Upload;
use crate::ops::keys::KeyNaming;
use crate::ops::remotes::OpenRemote;
use crate::ops::subvols::{SendSource, Subvolumes};
use crate::progress::Progress;
use crate::remote::rate::Throttled;
use crate::remote::{ObjectStore, UploadOptions};
use crate::stream::{self, EncodeOptions, SourceCheck};
use crate::units::human_bytes;

/// An object this run stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    /// The remote's id.
    pub remote: String,
    /// The object's key.
    pub key: String,
    /// Bytes stored (after compression).
    pub stored_bytes: u64,
    /// Bytes of raw send stream.
    pub raw_bytes: u64,
    /// Wall time of the upload (send, encode, upload, read back), seconds.
    pub seconds: f64,
    /// The storage class it was stored with (`STANDARD` for the store's default).
    pub storage_class: String,
    /// True for a full backup, false for one sent relative to a parent.
    pub full: bool,
    /// Bytes of `stored_bytes` an interrupted upload had already stored
    /// (verified and kept, not sent again).
    pub resumed_bytes: u64,
}

/// The key `u` is stored under on `remote`.
pub(super) fn key_for(
    config: &Config,
    source: &Source,
    remote: &OpenRemote,
    u: &Upload,
    source_uuid: Uuid,
) -> String {
    let up = source
        .upload_to_remotes
        .iter()
        .find(|up| up.id == remote.config.id)
        .expect("plan remotes come from the source's uploads");
    let pg = crate::postgres::sidecar::read(&u.snapshot_path);
    KeyNaming::new(config, source, up, remote.store.prefix(), source_uuid)
        .sealed(remote.keys.as_ref().map(|k| &k.auth))
        .key(u, pg.as_ref())
}

/// Sends one snapshot, encodes it and uploads it.
pub(super) async fn upload<S: Subvolumes>(
    config: &Config,
    source: &Source,
    remote: &OpenRemote,
    u: &Upload,
    source_uuid: Uuid,
    subvols: &S,
    progress: &dyn Progress,
) -> Result<Uploaded> {
    let up = source
        .upload_to_remotes
        .iter()
        .find(|up| up.id == remote.config.id)
        .expect("plan remotes come from the source's uploads");
    let key = key_for(config, source, remote, u, source_uuid);
    let what = match &u.send_parent_path {
        None => "full".to_string(),
        Some(p) => format!("relative to {}", p.display()),
    };
    let ctx = || {
        format!(
            "source {}: upload {} ({what}) to remote {}",
            source.name, key, remote.config.id
        )
    };

    let started = std::time::Instant::now();
    let parent = u.send_parent_path.as_deref().zip(u.send_parent_uuid);
    let send = subvols
        .send(&u.snapshot_path, u.uuid, parent)
        .await
        .with_context(ctx)?;
    // The key names the ctransid the run planned with, and `restore` refuses
    // a stream whose ctransid is not its key's: a snapshot deduped since the
    // run listed it (a dedupe changes a read-only snapshot's ctransid) is left
    // for the next run, which plans with its new ctransid.
    if let Some(now) = send.ctransid().filter(|c| *c != u.ctransid) {
        anyhow::bail!(
            "{}: snapshot {} changed since this run listed it (ctransid {} then, {now} now; \
             deduped meanwhile?): not uploaded, the next run uploads it",
            ctx(),
            u.snapshot_path.display(),
            u.ctransid
        );
    }
    let mut opts = EncodeOptions::new(up.compression.codec);
    opts.level = up.compression.level;
    opts.threads = up.compression.threads;
    opts.pipe_through = up.pipe_through.clone();
    let (send, check) = checked(send);
    opts.source_check = Some(check);
    opts.seal = remote.seal(&key);
    let sealed = opts.seal.is_some();
    let mut encoded = stream::encode(send, opts).with_context(ctx)?;

    let class = up.storage_class.r#for(u.timeframe);
    let upload_opts = UploadOptions {
        storage_class: (class != "STANDARD").then(|| class.clone()),
        object_lock: match (&up.object_lock, u.retain_until) {
            (Some(lock), Some(until)) => Some((lock.mode.as_str().to_string(), until)),
            _ => None,
        },
        progress: progress.upload_started(&key, &what),
        // subvault's own encoding is deterministic (the same send through the
        // same codec, level and job size gives the same bytes), so the next run
        // can continue an interrupted upload. A pipe_through command (gpg)
        // may not be, and an encrypted stream never is (a fresh random file
        // key per object): those uploads are aborted on failure as before and
        // start afresh.
        resume: up.pipe_through.is_empty() && !sealed,
    };
    tracing::info!(
        "source {}: uploading {key} ({what}) to remote {}",
        source.name,
        remote.config.id
    );
    // A rate limit throttles the body the store cuts its parts from, so it
    // covers every part in flight of every upload to this remote.
    let result = match &remote.rate {
        Some(limiter) => {
            let body = Throttled::new(&mut encoded, limiter.clone());
            remote.store.upload(&key, body, &upload_opts).await
        }
        None => remote.store.upload(&key, &mut encoded, &upload_opts).await,
    };
    progress.upload_finished(&key);
    let stats = result.with_context(ctx)?;
    let summary = encoded.finish().await.with_context(ctx)?;
    read_back(remote, &key, stats.bytes)
        .await
        .with_context(ctx)?;
    tracing::info!(
        "source {}: uploaded {key}: {} ({} raw) in {:.1} s",
        source.name,
        human_bytes(stats.bytes),
        human_bytes(summary.record.raw_len),
        stats.seconds
    );
    if stats.resumed_bytes > 0 {
        tracing::info!(
            "source {}: resumed {key}: {} were already stored by an interrupted run and \
             matched the regenerated stream; {} sent",
            source.name,
            human_bytes(stats.resumed_bytes),
            human_bytes(stats.bytes - stats.resumed_bytes)
        );
    }
    Ok(Uploaded {
        remote: remote.config.id.clone(),
        key,
        stored_bytes: stats.bytes,
        raw_bytes: summary.record.raw_len,
        seconds: started.elapsed().as_secs_f64(),
        storage_class: class,
        full: u.send_parent_path.is_none(),
        resumed_bytes: stats.resumed_bytes,
    })
}

/// Asks the store for the object just written: it must be there with the size
/// that was sent before anything relies on it (a prune of older siblings).
async fn read_back(remote: &OpenRemote, key: &str, sent: u64) -> Result<()> {
    let info = remote
        .store
        .head(key)
        .await
        .context("read the object back (HEAD)")?;
    if info.size != sent {
        anyhow::bail!(
            "read back: the store holds {} bytes under this key, but {sent} were sent",
            info.size
        );
    }
    Ok(())
}

/// Splits a send into the reader the encoder consumes and the check the encoder
/// awaits at the stream's end (which takes the send out to learn whether it
/// was complete).
fn checked(send: Box<dyn SendSource>) -> (SharedSend, SourceCheck) {
    let shared = Arc::new(Mutex::new(Some(send)));
    let handle = shared.clone();
    let check: SourceCheck = Box::pin(async move {
        let send = handle.lock().expect("send lock").take();
        match send {
            Some(s) => s.finish().await,
            None => Err("the send stream was already finished".to_string()),
        }
    });
    (SharedSend(shared), check)
}

/// A send stream shared between the encoder (which reads it) and the encoder's
/// end-of-stream check (which takes it out to learn whether the send succeeded).
struct SharedSend(Arc<Mutex<Option<Box<dyn SendSource>>>>);

impl AsyncRead for SharedSend {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut guard = self.0.lock().expect("send lock");
        match guard.as_mut() {
            Some(send) => Pin::new(send).poll_read(cx, buf),
            // Taken by the check: the stream is over.
            None => Poll::Ready(Ok(())),
        }
    }
}
