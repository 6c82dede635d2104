//! Many hosts, one bucket (issue 21): `status --fleet` over a moto bucket
//! whose hosts write under `<root><host>/`: one fresh host, one stale, one
//! with a broken chain, one holding only keys of another layout. Exit codes,
//! the failure lines, the JSON, and the requests (List only: one delimited
//! listing of the root, one listing per host) are checked. The objects are
//! written directly with backup keys (bodies are not read by `status`), so
//! the test needs S3 only and runs in a second or two.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use subvault::core::object_key::{format_key, KeyInfo};
use uuid::Uuid;

use crate::common::proxy::FaultProxy;
use crate::common::{new_bucket, output_text, put_object, s3_endpoint, subvault};

/// A backup key under `prefix` for snapshot `n` of source `base`, taken
/// `hours_ago`, sent relative to snapshot `parent` (a full when `None`).
fn key(prefix: &str, base: &str, n: u128, parent: Option<u128>, hours_ago: i64) -> String {
    let time: DateTime<Utc> = Utc::now() - Duration::hours(hours_ago);
    format_key(
        prefix,
        &KeyInfo {
            basename: base.into(),
            time: time.fixed_offset(),
            ctransid: n as u64,
            uuid: Uuid::from_u128(n),
            send_parent_uuid: parent.map(Uuid::from_u128),
            source_uuid: Uuid::from_u128(7000 + n % 10),
            codec: None,
        },
    )
}

/// A fleet reader's config: no sources, one remote per (id, root prefix).
fn config(dir: &Path, bucket: &str, endpoint: &str, roots: &[(&str, &str)]) -> PathBuf {
    // A made-up price (1024 per GB-month: 1 per MiB) so the estimate is exact.
    let mut yaml = String::from(
        "timezone: UTC\nprices:\n  currency: EUR\n  storage_gb_month: {STANDARD: 1024}\nremotes:\n",
    );
    for (id, root) in roots {
        yaml.push_str(&format!(
            "  - id: {id}\n    s3:\n      bucket: {bucket}\n      prefix: {root}\n      \
             endpoint:\n        endpoint_url: {endpoint}\n        region_name: us-east-1\n"
        ));
    }
    let path = dir.join("config.yaml");
    fs::write(&path, yaml).unwrap();
    path
}

/// The keys the test writes, to compare with what the JSON reports.
struct Fleet {
    bucket: String,
    fresh_newest: String,
    broken_incremental: String,
}

/// Four hosts under `fleet/`, a stray key at the root, and under the sibling
/// root `ok/` one fresh host and one foreign one.
fn fill() -> Fleet {
    let bucket = new_bucket("fleet");
    let put = |k: &str, size: usize| put_object(&bucket, k, vec![b'x'; size]);
    let fresh = "fleet/host-fresh/";
    put(&key(fresh, "home", 1, None, 30), 300);
    let fresh_newest = key(fresh, "home", 2, Some(1), 1);
    put(&fresh_newest, 20);
    put(&key(fresh, "db", 3, None, 2), 100);
    put("fleet/host-fresh/manifest.json", 5);
    put(&key("fleet/host-stale/", "home", 11, None, 24 * 4), 50);
    let broken = "fleet/host-broken/";
    put(&key(broken, "home", 21, None, 5), 60);
    // Sent relative to snapshot 29, whose object is gone.
    let broken_incremental = key(broken, "home", 22, Some(29), 1);
    put(&broken_incremental, 6);
    put("fleet/host-other/photos/2024/a.jpg", 40);
    put("fleet/host-other/readme.txt", 2);
    put("fleet/stray.txt", 1);
    put(&key("ok/web1/", "www", 31, None, 3), 10);
    put("ok/nas/index.html", 3);
    Fleet {
        bucket,
        fresh_newest,
        broken_incremental,
    }
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn host<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["remotes"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {json:#}"))
}

#[test]
#[ignore = "needs S3"]
fn fleet_status_names_stale_and_broken_hosts_and_reports_foreign_ones() {
    let f = fill();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &f.bucket,
        &s3_endpoint(),
        &[("fleet", "fleet/"), ("ok", "ok/")],
    );

    // The text report: exit 1, one line per failing host/source, the foreign
    // host reported but not failing.
    let out = subvault(&cfg, &["status", "--fleet", "--remote", "fleet"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 1, "{}", output_text(&out));
    let lines: Vec<&str> = text.lines().collect();
    let failing: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("host-") && l.contains("/home: "))
        .collect();
    assert_eq!(failing.len(), 2, "{text}");
    assert!(
        failing[0].starts_with("host-broken/home: BROKEN: 1 backup(s)"),
        "{text}"
    );
    assert!(failing[0].contains(&f.broken_incremental), "{text}");
    assert!(
        failing[1].starts_with("host-stale/home: STALE: the newest restorable backup is 4d"),
        "{text}"
    );
    assert!(lines.contains(&"host-other: foreign: 2 object(s), 42 B (STANDARD 2 / 42 B)"));
    assert!(
        !lines.iter().any(|l| l.starts_with("host-fresh/")),
        "fresh host not failing: {text}"
    );
    assert!(
        text.contains("fleet: 4 host(s), 2 not ok, 1 foreign: NOT OK"),
        "{text}"
    );

    // The JSON document.
    let out = subvault(&cfg, &["status", "--fleet", "--remote", "fleet", "--json"]);
    assert_eq!(code(&out), 1, "{}", output_text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["healthy"], false);
    assert_eq!(json["max_age_seconds"], 26 * 3600);
    let r = &json["remotes"][0];
    assert_eq!(r["remote"], "fleet");
    assert_eq!(r["root_foreign"]["examples"][0], "fleet/stray.txt");
    let names: Vec<&str> = r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["host-broken", "host-fresh", "host-other", "host-stale"]
    );
    let fresh = host(&json, "host-fresh");
    assert_eq!(fresh["health"], "ok");
    assert_eq!(fresh["objects"], 4);
    assert_eq!(fresh["by_storage_class"]["STANDARD"]["bytes"], 425);
    assert_eq!(fresh["foreign"]["count"], 1);
    let monthly = fresh["cost"]["storage_monthly"].as_f64().unwrap();
    assert!((monthly - 425.0 / 1048576.0).abs() < 1e-12, "{monthly}");
    assert_eq!(fresh["cost"]["currency"], "EUR");
    let home = &fresh["sources"][1];
    assert_eq!(home["source"], "home");
    assert_eq!(home["inventory"]["backups"], 2);
    assert_eq!(home["inventory"]["bytes"], 320);
    assert_eq!(home["inventory"]["newest"]["key"], f.fresh_newest.as_str());
    let age = home["newest_age_seconds"].as_i64().unwrap();
    assert!((3600..3600 + 120).contains(&age), "{age}");
    assert_eq!(host(&json, "host-stale")["health"], "stale");
    let broken = host(&json, "host-broken");
    assert_eq!(broken["health"], "broken");
    assert_eq!(
        broken["sources"][0]["inventory"]["broken"][0]["key"],
        f.broken_incremental.as_str()
    );
    let other = host(&json, "host-other");
    assert_eq!(other["health"], "foreign");
    assert_eq!(other["sources"].as_array().unwrap().len(), 0);
    assert_eq!(other["foreign"]["count"], 2);

    // A longer max age makes the stale host fresh; the broken one still fails.
    let out = subvault(
        &cfg,
        &["status", "--fleet", "--remote", "fleet", "--max-age", "5d"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 1, "{}", output_text(&out));
    assert!(!text.contains("STALE"), "{text}");
    assert!(text.contains("host-broken/home: BROKEN"), "{text}");

    // The sibling root holds one fresh host and one foreign one: exit 0, and
    // `-q` prints nothing.
    let out = subvault(&cfg, &["-q", "status", "--fleet", "--remote", "ok"]);
    assert_eq!(code(&out), 0, "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");

    // Both remotes at once: not healthy, because of `fleet/`.
    let out = subvault(&cfg, &["status", "--fleet"]);
    assert_eq!(code(&out), 1, "{}", output_text(&out));
    let out = subvault(&cfg, &["status", "--fleet", "--remote", "nope"]);
    assert_eq!(code(&out), 2, "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--remote nope"),
        "{}",
        output_text(&out)
    );
    // A config without sources only reads: `run` refuses it.
    let out = subvault(&cfg, &["run"]);
    assert_eq!(code(&out), 2, "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no `sources`"),
        "{}",
        output_text(&out)
    );
}

#[test]
#[ignore = "needs S3"]
fn fleet_status_reads_with_one_listing_per_host_and_nothing_else() {
    let f = fill();
    let (proxy, heads) = FaultProxy::recording(|_| true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &f.bucket, &proxy.url, &[("fleet", "fleet/")]);
    let out = subvault(&cfg, &["status", "--fleet", "--json"]);
    assert_eq!(code(&out), 1, "{}", output_text(&out));
    let heads = heads.lock().unwrap().clone();
    let lines: Vec<&str> = heads.iter().map(|h| h.lines().next().unwrap()).collect();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("get ") && l.contains("list-type=2")),
        "only ListObjectsV2: {lines:#?}"
    );
    let delimited = lines.iter().filter(|l| l.contains("delimiter=%2f")).count();
    assert_eq!(delimited, 1, "{lines:#?}");
    assert_eq!(lines.len(), 1 + 4, "one listing per host: {lines:#?}");
    for h in ["host-broken", "host-fresh", "host-other", "host-stale"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("prefix=fleet%2f{h}%2f"))),
            "{h}: {lines:#?}"
        );
    }
}
