//! Benchmarks that print figures. They also assert what they can (the part
//! count), but their point is the number: run them with `--release` and
//! `--nocapture` (`integration/with-services.sh cargo test --release --test
//! integration benchmarks:: -- --include-ignored --nocapture`). The benchmark
//! scripts in `bench/` measure whole commands against other tools.

use subvault::remote::{ObjectStore, UploadOptions};

use crate::remote_s3::{data, store, MIB};

#[tokio::test]
#[ignore = "benchmark: prints upload MB/s to the S3 server (needs S3)"]
async fn upload_throughput_256_mib() {
    let (store, _) = store("").await;
    let body = data(256 * MIB, 5);
    let stats = store
        .upload("bench", &body[..], &UploadOptions::default())
        .await
        .unwrap();
    let mbps = stats.bytes as f64 / 1e6 / stats.seconds;
    println!(
        "upload to {}: {} bytes in {} parts, {:.1} s, {:.1} MB/s",
        store.describe(),
        stats.bytes,
        stats.parts,
        stats.seconds,
        mbps
    );
    assert_eq!(stats.parts, 32);
    assert_eq!(store.head("bench").await.unwrap().size, body.len() as u64);
}
