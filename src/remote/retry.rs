//! Retries with exponential backoff and full jitter.
//!
//! The SDK's own retries are switched off (see `s3.rs`) so that this one policy
//! governs every request and its attempts are visible in our logs. A failure is
//! retried when it is transient: 5xx, throttling (429, `SlowDown`), timeouts,
//! connection errors and malformed responses. Anything else (403, 404, a bad
//! request) fails at once.

use std::future::Future;
use std::time::Duration;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// Upper bound of the first backoff.
    pub base_delay: Duration,
    /// Upper bound of any backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the pause after failed attempt `attempt` (1-based):
    /// `base * 2^(attempt-1)`, capped at `max_delay`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << (attempt.saturating_sub(1)).min(20);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A pause drawn uniformly from `[0, ceiling(attempt)]` ("full jitter"), so
    /// parallel part uploads that failed together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }
}

/// Whether a failed attempt may succeed when repeated.
pub trait Transient {
    /// True for throttling, 5xx, timeouts and connection errors.
    fn is_transient(&self) -> bool;
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy's attempts
/// are used up; returns the last error then. `what` names the request in logs.
pub async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut attempt: F,
) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && n < policy.max_attempts => {
                let pause = policy.delay(n);
                tracing::warn!(
                    "{what}: attempt {n}/{} failed, retrying in {} ms: {e}",
                    policy.max_attempts,
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transient={}", self.0)
        }
    }
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(4), Duration::from_millis(1600));
        assert_eq!(p.ceiling(50), Duration::from_secs(20));
        for a in 1..10 {
            assert!(p.delay(a) <= p.ceiling(a));
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = Cell::new(0);
        let r: Result<u32, E> = with_retries(&fast(), "t", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(E(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }

    #[tokio::test]
    async fn permanent_errors_fail_at_once_and_attempts_are_bounded() {
        let calls = Cell::new(0);
        let r: Result<(), E> = with_retries(&fast(), "t", || {
            calls.set(calls.get() + 1);
            async { Err(E(false)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 1);

        calls.set(0);
        let r: Result<(), E> = with_retries(&fast(), "t", || {
            calls.set(calls.get() + 1);
            async { Err(E(true)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 4);
    }
}
