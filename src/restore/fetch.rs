//! Downloading an object ahead of its use, into a bounded buffer.
//!
//! A [`Fetch`] starts the GET at once and keeps reading into a channel of at
//! most `window` bytes (in chunks of up to [`CHUNK`]), so while one object is
//! being received the next one's first `window` bytes are already here and its
//! connection is warm. Memory per fetch is bounded by `window + CHUNK`; nothing
//! goes to disk. If the body breaks off (a reset connection, an idle timeout
//! while the buffer was full), the rest is fetched with a ranged GET from the
//! last byte received, up to [`RESUMES`] times.

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
}

/// An object being downloaded; read it as an `AsyncRead`.
pub struct Fetch {
    rx: mpsc::Receiver<Result<Bytes, FetchError>>,
    cur: Bytes,
    task: JoinHandle<()>,
    done: bool,
}

impl Fetch {
    /// Starts downloading `key` (of `size` bytes) from `store`, buffering at most
    /// about `window` bytes ahead of the reader.
    pub fn start<S: ObjectStore + 'static>(
        store: Arc<S>,
        key: String,
        size: u64,
        window: usize,
    ) -> Fetch {
        let (tx, rx) = mpsc::channel((window / CHUNK).max(1));
        let task = tokio::spawn(async move {
            if let Err(e) = download(&*store, &key, size, &tx).await {
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

async fn download<S: ObjectStore>(
    store: &S,
    key: &str,
    size: u64,
    tx: &mpsc::Sender<Result<Bytes, FetchError>>,
) -> Result<(), FetchError> {
    let mut got = 0u64;
    let mut resumes = 0;
    loop {
        let range = (got > 0).then_some(got..size);
        let mut body = store.get(key, range).await?;
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
            if !buf.is_empty() && tx.send(Ok(buf.freeze())).await.is_err() {
                return Ok(()); // the reader is gone
            }
            if let Some(e) = err {
                break e;
            }
            if eof {
                if got < size {
                    break io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended early");
                }
                return Ok(());
            }
        };
        if resumes >= RESUMES || got >= size {
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
            let start = range.map_or(0, |r| r.start as usize);
            let cut_at = (asked.len() <= self.breaks).then_some(self.cut);
            Ok(Box::new(crate::test_io::FailingReader::new(
                self.data[start..].to_vec(),
                cut_at,
                io::ErrorKind::ConnectionReset,
            )))
        }
        async fn head(&self, _: &str) -> Result<crate::remote::ObjectInfo, RemoteError> {
            unimplemented!()
        }
        async fn delete(&self, _: &[String]) -> Result<crate::remote::DeleteReport, RemoteError> {
            unimplemented!()
        }
        async fn list_multipart_uploads(&self) -> Result<Vec<(String, String)>, RemoteError> {
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
            asked: Default::default(),
        })
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
