//! Benchmarks that print figures (they are not tests):
//!
//! - the stream pipeline against the `zstd` CLI, encoding and decoding a
//!   generated send stream (`SUBVAULT_BENCH_MIB`, default 64);
//! - a 256 MiB multipart upload to the S3 server, when
//!   `SUBVAULT_TEST_S3_ENDPOINT` is set (`integration/with-services.sh` starts
//!   moto and sets it).
//!
//! Run: `integration/with-services.sh cargo bench --bench throughput`.
//! `cargo test --all-targets` builds this file but runs nothing (no
//! `--bench` argument), so CI spends no time on it. The benchmark scripts in
//! `bench/` measure whole commands against other tools.

#[allow(dead_code)]
#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use subvault::core::model::Codec;
use subvault::remote::{ObjectStore, UploadOptions};
use subvault::stream::{encode, verify_object, EncodeOptions};

use common::mixed::MixedStream;
use common::s3store::{data, store, MIB};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench throughput`");
        return;
    }
    throughput_against_the_zstd_cli();
    if std::env::var_os("SUBVAULT_TEST_S3_ENDPOINT").is_some() {
        runtime().block_on(upload_throughput_256_mib());
    } else {
        println!(
            "upload: skipped (SUBVAULT_TEST_S3_ENDPOINT not set; use integration/with-services.sh)"
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn env_mib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A 256 MiB upload to the S3 server: MB/s and the part count.
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

/// Times `f` and prints MB/s for `bytes`.
fn report(what: &str, bytes: u64, secs: f64) -> f64 {
    let mbps = bytes as f64 / secs / 1e6;
    println!("{what:<44} {secs:>7.2} s {mbps:>8.1} MB/s");
    mbps
}

/// The stream pipeline (hash, send-stream check, zstd -3) against the zstd CLI,
/// on `SUBVAULT_BENCH_MIB` (default 64) MiB of generated send stream.
fn throughput_against_the_zstd_cli() {
    let mib = env_mib("SUBVAULT_BENCH_MIB", 64);
    let dir = tempfile::tempdir().unwrap();
    let raw_path = dir.path().join("raw");
    let obj_path = dir.path().join("obj.zst");
    let rt = runtime();
    rt.block_on(async {
        let mut f = tokio::fs::File::create(&raw_path).await.unwrap();
        tokio::io::copy(&mut MixedStream::new(mib << 20), &mut f)
            .await
            .unwrap();
    });
    let raw_len = std::fs::metadata(&raw_path).unwrap().len();
    let cli = |args: &[&str], input: &Path| {
        let start = Instant::now();
        let st = Command::new("zstd")
            .args(args)
            .stdin(std::fs::File::open(input).unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        start.elapsed().as_secs_f64()
    };
    // Warm the page cache, then measure.
    cli(&["-3", "-c"], &raw_path);
    let zstd_enc = report(
        "zstd -3 -c < raw > /dev/null",
        raw_len,
        cli(&["-3", "-c"], &raw_path),
    );
    let ours_enc = rt.block_on(async {
        let start = Instant::now();
        let src = tokio::fs::File::open(&raw_path).await.unwrap();
        let mut enc = encode(src, EncodeOptions::new(Codec::Zstd)).unwrap();
        let mut out = tokio::fs::File::create(&obj_path).await.unwrap();
        tokio::io::copy(&mut enc, &mut out).await.unwrap();
        enc.finish().await.unwrap();
        report(
            "subvault encode zstd-3 (hash + check)",
            raw_len,
            start.elapsed().as_secs_f64(),
        )
    });
    let zstd_dec = report(
        "zstd -d -c < obj > /dev/null",
        raw_len,
        cli(&["-d", "-c"], &obj_path),
    );
    let ours_dec = rt.block_on(async {
        let start = Instant::now();
        let src = tokio::fs::File::open(&obj_path).await.unwrap();
        let s = verify_object(src, Some(Codec::Zstd)).await.unwrap();
        assert!(s.verified);
        report(
            "subvault decode zstd (hash + check)",
            raw_len,
            start.elapsed().as_secs_f64(),
        )
    });
    let obj_len = std::fs::metadata(&obj_path).unwrap().len();
    println!(
        "raw {:.0} MB, object {:.0} MB; encode ratio {:.2}x, decode ratio {:.2}x of the CLI",
        raw_len as f64 / 1e6,
        obj_len as f64 / 1e6,
        ours_enc / zstd_enc,
        ours_dec / zstd_dec
    );
}
