//! The S3 object store against a real S3 server (moto on 127.0.0.1).
//!
//! Run with `integration/with-services.sh cargo test --test integration remote_s3:: -- --include-ignored`.
//! Fault injection uses a small loopback HTTP proxy in front of moto that answers
//! chosen requests with 500/503 itself; the store under test is unchanged.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use subvault::core::model::Codec;
use subvault::core::object_key::{format_key, KeyInfo};
use subvault::ops::restore::fetch::{Fetch, RANGE};
use subvault::remote::{
    list_backups, BackupListing, MultipartUpload, ObjectStore, RemoteErrorKind, S3Store,
    UploadOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::common::proxy::FaultProxy;

use crate::common::s3store::{data, settings, store, MIB};

async fn read_all(mut r: subvault::remote::Body) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

/// Yields `ok` bytes, then fails (like `btrfs send` dying) or, with
/// `hang`, never returns more (like a stalled producer).
struct BrokenBody {
    ok: usize,
    hang: bool,
}

impl AsyncRead for BrokenBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ok == 0 {
            return if self.hang {
                Poll::Pending
            } else {
                Poll::Ready(Err(io::Error::other("send stream died")))
            };
        }
        let n = self.ok.min(buf.remaining()).min(64 * 1024);
        buf.put_slice(&vec![0x5a; n]);
        self.ok -= n;
        Poll::Ready(Ok(()))
    }
}

async fn wait_for_no_multipart_uploads(store: &S3Store) -> Vec<MultipartUpload> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = store.list_multipart_uploads().await.unwrap();
        if open.is_empty() || Instant::now() > deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn list_paginates_and_finds_backups() {
    let (store, bucket) = store("host1/").await;
    let client = store.client().clone();
    // 1,050 objects under the prefix (more than one ListObjectsV2 page) and a
    // few outside it that must not show up.
    let keys: Vec<String> = (0..1050)
        .map(|i| format!("host1/obj{i:05}"))
        .chain((0..5).map(|i| format!("other/obj{i}")))
        .collect();
    futures::stream::iter(keys.clone())
        .for_each_concurrent(32, |k| {
            let client = client.clone();
            let bucket = bucket.clone();
            async move {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(k)
                    .body(b"x".to_vec().into())
                    .send()
                    .await
                    .unwrap();
            }
        })
        .await;
    let info = KeyInfo {
        basename: "home".into(),
        time: chrono::DateTime::parse_from_rfc3339("2026-11-27T06:00:00+01:00").unwrap(),
        ctransid: 42,
        uuid: uuid::Uuid::from_u128(1),
        send_parent_uuid: None,
        source_uuid: uuid::Uuid::from_u128(2),
        codec: Some(Codec::Zstd),
    };
    let backup_key = format_key("host1/", &info);
    let foreign = "host1/home.ctim2024-06-01T00:00:00+02:00.ctid1234.uuid3fd11d8e-8110-4cd0-b85c-bae3dda86a3d.sndp00000000-0000-0000-0000-000000000000.prnt9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e.mdvn1.seqn0.gz";
    for k in [backup_key.as_str(), foreign] {
        store
            .upload(k, &b"stream"[..], &UploadOptions::default())
            .await
            .unwrap();
    }

    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1052);
    assert!(listed.iter().all(|o| o.key.starts_with("host1/")));
    let mut got: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 1052, "no key listed twice across pages");

    let BackupListing { backups, ignored } = list_backups(&store, "host1/").await.unwrap();
    let mut bkeys: Vec<String> = backups.iter().map(|b| b.key().into_owned()).collect();
    bkeys.sort();
    let mut want = vec![backup_key.to_string(), foreign.to_string()];
    want.sort();
    assert_eq!(bkeys, want);
    assert_eq!(ignored.len(), 1050);
    let ours = backups.iter().find(|b| *b.key() == *backup_key).unwrap();
    assert_eq!(ours.ctransid, 42);
    assert_eq!(ours.size, Some(6));
    assert_eq!(ours.codec, Some(Codec::Zstd));

    // Deleting more than one DeleteObjects batch, judged per key.
    let to_delete: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
    let report = store.delete(&to_delete).await.unwrap();
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..3.min(report.failed.len())]
    );
    assert_eq!(report.deleted.len(), 1052);
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn streams_up_to_the_default_single_put_max_are_one_put_and_longer_ones_keep_8_mib_parts() {
    let bucket = crate::common::new_bucket_async("single-put").await;
    // The default settings: only the test credentials and endpoint.
    let mut s = settings(&bucket, "", crate::common::s3_endpoint());
    s.single_put_max = subvault::remote::parts::DEFAULT_SINGLE_PUT_MAX;
    let store = S3Store::new(s).await.unwrap();
    let opts = UploadOptions::default();
    let requests = |store: &S3Store| store.requests();

    // A 50 MiB full: one PutObject (btrfs2s3 also makes one, from a temp file).
    let full = data(50 * MIB, 31);
    let stats = store.upload("full", &full[..], &opts).await.unwrap();
    assert_eq!((stats.bytes, stats.parts), (full.len() as u64, 0));
    let counts = requests(&store);
    assert_eq!(counts.get("PutObject"), Some(&1), "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 1, "{counts:?}");
    assert_eq!(read_all(store.get("full", None).await.unwrap()).await, full);

    // Exactly the limit is still one PUT.
    let edge = data(64 * MIB, 32);
    let stats = store.upload("edge", &edge[..], &opts).await.unwrap();
    assert_eq!(stats.parts, 0);

    // One byte more: multipart, cut into the same 8 MiB parts as always (so
    // resuming does not depend on the limit): 8 full parts and a 1-byte one.
    let before = requests(&store);
    let over = data(64 * MIB + 1, 33);
    let stats = store.upload("over", &over[..], &opts).await.unwrap();
    assert_eq!(stats.parts, 9);
    let after = requests(&store);
    let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
    assert_eq!(delta("CreateMultipartUpload"), 1);
    assert_eq!(delta("UploadPart"), 9);
    assert_eq!(delta("CompleteMultipartUpload"), 1);
    assert_eq!(delta("PutObject"), 0);
    assert_eq!(read_all(store.get("over", None).await.unwrap()).await, over);
    let r = (8 * MIB - 10)..(8 * MIB + 10);
    let got = read_all(
        store
            .get("over", Some(r.start as u64..r.end as u64))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, over[r]);
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn small_body_is_one_put_large_body_is_multipart_and_round_trips() {
    let (store, _) = store("p/").await;

    let small = data(MIB, 1);
    let stats = store
        .upload("p/small", &small[..], &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!((stats.bytes, stats.parts), (small.len() as u64, 0));
    assert_eq!(
        read_all(store.get("p/small", None).await.unwrap()).await,
        small
    );

    let empty = store
        .upload("p/empty", &b""[..], &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!((empty.bytes, empty.parts), (0, 0));
    assert_eq!(store.head("p/empty").await.unwrap().size, 0);

    let big = data(40 * MIB + 12345, 2);
    let progress = Arc::new(AtomicU64::new(0));
    let p2 = progress.clone();
    let opts = UploadOptions {
        storage_class: Some("STANDARD_IA".into()),
        progress: Some(Arc::new(move |n| {
            p2.fetch_max(n, Ordering::SeqCst);
        })),
        ..Default::default()
    };
    let stats = store.upload("p/big", &big[..], &opts).await.unwrap();
    assert_eq!(stats.bytes, big.len() as u64);
    assert_eq!(stats.parts, 6, "40 MiB in 8 MiB parts");
    assert_eq!(progress.load(Ordering::SeqCst), big.len() as u64);

    assert_eq!(read_all(store.get("p/big", None).await.unwrap()).await, big);
    // A range across a part boundary, and the tail.
    for r in [(8 * MIB - 100)..(8 * MIB + 100), (40 * MIB)..big.len()] {
        let got = read_all(
            store
                .get("p/big", Some(r.start as u64..r.end as u64))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got, big[r.clone()], "range {r:?}");
    }

    let head = store.head("p/big").await.unwrap();
    assert_eq!(head.size, big.len() as u64);
    assert_eq!(head.storage_class.as_deref(), Some("STANDARD_IA"));
    let listed = store.list().await.unwrap();
    let big_listed = listed.iter().find(|o| o.key == "p/big").unwrap();
    assert_eq!(big_listed.storage_class.as_deref(), Some("STANDARD_IA"));

    let missing = store.head("p/nope").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(store.list_multipart_uploads().await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn object_lock_is_set_on_create() {
    let bucket = new_lock_bucket("lock").await;
    let client = crate::common::s3_client();
    let store = S3Store::new(settings(&bucket, "", crate::common::s3_endpoint()))
        .await
        .unwrap();
    let until = chrono::Utc::now() + chrono::Duration::days(2);
    let opts = UploadOptions {
        object_lock: Some(("GOVERNANCE".into(), until)),
        ..Default::default()
    };
    let body = data(MIB, 3);
    store.upload("single", &body[..], &opts).await.unwrap();
    let head = client
        .head_object()
        .bucket(&bucket)
        .key("single")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    assert_eq!(
        head.object_lock_retain_until_date().map(|d| d.secs()),
        Some(until.timestamp())
    );

    // moto 5.2.5 drops the lock settings of multipart uploads, so check that
    // CreateMultipartUpload carries them on the wire instead.
    let (proxy, seen_heads) = FaultProxy::recording(|head| {
        head.starts_with("POST ") && head.lines().next().unwrap().contains("?uploads")
    });
    let via_proxy = S3Store::new(settings(&bucket, "", proxy.url.clone()))
        .await
        .unwrap();
    let body = data(20 * MIB, 4);
    let stats = via_proxy.upload("multi", &body[..], &opts).await.unwrap();
    assert!(stats.parts > 1);
    let heads = seen_heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "one CreateMultipartUpload");
    assert!(
        heads[0].contains("x-amz-object-lock-mode: governance"),
        "{}",
        heads[0]
    );
    let date = until
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
        .to_ascii_lowercase();
    assert!(
        heads[0].contains("x-amz-object-lock-retain-until-date: ") && heads[0].contains(&date),
        "{}",
        heads[0]
    );
    assert_eq!(
        read_all(store.get("multi", None).await.unwrap()).await,
        body
    );
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn uploads_over_loopback_skip_the_payload_hash_unless_checksummed() {
    // The proxy listens on 127.0.0.1, so the store sends UNSIGNED-PAYLOAD
    // (no SHA-256 pass over the body) for PutObject and UploadPart...
    let bucket = crate::common::new_bucket_async("unsigned").await;
    let (proxy, puts) = FaultProxy::recording(|head| head.starts_with("PUT "));
    let store = S3Store::new(settings(&bucket, "", proxy.url.clone()))
        .await
        .unwrap();
    let small = data(MIB, 5);
    let big = data(20 * MIB, 6);
    store
        .upload("small", &small[..], &UploadOptions::default())
        .await
        .unwrap();
    let stats = store
        .upload("big", &big[..], &UploadOptions::default())
        .await
        .unwrap();
    assert!(stats.parts > 1);
    let heads = std::mem::take(&mut *puts.lock().unwrap());
    assert_eq!(heads.len(), 1 + stats.parts as usize, "{heads:?}");
    for h in &heads {
        assert!(h.contains("x-amz-content-sha256: unsigned-payload"), "{h}");
    }
    assert_eq!(
        read_all(store.get("small", None).await.unwrap()).await,
        small
    );
    assert_eq!(read_all(store.get("big", None).await.unwrap()).await, big);

    // ...but an upload that carries a CRC (object lock) keeps the signed payload:
    // unsigned, the SDK would send an aws-chunked body with a trailer instead.
    let locked = new_lock_bucket("unsigned-lock").await;
    let store = S3Store::new(settings(&locked, "", proxy.url.clone()))
        .await
        .unwrap();
    let opts = UploadOptions {
        object_lock: Some((
            "GOVERNANCE".into(),
            chrono::Utc::now() + chrono::Duration::days(1),
        )),
        ..Default::default()
    };
    store.upload("one", &small[..], &opts).await.unwrap();
    let heads = std::mem::take(&mut *puts.lock().unwrap());
    assert_eq!(heads.len(), 1, "{heads:?}");
    let hash = heads[0]
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-content-sha256: "))
        .unwrap_or_default();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        heads[0]
    );
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn a_large_object_is_fetched_in_parallel_ranges_in_order() {
    let (store, bucket) = store("p/").await;
    let big = data(40 * MIB + 12345, 7);
    store
        .upload("p/big", &big[..], &UploadOptions::default())
        .await
        .unwrap();
    let (proxy, gets) = FaultProxy::recording(|head| head.starts_with("GET "));
    let via = Arc::new(
        S3Store::new(settings(&bucket, "p/", proxy.url.clone()))
            .await
            .unwrap(),
    );
    let mut fetch = Fetch::start(via, "p/big".into(), big.len() as u64, MIB);
    let mut got = Vec::new();
    fetch.read_to_end(&mut got).await.unwrap();
    assert!(got == big, "the pieces differ from the object");
    let mut ranges: Vec<(u64, u64)> = gets
        .lock()
        .unwrap()
        .iter()
        .map(|h| {
            let r = h
                .lines()
                .find_map(|l| l.strip_prefix("range: bytes="))
                .unwrap_or_else(|| panic!("a GET without a range: {h}"));
            let (a, b) = r.trim().split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    ranges.sort();
    let len = big.len() as u64;
    let want: Vec<(u64, u64)> = (0..len)
        .step_by(RANGE as usize)
        .map(|a| (a, (a + RANGE).min(len) - 1))
        .collect();
    assert_eq!(ranges, want);
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn failing_body_leaves_no_object_and_no_multipart_upload() {
    let (store, _) = store("").await;
    // Fails after 20 MiB: the multipart upload has started and parts are up.
    let err = store
        .upload(
            "broken",
            BrokenBody {
                ok: 20 * MIB,
                hang: false,
            },
            &UploadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(*err.kind, RemoteErrorKind::Body(_)), "{err}");
    assert!(err.to_string().contains("broken"), "names the key: {err}");
    assert!(store.head("broken").await.unwrap_err().is_not_found());
    assert!(store.list_multipart_uploads().await.unwrap().is_empty());

    // Failing before one part is full: nothing was created at all.
    let err = store
        .upload(
            "broken-small",
            BrokenBody {
                ok: MIB,
                hang: false,
            },
            &UploadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(*err.kind, RemoteErrorKind::Body(_)), "{err}");
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn dropping_the_upload_midway_aborts_the_multipart_upload() {
    let (store, _) = store("").await;
    let s2 = store.clone();
    let task = tokio::spawn(async move {
        s2.upload(
            "cancelled",
            BrokenBody {
                ok: 24 * MIB,
                hang: true,
            },
            &UploadOptions::default(),
        )
        .await
    });
    // Wait until the multipart upload exists, then cancel the upload.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.list_multipart_uploads().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the multipart upload never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let open = wait_for_no_multipart_uploads(&store).await;
    assert!(open.is_empty(), "dangling multipart uploads: {open:?}");
    assert!(store.head("cancelled").await.unwrap_err().is_not_found());
}

/// Creates a uniquely named bucket with object lock enabled.
async fn new_lock_bucket(prefix: &str) -> String {
    let bucket = crate::common::unique_bucket_name(prefix);
    crate::common::s3_client()
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    bucket
}

#[tokio::test]
#[ignore = "needs S3 (moto)"]
async fn transient_errors_are_retried_and_the_upload_completes() {
    let bucket = crate::common::new_bucket_async("retry").await;
    // Fail the first three requests of any kind (CreateMultipartUpload gets
    // them), then every second UploadPart request once more each: 500 and 503.
    let parts_failed = Arc::new(AtomicU32::new(0));
    let pf = parts_failed.clone();
    let proxy = FaultProxy::start(Arc::new(move |line, nth| {
        if nth < 3 {
            return Some(if nth % 2 == 0 { 503 } else { 500 });
        }
        if line.contains("partNumber=") && pf.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            return Some(503);
        }
        None
    }));
    let store = S3Store::new(settings(&bucket, "", proxy.url.clone()))
        .await
        .unwrap();
    let body = data(30 * MIB, 4);
    let stats = store
        .upload("retried", &body[..], &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(stats.parts, 4);
    assert!(
        proxy.injected() >= 5,
        "only {} injected failures",
        proxy.injected()
    );
    assert_eq!(
        read_all(store.get("retried", None).await.unwrap()).await,
        body
    );
    assert!(store.list_multipart_uploads().await.unwrap().is_empty());

    // A store that keeps failing: the error names the code and, since the
    // multipart upload could not be completed, it is aborted.
    let direct = S3Store::new(settings(&bucket, "", crate::common::s3_endpoint()))
        .await
        .unwrap();
    let always = FaultProxy::start(Arc::new(|line, _| {
        line.contains("partNumber=").then_some(500)
    }));
    let failing = S3Store::new(settings(&bucket, "", always.url.clone()))
        .await
        .unwrap();
    let err = failing
        .upload("never", &body[..], &UploadOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("InternalError"), "{err}");
    assert!(always.injected() >= 1, "the proxy failed no UploadPart");
    assert!(direct.head("never").await.unwrap_err().is_not_found());
    assert!(direct.list_multipart_uploads().await.unwrap().is_empty());
}
