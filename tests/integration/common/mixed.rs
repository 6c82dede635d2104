//! A generated btrfs send stream of any length, for the memory test and the
//! throughput benchmark.

use subvault::stream::send_format::{synthetic, CMD_END};
use tokio::io::AsyncRead;

/// A fast generator of a send stream: alternating 64 KiB WRITE commands of
/// pseudo-random bytes and of text-like bytes (half each), `total` bytes long.
pub struct MixedStream {
    left: u64,
    state: u64,
    pending: Vec<u8>,
    pos: usize,
    n: u64,
    ended: bool,
}

impl MixedStream {
    /// A stream of `total` payload bytes (plus command headers).
    pub fn new(total: u64) -> Self {
        MixedStream {
            left: total,
            state: 0x9e37_79b9_7f4a_7c15,
            pending: synthetic::header(1),
            pos: 0,
            n: 0,
            ended: false,
        }
    }

    fn refill(&mut self) {
        self.pos = 0;
        if self.left == 0 {
            self.pending = if self.ended {
                Vec::new()
            } else {
                synthetic::command(CMD_END, &[])
            };
            self.ended = true;
            return;
        }
        let len = self.left.min(65_536) as usize;
        self.left -= len as u64;
        let mut payload = vec![0u8; len];
        if self.n % 2 == 0 {
            for chunk in payload.chunks_mut(8) {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                let b = self.state.to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
        } else {
            const WORDS: [&[u8]; 8] = [
                b"the ",
                b"btrfs ",
                b"snapshot ",
                b"of ",
                b"data ",
                b"log=",
                b"42\n",
                b"ok ",
            ];
            let mut i = 0;
            while i < len {
                self.state = self
                    .state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let w = WORDS[(self.state >> 61) as usize];
                let k = w.len().min(len - i);
                payload[i..i + k].copy_from_slice(&w[..k]);
                i += k;
            }
        }
        self.n += 1;
        self.pending = synthetic::command(15, &payload);
    }
}

impl AsyncRead for MixedStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.pending.len() {
            this.refill();
        }
        let n = (this.pending.len() - this.pos).min(buf.remaining());
        buf.put_slice(&this.pending[this.pos..this.pos + n]);
        this.pos += n;
        std::task::Poll::Ready(Ok(()))
    }
}
