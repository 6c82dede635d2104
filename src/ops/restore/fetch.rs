//! Downloading an object ahead of its use, into a bounded buffer.
//!
//! A [`Fetch`] starts the GET at once and keeps reading into a channel of at
//! most `window` bytes (in chunks of up to [`CHUNK`]), so while one object is
//! being received the next one's first `window` bytes are already here and its
//! connection is warm. Nothing goes to disk. If the body breaks off (a reset
//! connection, an idle timeout while the buffer was full), the rest is fetched
//! with a ranged GET from the last byte received, up to [`RESUMES`] times.
//!
//! Stores that serve one request at a time slower than we decode (S3 servers
//! hash every block they send) get [`ObjectStore::parallel_gets`] ranged GETs
//! of [`RANGE`] bytes in flight at once, each on its own task, delivered in
//! order. They count against the window: memory per fetch stays about
//! `window` (at least `parallel * RANGE` plus one chunk).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::remote::{ObjectStore, RemoteError};

/// Bytes per channel message.
pub const CHUNK: usize = 1 << 20;
/// Bytes per ranged GET when an object is fetched in parallel pieces: large
/// enough that a request's round trip is small next to its transfer, small
/// enough that a few in flight stay a few tens of MiB.
pub const RANGE: u64 = 8 << 20;
/// How often a broken-off body is resumed with a ranged GET.
pub const RESUMES: u32 = 3;

/// Why the download failed; carried inside the `io::Error` of a read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The store refused or failed the request.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The body broke off and could not be resumed.
    #[error("download broke off after {got} of {size} bytes: {cause}")]
    BrokenOff {
        /// Bytes received.
        got: u64,
        /// Object size.
        size: u64,
        /// The last read error.
        cause: io::Error,
    },
    /// A download task ended without a result (it panicked).
    #[error("download task failed: {0}")]
    Task(String),
}

/// An object being downloaded; read it as an `AsyncRead`.
pub struct Fetch {
    rx: mpsc::Receiver<Result<Bytes, FetchError>>,
    cur: Bytes,
    task: JoinHandle<()>,
    done: bool,
}

impl Fetch {
    /// Starts downloading `key` (of `size` bytes, `u64::MAX` when unknown) from
    /// `store`, buffering at most about `window` bytes ahead of the reader.
    pub fn start<S: ObjectStore + 'static>(
        store: Arc<S>,
        key: String,
        size: u64,
        window: usize,
    ) -> Fetch {
        let parallel = store.parallel_gets();
        let ranged = parallel > 1 && size != u64::MAX && size > 2 * RANGE;
        // The ranges in flight count against the window.
        let in_ranges = if ranged { parallel * RANGE as usize } else { 0 };
        let (tx, rx) = mpsc::channel((window.saturating_sub(in_ranges) / CHUNK).max(1));
        let task = tokio::spawn(async move {
            let result = if ranged {
                download_in_ranges(store, key, size, parallel, &tx).await
            } else {
                download(&*store, &key, 0..size, size, &mut |b| tx.send(Ok(b))).await
            };
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Fetch {
            rx,
            cur: Bytes::new(),
            task,
            done: false,
        }
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A spawned range download that is cancelled when dropped (when the fetch is
/// dropped, or failed on an earlier range).
struct RangeTask(JoinHandle<Result<Vec<Bytes>, FetchError>>);

impl Drop for RangeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches `size` bytes in [`RANGE`]-sized ranged GETs, `parallel` at a time
/// (each on its own task, so they progress while the reader is busy), and sends
/// their bytes in order.
async fn download_in_ranges<S: ObjectStore + 'static>(
    store: Arc<S>,
    key: String,
    size: u64,
    parallel: usize,
    tx: &mpsc::Sender<Result<Bytes, FetchError>>,
) -> Result<(), FetchError> {
    let key: Arc<str> = key.into();
    let mut starts = (0..size).step_by(RANGE as usize);
    let mut spawn_next = || {
        starts.next().map(|start| {
            let (store, key) = (store.clone(), key.clone());
            RangeTask(tokio::spawn(async move {
                let mut pieces = Vec::new();
                let range = start..(start + RANGE).min(size);
                download(&*store, &key, range, size, &mut |b| {
                    pieces.push(b);
                    std::future::ready(Ok::<(), ()>(()))
                })
                .await?;
                Ok(pieces)
            }))
        })
    };
    let mut in_flight: std::collections::VecDeque<RangeTask> =
        std::iter::from_fn(&mut spawn_next).take(parallel).collect();
    while let Some(mut task) = in_flight.pop_front() {
        let pieces = match (&mut task.0).await {
            Ok(r) => r?,
            Err(e) => return Err(FetchError::Task(e.to_string())),
        };
        in_flight.extend(spawn_next());
        for b in pieces {
            if tx.send(Ok(b)).await.is_err() {
                return Ok(()); // the reader is gone
            }
        }
    }
    Ok(())
}

/// Downloads the bytes `range` of `key`, an object of `size` bytes (`u64::MAX`
/// when unknown; then `range` is `0..u64::MAX`), handing them to `deliver` in
/// chunks of up to [`CHUNK`]; resumes a body that breaks off with a ranged GET
/// from the last byte received. Stops quietly when `deliver` fails (the reader
/// is gone).
async fn download<S, F, Fut, E>(
    store: &S,
    key: &str,
    range: std::ops::Range<u64>,
    size: u64,
    deliver: &mut F,
) -> Result<(), FetchError>
where
    S: ObjectStore + ?Sized,
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let whole = range == (0..size);
    let end = range.end;
    let mut got = range.start;
    let mut resumes = 0;
    loop {
        // A plain GET for a whole object (the only way when its size is
        // unknown), a ranged one for a piece or a resume.
        let ask = (!whole || got > 0).then_some(got..end);
        let mut body = store.get(key, ask).await?;
        let cause = loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let mut eof = false;
            let mut err = None;
            while buf.len() < CHUNK {
                match body.read_buf(&mut buf).await {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            got += buf.len() as u64;
            if !buf.is_empty() && deliver(buf.freeze()).await.is_err() {
                return Ok(()); // the reader is gone
            }
            if let Some(e) = err {
                break e;
            }
            if eof {
                // (An object of unknown size ends where its body ends.)
                if got < end && end != u64::MAX {
                    break io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended early");
                }
                return Ok(());
            }
        };
        if resumes >= RESUMES || got >= end {
            return Err(FetchError::BrokenOff { got, size, cause });
        }
        resumes += 1;
        tracing::warn!("{key}: download broke off after {got} of {size} bytes ({cause}); resuming");
        tokio::time::sleep(Duration::from_millis(500 * u64::from(resumes))).await;
    }
}

impl AsyncRead for Fetch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.cur.is_empty() && !this.done {
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Ok(b))) => this.cur = b,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Err(io::Error::other(e)));
                }
            }
        }
        let n = this.cur.len().min(buf.remaining());
        buf.put_slice(&this.cur[..n]);
        this.cur.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::LocalStore;
    use crate::remote::UploadOptions;

    /// A store whose first `breaks` GETs cut the body off after `cut` bytes
    /// with a connection reset; it records every range asked for.
    struct Flaky {
        data: Vec<u8>,
        cut: usize,
        breaks: usize,
        parallel: usize,
        asked: std::sync::Mutex<Vec<Option<std::ops::Range<u64>>>>,
    }

    impl ObjectStore for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn prefix(&self) -> &str {
            ""
        }
        async fn list(&self) -> Result<Vec<crate::remote::ObjectInfo>, RemoteError> {
            unimplemented!()
        }
        async fn upload(
            &self,
            _: &str,
            _: impl AsyncRead + Unpin + Send,
            _: &UploadOptions,
        ) -> Result<crate::remote::UploadStats, RemoteError> {
            unimplemented!()
        }
        async fn get(
            &self,
            _: &str,
            range: Option<std::ops::Range<u64>>,
        ) -> Result<crate::remote::Body, RemoteError> {
            let mut asked = self.asked.lock().unwrap();
            asked.push(range.clone());
            // Like S3, a range past the end is cut at the end.
            let len = self.data.len();
            let r = range.map_or(0..len, |r| r.start as usize..(r.end as usize).min(len));
            let cut_at = (asked.len() <= self.breaks).then_some(self.cut);
            Ok(Box::new(crate::test_io::FailingReader::new(
                self.data[r].to_vec(),
                cut_at,
                io::ErrorKind::ConnectionReset,
            )))
        }
        fn parallel_gets(&self) -> usize {
            self.parallel
        }
        async fn head(&self, _: &str) -> Result<crate::remote::ObjectInfo, RemoteError> {
            unimplemented!()
        }
        async fn delete(&self, _: &[String]) -> Result<crate::remote::DeleteReport, RemoteError> {
            unimplemented!()
        }
        async fn list_multipart_uploads(
            &self,
        ) -> Result<Vec<crate::remote::MultipartUpload>, RemoteError> {
            unimplemented!()
        }
        async fn abort_multipart(&self, _: &str, _: &str) -> Result<(), RemoteError> {
            unimplemented!()
        }
    }

    fn flaky(breaks: usize) -> Arc<Flaky> {
        Arc::new(Flaky {
            data: (0..5 * CHUNK + 777).map(|i| (i % 253) as u8).collect(),
            cut: CHUNK + 100,
            breaks,
            parallel: 1,
            asked: Default::default(),
        })
    }

    /// A store of `len` bytes serving `parallel` ranged GETs at once, whose
    /// first `breaks` GETs break off after `cut` bytes.
    fn ranged(len: usize, parallel: usize, breaks: usize, cut: usize) -> Arc<Flaky> {
        Arc::new(Flaky {
            data: (0..len).map(|i| (i % 251) as u8).collect(),
            cut,
            breaks,
            parallel,
            asked: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_large_object_comes_in_parallel_ranges_in_order() {
        let len = 3 * RANGE as usize + 12345;
        let store = ranged(len, 4, 0, 0);
        let mut f = Fetch::start(store.clone(), "k".into(), len as u64, CHUNK);
        let mut out = Vec::new();
        f.read_to_end(&mut out).await.unwrap();
        assert!(out == store.data, "pieces out of order or missing");
        let mut asked = store.asked.lock().unwrap().clone();
        asked.sort_by_key(|r| r.as_ref().map(|r| r.start));
        let n = len as u64;
        let r = RANGE;
        assert_eq!(
            asked,
            vec![
                Some(0..r),
                Some(r..2 * r),
                Some(2 * r..3 * r),
                Some(3 * r..n)
            ]
        );
    }

    #[tokio::test]
    async fn a_broken_range_is_resumed_within_the_range() {
        let len = 3 * RANGE as usize;
        // The first two GETs (two of the first ranges) break off after 1000 bytes.
        let store = ranged(len, 2, 2, 1000);
        let mut f = Fetch::start(store.clone(), "k".into(), len as u64, CHUNK);
        let mut out = Vec::new();
        f.read_to_end(&mut out).await.unwrap();
        assert!(out == store.data, "resumed ranges differ");
        let asked = store.asked.lock().unwrap().clone();
        let r = RANGE;
        assert!(asked.contains(&Some(1000..r)), "{asked:?}");
        assert!(asked.contains(&Some(r + 1000..2 * r)), "{asked:?}");
        assert_eq!(asked.len(), 5, "{asked:?}");
    }

    #[tokio::test]
    async fn a_small_or_unsized_object_is_one_get_even_when_ranges_are_allowed() {
        let store = ranged(2 * RANGE as usize, 4, 0, 0);
        let mut f = Fetch::start(store.clone(), "k".into(), 2 * RANGE, CHUNK);
        f.read_to_end(&mut Vec::new()).await.unwrap();
        let mut f = Fetch::start(store.clone(), "k".into(), u64::MAX, CHUNK);
        let mut out = Vec::new();
        f.read_to_end(&mut out).await.unwrap();
        assert!(out == store.data);
        assert_eq!(*store.asked.lock().unwrap(), vec![None, None]);
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_resumed_from_the_last_byte() {
        let store = flaky(2);
        let size = store.data.len() as u64;
        let mut f = Fetch::start(store.clone(), "k".into(), size, CHUNK);
        let mut out = Vec::new();
        f.read_to_end(&mut out).await.unwrap();
        assert!(out == store.data, "resumed download differs");
        let cut = (CHUNK + 100) as u64;
        assert_eq!(
            *store.asked.lock().unwrap(),
            vec![None, Some(cut..size), Some(2 * cut..size)]
        );
    }

    #[tokio::test]
    async fn a_body_that_keeps_breaking_fails_with_the_bytes_received() {
        let store = flaky(usize::MAX);
        let size = store.data.len() as u64;
        let mut f = Fetch::start(store.clone(), "k".into(), size, CHUNK);
        let err = f.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(
            err.to_string().contains("download broke off after")
                && err.to_string().contains(&format!("of {size} bytes")),
            "{err}"
        );
        assert_eq!(store.asked.lock().unwrap().len(), RESUMES as usize + 1);
    }

    #[tokio::test]
    async fn reads_the_whole_object_through_a_small_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()));
        let data: Vec<u8> = (0..3 * CHUNK + 12345).map(|i| (i % 251) as u8).collect();
        store
            .upload("k", &data[..], &UploadOptions::default())
            .await
            .unwrap();
        let mut f = Fetch::start(store.clone(), "k".into(), data.len() as u64, CHUNK);
        let mut out = Vec::new();
        f.read_to_end(&mut out).await.unwrap();
        assert!(out == data);

        let mut f = Fetch::start(store, "missing".into(), 10, CHUNK);
        let err = f.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
