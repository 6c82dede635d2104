//! Running unattended (issue 19): `status` and its exit codes, the state
//! file, `run --json`, the metrics file (parsed by the Prometheus client
//! library's own parser), hooks, the run lock's exit status 3, journald
//! priorities, `-q`, and sources that do not wait for each other. On real
//! btrfs and the real S3 server; the journald test needs neither.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::proxy::FaultProxy;
use crate::common::{
    block_on, bucket_objects, new_bucket, s3_client, s3_endpoint, subvault, subvault_command,
    TestFs,
};

/// Sources on one fresh btrfs, each backed up to its own bucket; the config
/// (and the state and lock dirs `subvault_command` puts next to it) in a
/// temp dir.
struct Setup {
    fs: TestFs,
    sources: Vec<PathBuf>,
    config: PathBuf,
    dir: tempfile::TempDir,
}

/// One source per (name, bucket, endpoint); `extra` is appended to the
/// config's top level, `source_extra` to every source.
fn setup(sources: &[(&str, &str, &str)], extra: &str, source_extra: &str) -> Setup {
    let fs = TestFs::new(256);
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("timezone: UTC\nsources:\n");
    let mut remotes = String::from("remotes:\n");
    let mut paths = Vec::new();
    for (name, bucket, endpoint) in sources {
        let path = fs.subvolume(name);
        let snaps = fs.path().join(format!("{name}-snaps"));
        fs::create_dir(&snaps).unwrap();
        fs::write(path.join("file"), format!("{name} first\n").repeat(1000)).unwrap();
        yaml.push_str(&format!(
            "  - path: {}\n    snapshots: {}\n{source_extra}    upload_to_remotes:\n      \
             - id: r-{name}\n        preserve: 1y 1d 24h\n",
            path.display(),
            snaps.display()
        ));
        remotes.push_str(&format!(
            "  - id: r-{name}\n    s3:\n      bucket: {bucket}\n      endpoint:\n        \
             endpoint_url: {endpoint}\n        region_name: us-east-1\n"
        ));
        paths.push(path);
    }
    yaml.push_str(&remotes);
    yaml.push_str(extra);
    let config = dir.path().join("config.yaml");
    fs::write(&config, yaml).unwrap();
    Setup {
        fs,
        sources: paths,
        config,
        dir,
    }
}

fn show(out: &Output) -> String {
    format!(
        "({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", show(out)))
}

fn ago(hours: i64) -> String {
    (Utc::now() - chrono::Duration::hours(hours)).to_rfc3339()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn run_json_reports_what_was_uploaded_and_status_judges_fresh_stale_and_broken() {
    let bucket = new_bucket("mon-status");
    let s = setup(&[("data", &bucket, &s3_endpoint())], "", "");

    // No run yet: nothing restorable, exit 1.
    let out = subvault(&s.config, &["status", "--json"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert_eq!(json(&out)["sources"][0]["remotes"][0]["health"], "empty");

    let out = subvault(&s.config, &["run", "--json", "--now", &ago(2)]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let run = json(&out);
    assert_eq!(run["version"], 1);
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["exit_status"], 0);
    let src = &run["sources"][0];
    assert_eq!(src["source"], "data");
    assert_eq!(src["ok"], true);
    assert_eq!(src["uploaded"], 1);
    assert!(src["snapshot_created"].is_string(), "{src:#}");
    let remote = &src["remotes"][0];
    assert_eq!(remote["remote"], "r-data");
    let up = &remote["uploaded"][0];
    assert_eq!(up["full"], true);
    let full_key = up["key"].as_str().unwrap().to_string();
    let objects = bucket_objects(&bucket);
    assert_eq!(
        objects[&full_key].0 as u64,
        up["bytes"].as_u64().unwrap(),
        "the reported size is the stored object's"
    );
    assert!(up["read_bytes"].as_u64().unwrap() > 0);
    assert_eq!(remote["backups"]["backups"], 1);
    // The state file is under SUBVAULT_STATE_DIR, not /var/lib/subvault.
    let states: Vec<_> = fs::read_dir(s.dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    let state: Value = serde_json::from_slice(&fs::read(&states[0]).unwrap()).unwrap();
    assert_eq!(state["last_run"]["outcome"], "ok");

    fs::write(s.sources[0].join("file"), "changed\n").unwrap();
    let out = subvault(&s.config, &["run", "--json", "--now", &ago(1)]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        json(&out)["sources"][0]["remotes"][0]["uploaded"][0]["full"],
        false
    );

    // verify --json and restore --json, parsed.
    let out = subvault(&s.config, &["verify", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let v = json(&out);
    assert_eq!(
        (v["ok"].clone(), v["checked"].clone()),
        (true.into(), 2.into())
    );
    let objects = v["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    assert!(objects.iter().all(|o| o["result"] == "ok"), "{v:#}");
    let target = s.fs.path().join("restored");
    fs::create_dir(&target).unwrap();
    let to = target.to_str().unwrap();
    let out = subvault(&s.config, &["restore", "--to", to, "--dry-run", "--json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let dry = json(&out);
    assert_eq!(dry["steps"].as_array().unwrap().len(), 2);
    assert_eq!(dry["steps"][0]["full"], true);
    assert!(dry["restored"].is_null());
    let out = subvault(&s.config, &["restore", "--to", to, "--json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r = json(&out);
    let path = PathBuf::from(r["restored"]["path"].as_str().unwrap());
    assert_eq!(fs::read_to_string(path.join("file")).unwrap(), "changed\n");
    assert_eq!(r["restored"]["received"].as_array().unwrap().len(), 2);
    assert_eq!(r["leaf"]["key"], dry["leaf"]["key"]);

    // Fresh for 2h, stale for 30m; the JSON says why.
    let out = subvault(&s.config, &["status", "--max-age", "2h"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status: OK"));
    let out = subvault(&s.config, &["status", "--json", "--max-age", "30m"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let st = json(&out);
    assert_eq!(st["healthy"], false);
    let r = &st["sources"][0]["remotes"][0];
    assert_eq!(r["health"], "stale");
    let age = r["newest_age_seconds"].as_i64().unwrap();
    assert!((3500..3700).contains(&age), "newest is ~1h old: {age}");
    assert_eq!(r["inventory"]["backups"], 2);
    assert_eq!(r["inventory"]["by_storage_class"]["STANDARD"]["count"], 2);
    assert_eq!(st["sources"][0]["last_run"]["last"]["ok"], true);
    assert_eq!(st["sources"][0]["max_age_seconds"], 1800);

    // Someone deletes the full backup: the incremental's chain is broken.
    block_on(async move {
        s3_client()
            .delete_object()
            .bucket(&bucket)
            .key(&full_key)
            .send()
            .await
            .unwrap();
    });
    let out = subvault(&s.config, &["status", "--json", "--max-age", "2h"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let r = &json(&out)["sources"][0]["remotes"][0];
    assert_eq!(r["health"], "broken");
    assert_eq!(r["inventory"]["broken"].as_array().unwrap().len(), 1);
    // -q: the problem lines only.
    let out = subvault(&s.config, &["-q", "status", "--max-age", "2h"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BROKEN") && text.contains("NOT OK"), "{text}");
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_source_max_age_in_the_config_makes_status_fail() {
    let bucket = new_bucket("mon-maxage");
    let s = setup(
        &[("data", &bucket, &s3_endpoint())],
        "",
        "    max_age: 30m\n",
    );
    let out = subvault(&s.config, &["run", "--now", &ago(1)]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = subvault(&s.config, &["status"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("STALE"));
    // --max-age overrides the config.
    let out = subvault(&s.config, &["status", "--max-age", "3h"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn status_names_a_dead_endpoint_in_words() {
    let s = setup(&[("data", "no-such-bucket", "http://127.0.0.1:9")], "", "");
    let out = subvault(&s.config, &["status", "--json"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let st = json(&out);
    let r = &st["sources"][0]["remotes"][0];
    assert_eq!(r["health"], "unreachable");
    let problem = r["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("connection refused") && problem.contains("127.0.0.1:9"),
        "{problem}"
    );
    assert!(!problem.contains("DispatchFailure"), "{problem}");
}

/// Parses a Prometheus text file with prometheus_client's parser (Python):
/// one `name{labels} value` line per sample, labels sorted.
fn parse_prometheus(text: &str) -> Vec<String> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    // Debian's python3, which has the package; not a venv's on PATH.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (integration/setup.sh installs python3-prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not Prometheus text: {}\n{text}",
        show(&out)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn sample(samples: &[String], prefix: &str) -> f64 {
    let line = samples
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix}: {samples:#?}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn the_metrics_file_and_status_prometheus_parse_as_prometheus_text() {
    let bucket = new_bucket("mon-metrics");
    let metrics_dir = tempfile::tempdir().unwrap();
    let metrics = metrics_dir.path().join("subvault.prom");
    let s = setup(
        &[("data", &bucket, &s3_endpoint())],
        &format!("metrics_file: {}\n", metrics.display()),
        "",
    );
    let before = Utc::now().timestamp() as f64;
    // Under the unit's UMask=0077, as systemd starts it.
    let mut umasked = Command::new("sh");
    umasked
        .args(["-c", "umask 077; exec \"$@\"", "sh"])
        .arg(crate::common::subvault_bin())
        .args(subvault_command(&s.config, &["run"]).get_args())
        .envs(
            subvault_command(&s.config, &[])
                .get_envs()
                .filter_map(|(k, v)| Some((k, v?))),
        );
    let out = umasked.output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        fs::metadata(&metrics).unwrap().permissions().mode() & 0o777,
        0o644,
        "node_exporter, another user, reads it"
    );
    // Written atomically: no temp file is left beside it.
    assert_eq!(fs::read_dir(metrics_dir.path()).unwrap().count(), 1);
    let samples = parse_prometheus(&text);
    let success = sample(
        &samples,
        "subvault_source_last_success_timestamp_seconds{source=\"data\"}",
    );
    assert!(success >= before - 1.0, "{success} vs {before}");
    let l = "{remote=\"r-data\",source=\"data\"}";
    assert_eq!(
        sample(&samples, &format!("subvault_remote_objects_uploaded{l}")),
        1.0
    );
    assert_eq!(sample(&samples, &format!("subvault_remote_errors{l}")), 0.0);
    let sent = sample(&samples, &format!("subvault_remote_sent_bytes{l}"));
    let stored: i64 = bucket_objects(&bucket).values().map(|(size, _)| size).sum();
    assert_eq!(sent, stored as f64);
    assert_eq!(
        sample(
            &samples,
            "subvault_backups{remote=\"r-data\",source=\"data\",storage_class=\"STANDARD\"}"
        ),
        1.0
    );
    assert_eq!(sample(&samples, "subvault_last_run_exit_status{}"), 0.0);

    let out = subvault(&s.config, &["status", "--prometheus"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let live = parse_prometheus(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(sample(&live, &format!("subvault_broken_chains{l}")), 0.0);
    assert_eq!(
        sample(
            &live,
            "subvault_source_last_success_timestamp_seconds{source=\"data\"}"
        ),
        success
    );
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_hook_reads_the_summary_and_its_failure_or_timeout_changes_nothing() {
    let bucket = new_bucket("mon-hooks");
    let out_dir = tempfile::tempdir().unwrap();
    let got = out_dir.path().join("summary.json");
    let env = out_dir.path().join("env.txt");
    let hooks = format!(
        "hooks:\n  on_success: [sh, -c, 'cat > {}; env > {}']\n  timeout: 20s\n",
        got.display(),
        env.display()
    );
    let s = setup(&[("data", &bucket, &s3_endpoint())], &hooks, "");
    // Distinct --now times: two runs in one second would name two
    // snapshots alike.
    let out = subvault_command(&s.config, &["run", "--json", "--now", &ago(3)])
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let printed = json(&out);
    let read: Value = serde_json::from_slice(&fs::read(&got).unwrap()).unwrap();
    assert_eq!(
        read["sources"], printed["sources"],
        "the hook read run --json's summary"
    );
    let env = fs::read_to_string(&env).unwrap();
    assert!(env.contains("SUBVAULT_EVENT=success"), "{env}");
    assert!(env.contains("SUBVAULT_EXIT_STATUS=0"), "{env}");
    assert!(!env.contains("AWS_SECRET_ACCESS_KEY"), "no secrets: {env}");

    // A failing hook: a warning line, exit 0, the backup made.
    let failing = "hooks:\n  on_success: [sh, -c, 'echo oops; exit 7']\n";
    let yaml = fs::read_to_string(&s.config).unwrap();
    let yaml = &yaml[..yaml.find("hooks:").unwrap()];
    fs::write(&s.config, format!("{yaml}{failing}")).unwrap();
    fs::write(s.sources[0].join("file"), "second\n").unwrap();
    let out = subvault(&s.config, &["run", "--now", &ago(2)]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hook on_success failed") && stderr.contains("oops"),
        "{stderr}"
    );
    assert_eq!(bucket_objects(&bucket).len(), 2);

    // A hook that hangs is killed at its timeout; the run still exits 0.
    let hanging = "hooks:\n  on_success: [sleep, '60']\n  timeout: 1s\n";
    fs::write(&s.config, format!("{yaml}{hanging}")).unwrap();
    fs::write(s.sources[0].join("file"), "third\n").unwrap();
    let started = Instant::now();
    let out = subvault(&s.config, &["run", "--now", &ago(1)]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&out.stderr).contains("killed after the hook timeout"));
    assert_eq!(bucket_objects(&bucket).len(), 3);
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_held_run_lock_exits_3_and_attempts_nothing() {
    let bucket = new_bucket("mon-lock");
    let s = setup(&[("data", &bucket, &s3_endpoint())], "", "");
    // -q, for cron: a run that goes well prints nothing.
    let out = subvault(&s.config, &["-q", "run"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        show(&out)
    );
    let locks: Vec<_> = fs::read_dir(s.dir.path().join("locks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .collect();
    assert_eq!(locks.len(), 1, "{locks:?}");
    // Another process holds the run lock (flock(1), as a second run would).
    let mut holder = Command::new("flock")
        .arg(&locks[0])
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(s.sources[0].join("file"), "changed\n").unwrap();
    let out = subvault(&s.config, &["run"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(code(&out), 3, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another subvault run"));
    assert_eq!(bucket_objects(&bucket).len(), 1, "nothing uploaded");
}

#[test]
#[ignore = "needs root + btrfs + S3"]
fn a_slow_source_does_not_hold_back_a_fast_one() {
    let slow_bucket = new_bucket("mon-slow");
    let fast_bucket = new_bucket("mon-fast");
    // Every request to the slow remote waits 400 ms (the proxy serves one at
    // a time, so its uploads crawl).
    let slow = FaultProxy::start(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(400));
        None
    }));
    let s = setup(
        &[
            ("slow", &slow_bucket, &slow.url),
            ("fast", &fast_bucket, &s3_endpoint()),
        ],
        "max_parallel_sources: 2\n",
        "",
    );
    let out = subvault(&s.config, &["run", "--json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let run = json(&out);
    let (slow_rec, fast_rec) = (&run["sources"][0], &run["sources"][1]);
    assert_eq!(slow_rec["source"], "slow");
    assert_eq!(fast_rec["source"], "fast");
    // The fast source started before the slow one ended (it did not wait for
    // it, as it would with max_parallel_sources: 1) and ended first.
    assert!(
        time(&fast_rec["started"]) < time(&slow_rec["finished"]),
        "{run:#}"
    );
    assert!(
        time(&fast_rec["finished"]) < time(&slow_rec["finished"]),
        "{run:#}"
    );
    assert_eq!(bucket_objects(&slow_bucket).len(), 1);
    assert_eq!(bucket_objects(&fast_bucket).len(), 1);
}

/// A socket standing in for journald's stream: `JOURNAL_STREAM` names its
/// device and inode, as systemd does for a unit's stderr.
fn journal_socket() -> (UnixStream, OwnedFd, String) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs = OwnedFd::from(theirs);
    let md = fs::File::from(theirs.try_clone().unwrap())
        .metadata()
        .unwrap();
    (ours, theirs, format!("{}:{}", md.dev(), md.ino()))
}

fn stderr_through(cmd: &mut Command, journal: Option<&str>) -> String {
    let (mut ours, theirs, stream) = journal_socket();
    cmd.stderr(Stdio::from(theirs))
        .stdout(Stdio::null())
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID");
    cmd.env("JOURNAL_STREAM", journal.unwrap_or(&stream));
    let mut child = cmd.spawn().unwrap();
    // Our copy of the write end is in `cmd`; drop it so reading sees EOF.
    drop(std::mem::replace(cmd, Command::new("true")));
    child.wait().unwrap();
    let mut text = String::new();
    use std::io::Read;
    ours.read_to_string(&mut text).unwrap();
    text
}

fn config_with_a_warning(dir: &Path) -> PathBuf {
    // A secret in a file others may read: a warning, not an error.
    let config = dir.join("config.yaml");
    fs::write(
        &config,
        "timezone: UTC\nsources:\n  - path: /srv/a\n    snapshots: /srv/snaps\n    \
         upload_to_remotes: [{id: r, preserve: 1d}]\nremotes:\n  - id: r\n    s3:\n      \
         bucket: b\n      endpoint: {aws_access_key_id: AKID, aws_secret_access_key: hush}\n",
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    config
}

#[test]
fn lines_carry_journald_priorities_when_stderr_is_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing.yaml");
    let text = stderr_through(&mut subvault_command(&bad, &["run"]), None);
    assert!(
        text.starts_with("<3>subvault: "),
        "an error at err: {text:?}"
    );

    let config = config_with_a_warning(dir.path());
    let text = stderr_through(&mut subvault_command(&config, &["config", "check"]), None);
    assert!(
        !text.is_empty() && text.lines().all(|l| l.starts_with("<4>warning: ")),
        "warnings at warning: {text:?}"
    );
    assert!(!text.contains("hush"));

    // JOURNAL_STREAM naming another stream (stderr redirected elsewhere by
    // the unit): plain lines.
    let text = stderr_through(&mut subvault_command(&bad, &["run"]), Some("1:1"));
    assert!(text.starts_with("subvault: "), "{text:?}");
}

#[test]
fn quiet_config_check_prints_no_summary_and_json_parses() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_a_warning(dir.path());
    let out = subvault(&config, &["-q", "config", "check"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));

    let out = subvault(&config, &["config", "check", "--json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["sources"][0]["name"], "a");
    assert_eq!(v["sources"][0]["upload_to_remotes"][0]["preserve"], "1d");
    assert_eq!(v["remotes"][0]["kind"], "s3");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hush"));

    fs::write(&config, "timezone: UTC\nsourcez: []\n").unwrap();
    let out = subvault(&config, &["config", "check", "--json"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["line"], 2);
    assert!(v["error"]["message"].as_str().unwrap().contains("sourcez"));
}

#[test]
fn help_man_page_and_completions_come_from_the_parser() {
    let none = Path::new("/nonexistent/config.yaml");
    let out = subvault(none, &["--help"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit status:") && help.contains("3    another run"),
        "{help}"
    );

    let out = subvault(none, &["man"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let man = String::from_utf8_lossy(&out.stdout);
    for needle in [
        ".TH subvault 1",
        ".SH \"EXIT STATUS\"",
        ".SH \"SUBVAULT STATUS\"",
    ] {
        assert!(man.contains(needle), "man page lacks {needle:?}");
    }
    assert!(
        man.contains("\\-\\-max\\-age"),
        "status options are in the man page"
    );

    for (shell, needle) in [
        ("bash", "--prometheus"),
        ("zsh", "--max-age"),
        ("fish", "prometheus"),
    ] {
        let out = subvault(none, &["completions", shell]);
        assert_eq!(code(&out), 0, "{}", show(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(needle), "{shell} completion lacks {needle}");
    }
}
