//! Readers for unit tests that need a body failing partway (fault injection).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Yields `data` in reads of at most 4 KiB; with `fail_at`, fails with
/// `kind` once that many bytes were read instead of reaching EOF.
pub struct FailingReader {
    data: Vec<u8>,
    pos: usize,
    fail_at: Option<usize>,
    kind: io::ErrorKind,
}

impl FailingReader {
    /// `data`, then an error of `kind` after `fail_at` bytes (EOF when `None`).
    pub fn new(data: Vec<u8>, fail_at: Option<usize>, kind: io::ErrorKind) -> Self {
        FailingReader {
            data,
            pos: 0,
            fail_at,
            kind,
        }
    }
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.fail_at == Some(self.pos) {
            return Poll::Ready(Err(self.kind.into()));
        }
        let end = self.fail_at.unwrap_or(usize::MAX).min(self.data.len());
        let n = (end - self.pos).min(buf.remaining()).min(4096);
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}
