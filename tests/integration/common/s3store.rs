//! An `S3Store` on a fresh bucket of the test S3 server, and test data.

use std::time::Duration;

use subvault::remote::retry::RetryPolicy;
use subvault::remote::{S3Settings, S3Store};

/// One mebibyte.
pub const MIB: usize = 1 << 20;

/// Settings for `bucket` at `endpoint`, with the test credentials and quick retries.
pub fn settings(bucket: &str, prefix: &str, endpoint: String) -> S3Settings {
    let env_or = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "testing".into())
    };
    let mut s = S3Settings::new(bucket, prefix);
    s.endpoint_url = Some(endpoint);
    s.region = Some(super::s3_region());
    s.access_key_id = Some(env_or("AWS_ACCESS_KEY_ID"));
    s.secret_access_key = Some(env_or("AWS_SECRET_ACCESS_KEY"));
    s.retry = RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
    };
    // The store tests drive multipart uploads (parts, resume, faults) with
    // streams of tens of MiB: one part is the single-PUT limit here, as it
    // was before the 64 MiB default (remote_s3 tests that default itself).
    s.single_put_max = subvault::remote::parts::FIRST_PART_SIZE;
    s
}

/// A store on a fresh bucket (returned too).
pub async fn store(prefix: &str) -> (S3Store, String) {
    let bucket = super::new_bucket_async("remote").await;
    let s = S3Store::new(settings(&bucket, prefix, super::s3_endpoint()))
        .await
        .unwrap();
    (s, bucket)
}

/// Deterministic, incompressible-looking bytes.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}
