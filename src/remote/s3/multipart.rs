//! Uploads: one PutObject for a body up to `single_put_max`, else a multipart
//! upload with parts in flight, retried per part, aborted on any failure
//! unless it is resumable (then kept open and continued by the next upload of
//! the same key, see `remote::resume`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_sdk_s3::primitives::{ByteStream, DateTime as SdkDateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode, StorageClass,
};
use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::client::classify;
use super::S3Store;
use crate::remote::parts::{single_put_head, size_for_part, MAX_PARTS};
use crate::remote::resume::{self, PartAction, Resume};
use crate::remote::retry::with_retries;
use crate::remote::{ObjectStore, RemoteError, RemoteErrorKind, UploadOptions, UploadStats};

/// Sends a PutObject or UploadPart request, with `UNSIGNED-PAYLOAD` when
/// `$unsigned`. A macro because the SDK offers the switch per operation type, not
/// on a trait a function could name.
macro_rules! send_upload {
    ($req:expr, $unsigned:expr) => {{
        let op = $req.customize();
        if $unsigned {
            op.disable_payload_signing().send().await
        } else {
            op.send().await
        }
    }};
}

/// Fills a buffer of up to `size` bytes from `body`; shorter only at the end.
async fn read_part(body: &mut (impl AsyncRead + Unpin), size: u64) -> io::Result<Bytes> {
    let size = size as usize;
    let mut buf = Vec::with_capacity(size);
    while buf.len() < size {
        // `read_buf` writes into the spare capacity, so the buffer never grows
        // past `size` and is handed to the SDK without a copy.
        if body.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(Bytes::from(buf))
}

/// The settings an object gets when it is created (PutObject or
/// CreateMultipartUpload), in the SDK's types.
struct CreateParams {
    class: Option<StorageClass>,
    lock_mode: Option<ObjectLockMode>,
    retain_until: Option<SdkDateTime>,
    checksum: Option<ChecksumAlgorithm>,
}

impl CreateParams {
    fn of(opts: &UploadOptions) -> Self {
        let lock = opts.object_lock.as_ref();
        CreateParams {
            class: opts.storage_class.as_deref().map(StorageClass::from),
            lock_mode: lock.map(|(mode, _)| ObjectLockMode::from(mode.as_str())),
            retain_until: lock.map(|(_, until)| SdkDateTime::from_secs(until.timestamp())),
            // S3 demands a checksum on writes with a retention period.
            checksum: lock.map(|_| ChecksumAlgorithm::Crc32),
        }
    }
}

/// Aborts the multipart upload if dropped while armed: covers the upload future
/// being dropped (cancelled) midway, when no code of ours runs any more.
struct AbortOnDrop {
    store: Option<S3Store>,
    key: String,
    upload_id: String,
}

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.store = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (key, id) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                crate::remote::pending::track(rt.spawn(async move {
                    if let Err(e) = store.abort_multipart(&key, &id).await {
                        tracing::error!("could not abort the cancelled upload: {e}");
                    }
                }));
            }
            Err(_) => tracing::error!(
                "{}: upload of {key} cancelled outside a runtime; multipart upload {id} left \
                 open (abort it with `aws s3api abort-multipart-upload`)",
                store.describe
            ),
        }
    }
}

impl S3Store {
    /// Whether an upload goes out as `UNSIGNED-PAYLOAD` (see [`super::client::sign_payload`]).
    /// A checksummed upload keeps the signature: unsigned, the SDK would switch
    /// to an aws-chunked body with a trailer, which not every store accepts.
    fn unsigned_upload(&self, checksummed: bool) -> bool {
        !self.sign_payload && !checksummed
    }

    /// How many parts of `size` bytes may be in flight within the budget.
    fn parts_in_flight(&self, size: u64) -> usize {
        let fit = (self.buffer_budget / size.max(1)).saturating_sub(1) as usize;
        fit.clamp(1, self.in_flight)
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        opts: &UploadOptions,
    ) -> Result<(), RemoteError> {
        let what = format!("{}: PutObject {key}", self.describe);
        with_retries(&self.retry, &what, || {
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()));
            let p = CreateParams::of(opts);
            let unsigned = self.unsigned_upload(p.checksum.is_some());
            let req = req
                .set_storage_class(p.class)
                .set_object_lock_mode(p.lock_mode)
                .set_object_lock_retain_until_date(p.retain_until)
                .set_checksum_algorithm(p.checksum);
            async move { send_upload!(req, unsigned).map(|_| ()).map_err(classify) }
        })
        .await
        .map_err(|f| self.err("PutObject", Some(key), f))
    }

    async fn create_multipart(
        &self,
        key: &str,
        opts: &UploadOptions,
    ) -> Result<String, RemoteError> {
        let what = format!("{}: CreateMultipartUpload {key}", self.describe);
        let out = with_retries(&self.retry, &what, || {
            let p = CreateParams::of(opts);
            let req = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .set_storage_class(p.class)
                .set_object_lock_mode(p.lock_mode)
                .set_object_lock_retain_until_date(p.retain_until)
                .set_checksum_algorithm(p.checksum);
            async move { req.send().await.map_err(classify) }
        })
        .await
        .map_err(|f| self.err("CreateMultipartUpload", Some(key), f))?;
        out.upload_id.ok_or_else(|| {
            self.fatal(
                "CreateMultipartUpload",
                Some(key),
                RemoteErrorKind::Transport("the store returned no upload id".into()),
            )
        })
    }

    /// Uploads one part (with retries); returns its entry for the completion.
    async fn upload_part(
        self,
        key: String,
        upload_id: String,
        number: i32,
        data: Bytes,
        checksum: bool,
    ) -> Result<(CompletedPart, u64), RemoteError> {
        let what = format!("{}: UploadPart {number} of {key}", self.describe);
        let len = data.len() as u64;
        let out = with_retries(&self.retry, &what, || {
            let mut req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(ByteStream::from(data.clone()));
            if checksum {
                req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
            }
            let unsigned = self.unsigned_upload(checksum);
            async move { send_upload!(req, unsigned).map_err(classify) }
        })
        .await
        .map_err(|f| self.err(format!("UploadPart {number}"), Some(&key), f))?;
        let part = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag)
            .set_checksum_crc32(if checksum { out.checksum_crc32 } else { None })
            .build();
        Ok((part, len))
    }

    /// Streams `body` into the open multipart upload, starting with the two
    /// parts already read; with `resume`, the parts the store already holds
    /// with the same bytes are kept instead of sent. Returns the completed
    /// parts, sorted, and the bytes they hold.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Vec<Bytes>,
        mut body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
        mut resume: Option<&mut Resume>,
    ) -> Result<(Vec<CompletedPart>, u64), RemoteError> {
        let checksum = opts.object_lock.is_some();
        let mut tasks: JoinSet<Result<(CompletedPart, u64), RemoteError>> = JoinSet::new();
        let mut done = Vec::new();
        let mut kept = Vec::new();
        // Bytes stored so far, kept parts included, for the progress callback.
        let uploaded = AtomicU64::new(0);
        let mut record = |r: Result<
            Result<(CompletedPart, u64), RemoteError>,
            tokio::task::JoinError,
        >|
         -> Result<(), RemoteError> {
            let (part, len) = r.map_err(|e| {
                self.fatal(
                    "UploadPart",
                    Some(key),
                    RemoteErrorKind::Transport(format!("part task failed: {e}")),
                )
            })??;
            done.push(part);
            uploaded.fetch_add(len, Ordering::Relaxed);
            if let Some(p) = &opts.progress {
                p(uploaded.load(Ordering::Relaxed));
            }
            Ok(())
        };
        // Whether the upload stays open on failure (a fresh one included, not
        // only one being resumed): then the parts in flight are worth finishing.
        let resumable = opts.resume;
        let mut ready = first.into_iter();
        let mut number: u32 = 1;
        let outcome: Result<(), RemoteError> = async {
            loop {
                let size = size_for_part(number);
                let data = match ready.next() {
                    Some(d) => d,
                    None => read_part(&mut body, size)
                        .await
                        .map_err(|e| self.fatal("upload", Some(key), RemoteErrorKind::Body(e)))?,
                };
                if data.is_empty() {
                    break;
                }
                if number > MAX_PARTS {
                    return Err(self.fatal(
                        "upload",
                        Some(key),
                        RemoteErrorKind::Config(format!(
                            "the stream is larger than {MAX_PARTS} parts hold (over 5 TiB)"
                        )),
                    ));
                }
                if let Some(r) = resume.as_deref_mut() {
                    if let Some(part) = keep_stored(r, number, &data, checksum).await {
                        kept.push(part);
                        uploaded.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(p) = &opts.progress {
                            p(uploaded.load(Ordering::Relaxed));
                        }
                        number += 1;
                        continue;
                    }
                }
                // Collect finished parts early so a failed part stops the upload
                // without waiting for the whole body.
                while let Some(r) = tasks.try_join_next() {
                    record(r)?;
                }
                while tasks.len() >= self.parts_in_flight(size) {
                    if let Some(r) = tasks.join_next().await {
                        record(r)?;
                    }
                }
                tasks.spawn(self.clone().upload_part(
                    key.to_string(),
                    upload_id.to_string(),
                    number as i32,
                    data,
                    checksum,
                ));
                number += 1;
            }
            while let Some(r) = tasks.join_next().await {
                record(r)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            if resumable {
                // The parts already on their way are worth finishing: the
                // next run keeps what the store holds.
                while tasks.join_next().await.is_some() {}
            }
            return Err(e);
        }
        done.extend(kept);
        done.sort_by_key(|p| p.part_number);
        Ok((done, uploaded.into_inner()))
    }

    /// Finds the open upload of `key` an interrupted run left, aborts any
    /// older duplicates, and lists its parts. Anything that fails here only
    /// costs the resume: the upload starts afresh (and the open upload is
    /// left to the stale-upload rule).
    async fn find_resumable(&self, key: &str) -> Option<(String, Resume)> {
        let uploads = match self.list_uploads().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("cannot look for an interrupted upload to resume: {e}");
                return None;
            }
        };
        let mut candidates = Vec::new();
        for u in uploads.into_iter().filter(|u| u.key == key) {
            match self.list_parts(key, &u.upload_id).await {
                Ok(parts) => candidates.push((u, parts)),
                Err(e) => tracing::warn!("cannot list the parts of an interrupted upload: {e}"),
            }
        }
        let (keep, extra) = resume::choose(candidates);
        for (u, _) in extra {
            if let Err(e) = self.abort_multipart(&u.key, &u.upload_id).await {
                tracing::warn!("{e}");
            }
        }
        keep.map(|(u, parts)| (u.upload_id, Resume::new(parts)))
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), RemoteError> {
        let what = format!("{}: CompleteMultipartUpload {key}", self.describe);
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        with_retries(&self.retry, &what, || {
            let req = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(parts.clone());
            async move { req.send().await.map(|_| ()).map_err(classify) }
        })
        .await
        .map_err(|f| self.err("CompleteMultipartUpload", Some(key), f))
    }

    pub(super) async fn upload_impl(
        &self,
        key: &str,
        mut body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> Result<UploadStats, RemoteError> {
        let start = Instant::now();
        let body_err = |e| self.fatal("upload", Some(key), RemoteErrorKind::Body(e));
        let stats = |bytes, parts| UploadStats {
            bytes,
            parts,
            seconds: start.elapsed().as_secs_f64(),
            resumed_bytes: 0,
        };
        // One buffer of whole parts: a stream that ends within it is one
        // PutObject; otherwise it is cut into those parts (no copy).
        let (head_parts, head_bytes) = single_put_head(self.single_put_max);
        let head = read_part(&mut body, head_bytes).await.map_err(body_err)?;
        let next = if (head.len() as u64) < head_bytes {
            Bytes::new()
        } else {
            read_part(&mut body, size_for_part(head_parts + 1))
                .await
                .map_err(body_err)?
        };
        if next.is_empty() {
            let len = head.len() as u64;
            self.put_single(key, head, opts).await?;
            if let Some(p) = &opts.progress {
                p(len);
            }
            return Ok(stats(len, 0));
        }
        let mut first = Vec::with_capacity(head_parts as usize + 1);
        let mut at = 0usize;
        for n in 1..=head_parts {
            let end = at + size_for_part(n) as usize;
            first.push(head.slice(at..end));
            at = end;
        }
        first.push(next);

        let mut resume = match opts.resume {
            true => self.find_resumable(key).await,
            false => None,
        };
        let upload_id = match &resume {
            Some((id, r)) => {
                tracing::info!(
                    "{}: resuming the interrupted upload of {key} ({} part(s) stored, \
                     each checked against the regenerated stream)",
                    self.describe,
                    r.stored_parts()
                );
                id.clone()
            }
            None => self.create_multipart(key, opts).await?,
        };
        // A resumable upload stays open when cancelled (a signal): the next
        // run continues it. The stale-upload rule aborts it once no run wants
        // this key any more.
        let mut guard = AbortOnDrop {
            store: (!opts.resume).then(|| self.clone()),
            key: key.to_string(),
            upload_id: upload_id.clone(),
        };
        let result = match self
            .upload_parts(
                key,
                &upload_id,
                first,
                body,
                opts,
                resume.as_mut().map(|(_, r)| r),
            )
            .await
        {
            Ok((parts, bytes)) => {
                let n = parts.len() as u32;
                self.complete(key, &upload_id, parts)
                    .await
                    .map(|_| (bytes, n))
            }
            Err(e) => Err(e),
        };
        guard.disarm();
        let kept = resume.as_ref().map_or(0, |(_, r)| r.kept_bytes);
        if let Some((_, r)) = &resume {
            if let Some(n) = r.first_mismatch {
                tracing::warn!(
                    "{}: part {n} of the interrupted upload of {key} differs from the \
                     regenerated stream; it and every later part were sent again",
                    self.describe
                );
            }
        }
        match result {
            Ok((bytes, n)) => Ok(UploadStats {
                resumed_bytes: kept,
                ..stats(bytes, n)
            }),
            // Resuming cannot help an upload that can never succeed (a stream
            // too large for 10,000 parts).
            Err(e) if opts.resume && !matches!(*e.kind, RemoteErrorKind::Config(_)) => {
                tracing::warn!(
                    "{}: the multipart upload of {key} stays open ({upload_id}) so the next \
                     run resumes it",
                    self.describe
                );
                Err(e)
            }
            Err(e) => {
                if let Err(abort) = self.abort_multipart(key, &upload_id).await {
                    tracing::error!("after a failed upload: {abort}");
                }
                Err(e)
            }
        }
    }
}

/// Keeps part `number` when the resumed upload holds exactly `data` under
/// it; returns its completion entry. The MD5 is computed off the runtime's
/// threads (a 4 GiB part takes seconds).
async fn keep_stored(
    r: &mut Resume,
    number: u32,
    data: &Bytes,
    checksum: bool,
) -> Option<CompletedPart> {
    let len = data.len() as u64;
    let md5 = if r.candidate(number, len) {
        let d = data.clone();
        tokio::task::spawn_blocking(move || <[u8; 16]>::from(Md5::digest(&d)))
            .await
            .ok()
    } else {
        None
    };
    match r.decide(number, len, md5) {
        PartAction::Send => None,
        PartAction::Keep(p) => Some(
            CompletedPart::builder()
                .part_number(number as i32)
                .e_tag(p.etag)
                .set_checksum_crc32(if checksum { p.checksum_crc32 } else { None })
                .build(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::s3::S3Settings;

    #[tokio::test]
    async fn in_flight_shrinks_as_parts_grow() {
        let mut s = S3Settings::new("b", "");
        s.endpoint_url = Some("http://127.0.0.1:1".into());
        s.access_key_id = Some("a".into());
        s.secret_access_key = Some("b".into());
        let store = S3Store::new(s).await.unwrap();
        assert_eq!(store.parts_in_flight(8 << 20), 4);
        assert_eq!(store.parts_in_flight(64 << 20), 1);
        assert_eq!(store.parts_in_flight(4 << 30), 1);
    }

    #[tokio::test]
    async fn read_part_fills_exactly_and_stops_at_eof() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut r = &data[..];
        assert_eq!(read_part(&mut r, 40).await.unwrap().len(), 40);
        assert_eq!(read_part(&mut r, 40).await.unwrap().len(), 40);
        assert_eq!(read_part(&mut r, 40).await.unwrap()[..], data[80..]);
        assert!(read_part(&mut r, 40).await.unwrap().is_empty());
    }
}
