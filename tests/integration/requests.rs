//! Requests and what they cost (issue 21): `run --json` reports the requests
//! each remote sent, per kind; checked against what a recording proxy in
//! front of the S3 server saw, classified here by the test itself. A small
//! stream is one PutObject.

use std::fs;
use std::process::Output;

use chrono::Utc;
use serde_json::Value;

use crate::common::proxy::FaultProxy;
use crate::common::{new_bucket, output_text, subvault, TestFs};

/// The S3 API name of a request head (`put /b/k?partnumber=2&uploadid=x http/1.1`),
/// by the test's own reading of the S3 REST API (heads are lowercased).
fn kind(head: &str) -> &'static str {
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    match method {
        "head" => "HeadObject",
        "get" if has("list-type") => "ListObjectsV2",
        "get" if has("uploads") => "ListMultipartUploads",
        "get" if has("uploadid") => "ListParts",
        "get" => "GetObject",
        "put" if has("uploadid") => "UploadPart",
        "put" => "PutObject",
        "post" if has("uploads") => "CreateMultipartUpload",
        "post" if has("uploadid") => "CompleteMultipartUpload",
        "post" if has("delete") => "DeleteObjects",
        "delete" if has("uploadid") => "AbortMultipartUpload",
        "delete" => "DeleteObject",
        _ => "Other",
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn run_json_counts_requests_per_kind_as_the_wire_saw_them_and_a_small_stream_is_one_put() {
    let bucket = new_bucket("requests");
    let (proxy, heads) = FaultProxy::recording(|_| true);
    let fs = TestFs::new(256);
    let source = fs.subvolume("data");
    let snaps = fs.path().join("snaps");
    fs::create_dir(&snaps).unwrap();
    fs::write(source.join("file"), "small\n".repeat(1000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        format!(
            "timezone: UTC\nprices: {{currency: EUR, storage_gb_month: {{STANDARD: 1024}}}}\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n      \
             - id: r\n        preserve: 1y 1d\nremotes:\n  - id: r\n    s3:\n      bucket: {bucket}\n      \
             endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n",
            source.display(),
            snaps.display(),
            proxy.url
        ),
    )
    .unwrap();

    let now = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let out = subvault(&config, &["run", "--json", "--now", &now]);
    assert_eq!(code(&out), 0, "{}", output_text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reported = &json["requests"]["r"];
    let seen = heads.lock().unwrap().clone();
    let mut wire: std::collections::BTreeMap<&str, u64> = Default::default();
    for h in &seen {
        *wire.entry(kind(h)).or_default() += 1;
    }
    let reported_map: std::collections::BTreeMap<&str, u64> = reported
        .as_object()
        .unwrap_or_else(|| panic!("no requests for r: {json:#}"))
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(reported_map, wire, "run --json vs the wire: {seen:#?}");
    // The one backup, a few KiB of send stream, went up in one PutObject.
    assert_eq!(reported["PutObject"], 1, "{reported}");
    assert!(
        reported.get("CreateMultipartUpload").is_none(),
        "{reported}"
    );
    assert!(reported.get("UploadPart").is_none(), "{reported}");
    assert!(reported["ListObjectsV2"].as_u64().unwrap() >= 1);

    // Nothing new: no upload, only reads.
    heads.lock().unwrap().clear();
    let out = subvault(
        &config,
        &["run", "--json", "--now", &Utc::now().to_rfc3339()],
    );
    assert_eq!(code(&out), 0, "{}", output_text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reported = &json["requests"]["r"];
    let total: u64 = reported
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, heads.lock().unwrap().len() as u64, "{reported}");
    assert!(reported.get("PutObject").is_none(), "{reported}");

    // status and plan price what the bucket holds (1024 per GB-month is 1 per MiB).
    let stored: i64 = crate::common::bucket_objects(&bucket)
        .values()
        .map(|(size, _)| size)
        .sum();
    let out = subvault(&config, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", output_text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cost = &json["remotes"][0]["cost"];
    assert_eq!(
        cost["by_storage_class"]["STANDARD"]["bytes"], stored,
        "{cost}"
    );
    let monthly = cost["storage_monthly"].as_f64().unwrap();
    assert!(
        (monthly - stored as f64 / 1048576.0).abs() < 1e-12,
        "{cost}"
    );
    let out = subvault(&config, &["plan", "--dry-run", "--json"]);
    assert_eq!(code(&out), 0, "{}", output_text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["costs"][0]["remote"], "r", "{json:#}");
    assert_eq!(
        json["costs"][0]["by_storage_class"]["STANDARD"]["bytes"],
        stored
    );
    assert_eq!(json["costs"][0]["early_deletion"], 0.0);
}
