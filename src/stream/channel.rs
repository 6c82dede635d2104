//! The glue between pipeline stages: bounded channels of chunks, a task that reads
//! an `AsyncRead` into them, and an `AsyncRead` over the last one that turns an
//! early close into the error the failing stage recorded.

use std::io;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use super::codec::CHUNK;
use super::error::{ErrorSlot, StreamError};

/// Chunks in flight between two stages. With [`CHUNK`] = 1 MiB, each channel holds
/// at most this many MiB.
pub(crate) const QUEUE: usize = 4;

/// What flows between stages: data, then exactly one `End` with the stage's result.
/// A channel that closes without `End` means a stage failed (see [`ErrorSlot`]).
#[derive(Debug)]
pub(crate) enum Msg<S> {
    Data(Bytes),
    End(S),
}

/// Reads `src` in [`CHUNK`]-sized pieces and sends each to every sender, then `End`.
/// Returns false (after recording the error) when reading failed, or when a
/// receiver is gone (a later stage stopped).
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    mut src: R,
    outs: &[mpsc::Sender<Msg<()>>],
    slot: &ErrorSlot,
    on_error: fn(io::Error) -> StreamError,
) -> bool {
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut eof = false;
        while buf.len() < CHUNK {
            match src.read_buf(&mut buf).await {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    slot.set(on_error(e));
                    return false;
                }
            }
        }
        if !buf.is_empty() {
            let chunk = buf.freeze();
            for out in outs {
                if out.send(Msg::Data(chunk.clone())).await.is_err() {
                    return false;
                }
            }
        }
        if eof {
            return true;
        }
    }
}

/// Sends `End` to every sender.
pub(crate) async fn send_end(outs: &[mpsc::Sender<Msg<()>>]) {
    for out in outs {
        let _ = out.send(Msg::End(())).await;
    }
}

enum ReadState<S> {
    Reading,
    Done(S),
    Failed(StreamError),
}

/// An `AsyncRead` over the last channel of a pipeline. It reports EOF only after
/// the `End` message, i.e. after every check passed; otherwise the read fails, so a
/// copy into `btrfs receive` or an upload never completes on a bad stream.
pub(crate) struct ChannelReader<S> {
    rx: mpsc::Receiver<Msg<S>>,
    chunk: Bytes,
    slot: Arc<ErrorSlot>,
    what: &'static str,
    state: ReadState<S>,
    delivered: u64,
}

impl<S> ChannelReader<S> {
    pub(crate) fn new(
        rx: mpsc::Receiver<Msg<S>>,
        slot: Arc<ErrorSlot>,
        what: &'static str,
    ) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
            slot,
            what,
            state: ReadState::Reading,
            delivered: 0,
        }
    }

    /// Bytes handed to the reader so far.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// True once EOF or an error has been returned.
    pub(crate) fn ended(&self) -> bool {
        !matches!(self.state, ReadState::Reading)
    }

    /// Makes `chunk` hold unread bytes: `Ok(true)` when it does, `Ok(false)` at
    /// the verified end, the recorded error when the pipeline failed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            match &self.state {
                ReadState::Done(_) => return Poll::Ready(Ok(false)),
                ReadState::Failed(e) => return Poll::Ready(Err(e.clone().into())),
                ReadState::Reading => {}
            }
            if !self.chunk.is_empty() {
                return Poll::Ready(Ok(true));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Msg::Data(b)) => self.chunk = b,
                Some(Msg::End(s)) => self.state = ReadState::Done(s),
                None => self.state = ReadState::Failed(self.slot.get_or(self.what)),
            }
        }
    }

    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if ready!(self.poll_fill(cx))? {
            let n = self.chunk.len().min(buf.remaining());
            buf.put_slice(&self.chunk[..n]);
            self.chunk.advance(n);
            self.delivered += n as u64;
        }
        Poll::Ready(Ok(()))
    }

    /// The next piece of the stream as it came down the channel (no copy);
    /// `None` at the verified end. Fails like [`Self::poll_read`].
    pub(crate) async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !std::future::poll_fn(|cx| self.poll_fill(cx)).await? {
            return Ok(None);
        }
        let b = std::mem::take(&mut self.chunk);
        self.delivered += b.len() as u64;
        Ok(Some(b))
    }

    /// The pipeline's result: its summary after EOF, its error after a failed read.
    pub(crate) fn outcome(self) -> Result<S, StreamError> {
        match self.state {
            ReadState::Done(s) => Ok(s),
            ReadState::Failed(e) => Err(e),
            ReadState::Reading => Err(StreamError::NotFinished),
        }
    }
}

/// Holds back the last `keep` bytes of a stream, releasing everything before them.
pub(crate) struct TailHold {
    keep: usize,
    tail: Vec<u8>,
}

impl TailHold {
    pub(crate) fn new(keep: usize) -> Self {
        TailHold {
            keep,
            tail: Vec::with_capacity(keep),
        }
    }

    /// Adds `b`; returns the (at most two) pieces now known not to be in the tail.
    pub(crate) fn push(&mut self, b: Bytes) -> [Bytes; 2] {
        if self.keep == 0 {
            return [b, Bytes::new()];
        }
        let total = self.tail.len() + b.len();
        if total <= self.keep {
            self.tail.extend_from_slice(&b);
            return [Bytes::new(), Bytes::new()];
        }
        let release = total - self.keep;
        if release <= self.tail.len() {
            let first = Bytes::copy_from_slice(&self.tail[..release]);
            self.tail.drain(..release);
            self.tail.extend_from_slice(&b);
            [first, Bytes::new()]
        } else {
            let first = Bytes::from(std::mem::take(&mut self.tail));
            let from_b = release - first.len();
            self.tail = b[from_b..].to_vec();
            [first, b.slice(..from_b)]
        }
    }

    /// The held-back bytes (fewer than `keep` when the stream was shorter).
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_hold_releases_all_but_the_tail_in_order() {
        for keep in [0, 1, 5, 64] {
            for piece in [1, 3, 64, 100] {
                let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
                let mut h = TailHold::new(keep);
                let mut out = Vec::new();
                for p in data.chunks(piece) {
                    for r in h.push(Bytes::copy_from_slice(p)) {
                        out.extend_from_slice(&r);
                    }
                }
                let tail = h.take();
                assert_eq!(tail.len(), keep);
                out.extend_from_slice(&tail);
                assert_eq!(out, data, "keep {keep} piece {piece}");
            }
        }
    }
}
