//! Upload bandwidth limits (`rate_limit: 20MiB/s` on a remote).
//!
//! One [`RateLimiter`] per remote and run, shared by every upload to that
//! remote; each upload's body is wrapped in a [`Throttled`] reader. The store
//! cuts its parts (and the parts in flight) from that body, so the limit holds
//! for all parallel parts of all uploads to the remote together: bytes enter
//! the part buffers no faster than the limit, and leave them no faster than
//! they enter (the buffers are bounded). A short burst at the start (the first
//! parts fill their buffers at the limit, then go out at wire speed) evens out
//! over the upload; `bench/rate_limit.sh` measures the result.
//!
//! The limiter is a virtual clock (GCRA with a 50 ms burst tolerance, which
//! absorbs timer lateness): each read of `n` bytes
//! moves the remote's "free again at" time forward by `n / rate`, and the
//! reader that moved it waits until then before its next read. Readers of one
//! remote take turns on that one clock, however many there are.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The most bytes one read hands over before the reader waits its turn: small
/// enough that readers of one remote interleave finely (64 KiB is 3 ms at
/// 20 MiB/s).
const CHUNK: usize = 64 * 1024;

/// How far behind its clock a limiter may fall and still catch up: the most
/// burst an idle limiter allows (1 MiB at 20 MiB/s).
const SLACK: Duration = Duration::from_millis(50);

/// A shared byte budget per second.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: u64,
    free_at: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter allowing `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Arc<RateLimiter> {
        Arc::new(RateLimiter {
            bytes_per_second: bytes_per_second.max(1),
            free_at: Mutex::new(None),
        })
    }

    /// The configured rate.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// Accounts `n` bytes handed over now; returns when the caller may hand
    /// over more.
    fn take(&self, n: usize) -> Instant {
        let now = Instant::now();
        let mut free_at = self.free_at.lock().expect("rate limiter lock");
        // A reader wakes a little after its time (the timer ticks in
        // milliseconds, and a chunk lasts a few): that lateness is made up,
        // or the measured rate fell 6-7% short of the limit. Beyond SLACK
        // the limiter was idle, and a pause is not credit for a burst.
        let start = match *free_at {
            Some(t) if t + SLACK > now => t,
            _ => now,
        };
        let next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_second as f64);
        *free_at = Some(next);
        next
    }
}

/// A reader that hands over bytes no faster than its limiter allows.
pub struct Throttled<R> {
    inner: R,
    limiter: Arc<RateLimiter>,
    wait: Option<Pin<Box<Sleep>>>,
}

impl<R> Throttled<R> {
    /// Wraps `inner`, sharing `limiter` with every other reader of the remote.
    pub fn new(inner: R, limiter: Arc<RateLimiter>) -> Self {
        Throttled {
            inner,
            limiter,
            wait: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Throttled<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(wait) = self.wait.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        let room = buf.remaining().min(CHUNK);
        let this = &mut *self;
        // A window of at most CHUNK bytes of `buf` (zeroed first where it was
        // not yet: no unsafe for a few microseconds per chunk).
        let mut window = ReadBuf::new(buf.initialize_unfilled_to(room));
        match Pin::new(&mut this.inner).poll_read(cx, &mut window) {
            Poll::Ready(Ok(())) => {
                let n = window.filled().len();
                buf.advance(n);
                if n > 0 {
                    let until = this.limiter.take(n);
                    if until > Instant::now() {
                        this.wait = Some(Box::pin(tokio::time::sleep_until(until)));
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn readers_of_one_remote_share_the_rate() {
        let limiter = RateLimiter::new(1 << 20);
        let started = Instant::now();
        let a = Throttled::new(&[7u8; 3 << 20][..], limiter.clone());
        let b = Throttled::new(&[9u8; 1 << 20][..], limiter.clone());
        let read_all = |mut r: Throttled<&'static [u8]>| async move {
            let mut out = Vec::new();
            r.read_to_end(&mut out).await.unwrap();
            out
        };
        let (x, y) = tokio::join!(read_all(a), read_all(b));
        assert_eq!((x.len(), y.len()), (3 << 20, 1 << 20));
        assert!(x.iter().all(|&v| v == 7) && y.iter().all(|&v| v == 9));
        // 4 MiB at 1 MiB/s together: 4 s, less the last chunk each reader
        // hands over before its final wait.
        let took = started.elapsed().as_secs_f64();
        assert!((3.8..=4.1).contains(&took), "took {took} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_reader_catches_up_within_the_slack() {
        let limiter = RateLimiter::new(1 << 20);
        let first = limiter.take(64 << 10); // 62.5 ms of budget
                                            // Woken 20 ms after its time: the next chunk's time follows on from
                                            // the first's, not from the late wake-up.
        tokio::time::sleep_until(first + Duration::from_millis(20)).await;
        let second = limiter.take(64 << 10);
        assert_eq!(second - first, Duration::from_secs_f64(0.0625));
        // 200 ms late is idleness: no catching up.
        tokio::time::sleep_until(second + Duration::from_millis(200)).await;
        let now = Instant::now();
        let third = limiter.take(64 << 10);
        assert_eq!(third - now, Duration::from_secs_f64(0.0625));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_banks_no_burst() {
        let limiter = RateLimiter::new(1 << 20);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let started = Instant::now();
        let mut r = Throttled::new(&[0u8; 2 << 20][..], limiter);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        let took = started.elapsed().as_secs_f64();
        assert!((1.9..=2.1).contains(&took), "took {took} s");
    }
}
