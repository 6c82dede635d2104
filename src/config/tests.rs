//! Loading good configs: btrfs2s3 compatibility, defaults, credentials, and a
//! few error positions checked in-process (the full error table runs the real
//! binary in `tests/integration/config_errors.rs`).

use std::path::Path;
use std::time::Duration;

use super::*;

const FILE: &str = "/etc/subvault/config.yaml";

fn load(text: &str) -> Config {
    match Config::from_str_at(text, Path::new(FILE)) {
        Ok(c) => c,
        Err(e) => panic!("config should load, got: {e}"),
    }
}

fn load_err(text: &str) -> ConfigError {
    match Config::from_str_at(text, Path::new(FILE)) {
        Ok(c) => panic!("config should be rejected, loaded: {c:?}"),
        Err(e) => e,
    }
}

fn s3(remote: &RemoteConfig) -> &S3Config {
    match &remote.kind {
        RemoteKind::S3(s3) => s3,
        RemoteKind::Local(_) => panic!("remote {} should be s3", remote.id),
    }
}

#[test]
fn btrfs2s3_minimal_readme_example_loads_with_defaults() {
    let c = load(
        "\
timezone: America/Los_Angeles
sources:
  - path: /path/to/your/subvolume
    snapshots: /path/to/your/snapshots
    upload_to_remotes:
      - id: aws
        preserve: 1y 3m 30d 24h
remotes:
  - id: aws
    s3:
      bucket: my-s3-bucket-name
",
    );
    assert_eq!(c.path, Path::new(FILE));
    assert_eq!(c.timezone, chrono_tz::America::Los_Angeles);
    let src = c
        .source("subvolume")
        .expect("name defaults to the path's base name");
    assert_eq!(src.snapshots, Path::new("/path/to/your/snapshots"));
    assert!(src.postgres.is_none());
    assert!(!src.dedupe.after_run);
    let up = &src.upload_to_remotes[0];
    assert_eq!(up.id, "aws");
    assert_eq!(up.preserve, "1y 3m 30d 24h".parse::<Policy>().unwrap());
    assert_eq!(
        up.compression,
        Compression {
            codec: Codec::Zstd,
            level: None,
            threads: None
        }
    );
    assert!(up.pipe_through.is_empty());
    assert_eq!(
        up.storage_class.for_timeframe(Some(Timeframe::Year)),
        "STANDARD"
    );
    assert_eq!(up.storage_class.r#for(None), "STANDARD");
    assert!(up.object_lock.is_none());
    let s3 = s3(c.remote("aws").unwrap());
    assert_eq!(s3.bucket, "my-s3-bucket-name");
    assert_eq!(s3.prefix, "");
    assert_eq!(s3.endpoint.endpoint_url, None);
    assert!(
        !s3.endpoint.path_style(),
        "AWS proper uses virtual-host style"
    );
    assert_eq!(s3.endpoint.verify, Verify::Default);
    assert!(c.remote("nope").is_none() && c.source("nope").is_none());
}

#[test]
fn shipped_btrfs2s3_example_loads_and_honours_credentials() {
    let c = load(include_str!("../../config-examples/btrfs2s3.yaml"));
    let up = &c.sources[0].upload_to_remotes[0];
    assert_eq!(up.pipe_through[0], vec!["gzip".to_string()]);
    assert_eq!(up.pipe_through[1][0], "gpg");
    // btrfs2s3 configs compress in pipe_through: no second compression by default.
    assert_eq!(up.compression.codec, Codec::None);
    let ep = &s3(&c.remotes[0]).endpoint;
    assert_eq!(ep.profile_name.as_deref(), Some("my-profile-name"));
    assert_eq!(ep.region_name.as_deref(), Some("us-west-2"));
    assert!(
        ep.has_static_keys(),
        "keys in the file are honoured, not ignored"
    );
    assert_eq!(ep.access_key_id.as_deref(), Some("ABCXYZ..."));
    assert!(!ep.secret_access_key.as_ref().unwrap().expose().is_empty());
    assert_eq!(ep.verify, Verify::Disabled);
    assert!(
        ep.path_style(),
        "custom endpoint URL defaults to path style"
    );
}

#[test]
fn every_shipped_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("config-examples exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::from_str_at(&text, &path) {
            panic!("{} does not load: {e}", path.display());
        }
        count += 1;
    }
    assert!(
        count >= 5,
        "expected at least 5 example configs, found {count}"
    );
}

// One config that sets every field, checked field by field: long, because the
// schema is, and one file shows that every field is read together with all others.
#[test]
fn full_schema_with_every_option() {
    let c = load(
        "\
timezone: Europe/Berlin
sources:
  - path: /srv/pg/
    snapshots: /srv/snapshots
    name: pg
    postgres:
      connection: \"host=/run/postgresql user=postgres password=hunter2\"
      mode: backup
      timeout: 2m30s
      pitr_window: 7d
      sslmode: verify-full
      sslrootcert: /etc/ssl/pg-ca.pem
    dedupe:
      after_run: true
    upload_to_remotes:
      - id: aws
        preserve: '*y 12m 30d'
        compression: {codec: zstd, level: 19, threads: 2}
        storage_class:
          yearly: DEEP_ARCHIVE
          monthly: GLACIER_IR
          default: STANDARD_IA
        object_lock: {mode: COMPLIANCE}
      - id: disk
        preserve: 7d
        compression: gzip
  - path: /srv/data
    snapshots: /srv/snapshots
    upload_to_remotes:
      - id: disk
        preserve: 1d
        compression: {codec: gzip, level: 9}
remotes:
  - id: aws
    s3:
      bucket: b
      prefix: host1/
      endpoint:
        endpoint_url: https://s3.example.com
        aws_access_key_id: AKIAEXAMPLE
        aws_secret_access_key: s3cr3t-value
        verify: certs/ca.pem
        force_path_style: false
        api_version: 2006-03-01
  - id: disk
    local:
      path: /mnt/backup
",
    );
    let pg = c.source("pg").unwrap();
    let pgc = pg.postgres.as_ref().unwrap();
    assert_eq!(pgc.mode, PgMode::Backup);
    assert_eq!(pgc.timeout, Duration::from_secs(150));
    assert_eq!(pgc.pitr_window, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(pgc.sslmode, Some(crate::config::SslMode::VerifyFull));
    assert_eq!(
        pgc.sslrootcert.as_deref(),
        Some(std::path::Path::new("/etc/ssl/pg-ca.pem"))
    );
    assert!(pgc.connection.expose().contains("hunter2"));
    assert!(pg.dedupe.after_run);
    let up = &pg.upload_to_remotes[0];
    assert_eq!(
        up.compression,
        Compression {
            codec: Codec::Zstd,
            level: Some(19),
            threads: Some(2)
        }
    );
    assert_eq!(
        up.storage_class.for_timeframe(Some(Timeframe::Year)),
        "DEEP_ARCHIVE"
    );
    assert_eq!(
        up.storage_class.for_timeframe(Some(Timeframe::Month)),
        "GLACIER_IR"
    );
    assert_eq!(
        up.storage_class.for_timeframe(Some(Timeframe::Day)),
        "STANDARD_IA"
    );
    assert_eq!(up.storage_class.for_timeframe(None), "STANDARD_IA");
    assert_eq!(
        up.object_lock,
        Some(ObjectLockConfig {
            mode: ObjectLockMode::Compliance
        })
    );
    assert_eq!(pg.upload_to_remotes[1].compression.codec, Codec::Gzip);
    let data = c.source("data").unwrap();
    assert_eq!(data.upload_to_remotes[0].compression.level, Some(9));

    let ep = &s3(c.remote("aws").unwrap()).endpoint;
    assert_eq!(s3(c.remote("aws").unwrap()).prefix, "host1/");
    assert!(!ep.path_style(), "explicit force_path_style: false wins");
    assert_eq!(
        ep.verify,
        Verify::CaBundle("/etc/subvault/certs/ca.pem".into())
    );
    match &c.remote("disk").unwrap().kind {
        RemoteKind::Local(l) => assert_eq!(l.path, Path::new("/mnt/backup")),
        RemoteKind::S3(_) => panic!("disk is local"),
    }

    // Secrets never show in Debug output.
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("s3cr3t-value"), "{debug}");
    assert_eq!(format!("{}", ep.secret_access_key.as_ref().unwrap()), "***");
}

#[test]
fn postgres_defaults() {
    let c = load(
        "\
timezone: UTC
sources:
  - path: /srv/pg
    snapshots: /srv/snaps
    postgres:
      connection: postgres://backup@localhost/postgres
    upload_to_remotes: [{id: r, preserve: 1d}]
remotes: [{id: r, local: {path: /backup}}]
",
    );
    let pg = c.sources[0].postgres.as_ref().unwrap();
    assert_eq!(pg.mode, PgMode::Checkpoint);
    assert_eq!(pg.timeout, Duration::from_secs(60));
    assert_eq!(pg.pitr_window, None);
    assert_eq!(pg.sslmode, None);
}

#[test]
fn explicit_compression_wins_over_the_pipe_through_default() {
    let c = load(
        "\
timezone: UTC
sources:
  - path: /a
    snapshots: /s
    upload_to_remotes:
      - id: r
        preserve: 1d
        pipe_through: [[gpg, --encrypt, -r, me@example.com]]
        compression: zstd
remotes: [{id: r, local: {path: /backup}}]
",
    );
    assert_eq!(
        c.sources[0].upload_to_remotes[0].compression.codec,
        Codec::Zstd
    );
}

#[test]
fn empty_endpoint_section_counts_as_absent() {
    let c = load(
        "\
timezone: UTC
sources: [{path: /a, snapshots: /s, upload_to_remotes: [{id: r, preserve: 1d}]}]
remotes:
  - id: r
    s3:
      bucket: b
      endpoint:
        # everything commented out
",
    );
    assert!(s3(&c.remotes[0]).endpoint.endpoint_url.is_none());
}

#[test]
fn merge_keys_are_resolved() {
    let c = load(
        "\
timezone: UTC
sources:
  - path: /a
    snapshots: /s
    upload_to_remotes:
      - &up {id: r, preserve: 1y 12m}
  - path: /b
    snapshots: /s
    upload_to_remotes:
      - <<: *up
        preserve: 7d
remotes: [{id: r, local: {path: /backup}}]
",
    );
    assert_eq!(c.sources[1].upload_to_remotes[0].id, "r");
    assert_eq!(
        c.sources[1].upload_to_remotes[0].preserve,
        "7d".parse::<Policy>().unwrap()
    );
}

#[test]
fn errors_are_one_line_with_position_and_field() {
    let e = load_err(
        "\
timezone: UTC
sources:
  - path: /a
    snapshots: /s
    upload_to_remotes:
      - id: r
        preserve: 1x
remotes: [{id: r, local: {path: /backup}}]
",
    );
    assert_eq!(e.position(), Some((7, 19)));
    let line = e.to_string();
    assert!(
        line.starts_with("/etc/subvault/config.yaml:7:19: sources[0].upload_to_remotes[0].preserve: bad policy \"1x\""),
        "{line}"
    );
    assert!(!line.contains('\n'));
    assert!(e.is_usage());
}

#[test]
fn secrets_are_not_echoed_in_errors() {
    let e = load_err(
        "\
timezone: UTC
sources: [{path: /a, snapshots: /s, upload_to_remotes: [{id: r, preserve: 1d}]}]
remotes:
  - id: r
    s3:
      bucket: b
      endpoint: {aws_secret_access_key: [topsecret]}
",
    );
    let line = e.to_string();
    assert!(
        line.contains("aws_secret_access_key") && !line.contains("topsecret"),
        "{line}"
    );
    // An endpoint URL is echoed without its user:password@.
    let e = load_err(
        "\
timezone: UTC
sources: [{path: /a, snapshots: /s, upload_to_remotes: [{id: r, preserve: 1d}]}]
remotes:
  - id: r
    s3:
      bucket: b
      endpoint: {endpoint_url: 'ftp://minio:urlsecret@s3.lan'}
",
    );
    let line = e.to_string();
    assert!(
        line.contains("\"ftp://s3.lan\" must start with http") && !line.contains("urlsecret"),
        "{line}"
    );
}

#[test]
fn unreadable_file_error() {
    let e = Config::load(Path::new("/nonexistent/subvault.yaml")).unwrap_err();
    let line = e.to_string();
    assert!(
        line.starts_with("/nonexistent/subvault.yaml: cannot read config: "),
        "{line}"
    );
    assert!(line.contains("point -c at your config"), "{line}");
    assert_eq!(e.position(), None);

    // A directory is not a config file: the OS error, without the not-found hint.
    let dir = tempfile::tempdir().unwrap();
    let line = Config::load(dir.path()).unwrap_err().to_string();
    assert!(
        line.contains("cannot read config: ") && !line.contains("point -c"),
        "{line}"
    );
}

/// Cases whose position is easy to state in-process; the big table is in
/// tests/integration/config_errors.rs.
fn error_at(text: &str) -> (usize, usize, String) {
    let e = load_err(text);
    let (line, column) = e.position().expect("a position");
    (line, column, e.to_string())
}

#[test]
fn half_a_static_key_pair_is_rejected() {
    let (line, column, msg) = error_at(
        "\
timezone: UTC
sources: [{path: /a, snapshots: /s, upload_to_remotes: [{id: r, preserve: 1d}]}]
remotes:
  - id: r
    s3:
      bucket: b
      endpoint:
        aws_access_key_id: AKIAEXAMPLE
",
    );
    assert_eq!((line, column), (8, 28), "{msg}");
    assert!(
        msg.contains("remotes[0].s3.endpoint.aws_access_key_id: "),
        "{msg}"
    );
    assert!(msg.contains("needs aws_secret_access_key"), "{msg}");
}

#[test]
fn object_lock_on_a_local_remote_is_rejected() {
    let (line, column, msg) = error_at(
        "\
timezone: UTC
sources:
  - path: /a
    snapshots: /s
    upload_to_remotes:
      - id: disk
        preserve: 1d
        object_lock: {mode: COMPLIANCE}
remotes: [{id: disk, local: {path: /backup}}]
",
    );
    assert_eq!((line, column), (8, 22), "{msg}");
    assert!(
        msg.contains("object_lock: object_lock needs an s3 remote"),
        "{msg}"
    );
}

#[test]
fn timeout_without_unit_is_rejected() {
    let (line, column, msg) = error_at(
        "\
timezone: UTC
sources:
  - path: /a
    snapshots: /s
    postgres: {connection: 'dbname=x', timeout: 60}
    upload_to_remotes: [{id: r, preserve: 1d}]
remotes: [{id: r, local: {path: /backup}}]
",
    );
    assert_eq!((line, column), (5, 49), "{msg}");
    assert!(msg.contains("60 has no unit; write e.g. 60s"), "{msg}");
}

#[test]
fn pitr_window_needs_a_unit_and_a_length() {
    for (value, want) in [
        ("7", "7 has no unit; write e.g. 7d"),
        ("0s", "pitr_window must be longer than zero"),
        ("soon", "soon"),
    ] {
        let (line, _, msg) = error_at(&format!(
            "\
timezone: UTC
sources:
  - path: /a
    snapshots: /s
    postgres: {{connection: 'dbname=x', pitr_window: {value}}}
    upload_to_remotes: [{{id: r, preserve: 1d}}]
remotes: [{{id: r, local: {{path: /backup}}}}]
"
        ));
        assert_eq!(line, 5, "{msg}");
        assert!(msg.contains(want), "{value}: {msg}");
    }
}

#[test]
fn sslmode_is_one_of_libpqs_and_verify_needs_a_ca_file() {
    for (pg, want) in [
        (
            "sslmode: verify",
            "unknown sslmode \"verify\" (expected disable, prefer",
        ),
        (
            "sslmode: verify-full",
            "sslmode verify-full needs sslrootcert",
        ),
        (
            "{sslmode: verify-ca, sslrootcert: ca.pem}",
            "\"ca.pem\" is a relative path",
        ),
    ] {
        let pg = if pg.starts_with('{') {
            format!("postgres: {{connection: x, {}}}", &pg[1..pg.len() - 1])
        } else {
            format!("postgres: {{connection: x, {pg}}}")
        };
        let (line, _, msg) = error_at(&format!(
            "\
timezone: UTC
sources:
  - path: /a
    snapshots: /s
    {pg}
    upload_to_remotes: [{{id: r, preserve: 1d}}]
remotes: [{{id: r, local: {{path: /backup}}}}]
"
        ));
        assert_eq!(line, 5, "{msg}");
        assert!(msg.contains(want), "{pg}: {msg}");
    }
}

#[test]
fn empty_file_and_non_mapping_documents() {
    let (line, column, msg) = error_at("");
    assert_eq!((line, column), (1, 1));
    assert!(msg.contains("(top level): the file is empty"), "{msg}");
    let (line, column, msg) = error_at("# only a comment\n- a\n- b\n");
    assert_eq!((line, column), (2, 1));
    assert!(
        msg.contains("(top level): expected a mapping, found a list"),
        "{msg}"
    );
}

#[test]
fn snapshot_dir_inside_another_source_is_rejected() {
    let (line, column, msg) = error_at(
        "\
timezone: UTC
sources:
  - path: /srv/a
    snapshots: /srv/b/snaps
    upload_to_remotes: [{id: r, preserve: 1d}]
  - path: /srv/b
    snapshots: /srv/snaps
    upload_to_remotes: [{id: r, preserve: 1d}]
remotes: [{id: r, local: {path: /backup}}]
",
    );
    assert_eq!((line, column), (4, 16), "{msg}");
    assert!(
        msg.contains("sources[0].snapshots: the snapshot dir /srv/b/snaps is inside the source /srv/b (sources[1].path)"),
        "{msg}"
    );
}

#[test]
fn sources_may_share_a_snapshot_dir() {
    // btrfs2s3 even requires it; snapshots are told apart by their parent uuid.
    let c = load(
        "\
timezone: UTC
sources:
  - {path: /srv/a, snapshots: /srv/snaps, upload_to_remotes: [{id: r, preserve: 1d}]}
  - {path: /srv/b, snapshots: /srv/snaps, upload_to_remotes: [{id: r, preserve: 1d}]}
remotes: [{id: r, local: {path: /backup}}]
",
    );
    assert_eq!(c.sources.len(), 2);
    assert_eq!(c.sources[0].snapshots, c.sources[1].snapshots);
}

#[test]
fn encryption_takes_an_absolute_key_file_and_nothing_else() {
    let c = load(
        "\
timezone: UTC
sources: [{path: /a, snapshots: /s, upload_to_remotes: [{id: r, preserve: 1d}, {id: d, preserve: 1d}]}]
remotes:
  - id: r
    s3: {bucket: b}
    encryption: {key_file: /etc/subvault/keys/r.key}
  - id: d
    local: {path: /backup}
",
    );
    assert_eq!(
        c.remotes[0].encryption,
        Some(EncryptionConfig {
            key_file: PathBuf::from("/etc/subvault/keys/r.key")
        })
    );
    assert_eq!(c.remotes[1].encryption, None);

    let base = "\
timezone: UTC
sources: [{path: /a, snapshots: /s, upload_to_remotes: [{id: r, preserve: 1d}]}]
remotes:
  - id: r
    local: {path: /backup}
    encryption:
";
    let (line, column, msg) = error_at(&format!(
        "{base}      key_file: /k\n      recipient: age1x\n"
    ));
    assert_eq!((line, column), (8, 7), "{msg}");
    assert!(msg.contains("remotes[0].encryption"), "{msg}");
    assert!(msg.contains("recipient"), "{msg}");
    let (line, column, msg) = error_at(&format!("{base}      key_file: keys/r.key\n"));
    assert_eq!((line, column), (7, 17), "{msg}");
    assert!(msg.contains("relative path"), "{msg}");
    let (_, _, msg) = error_at(&format!("{base}      {{}}\n"));
    assert!(msg.contains("key_file"), "{msg}");
}

/// A config with the given `remotes:` block and one source uploading to `a`.
fn with_remotes(remotes: &str) -> String {
    format!(
        "timezone: UTC\n\
         sources: [{{path: /src, snapshots: /snaps, upload_to_remotes: [{{id: a, preserve: 1d}}]}}]\n\
         remotes:\n{remotes}"
    )
}

#[test]
fn a_prefix_is_a_directory() {
    let c = load(&with_remotes(
        "  - {id: a, s3: {bucket: b, prefix: bk}}\n  - {id: c, s3: {bucket: b, prefix: bk-long/}}\n  - {id: d, s3: {bucket: b2}}\n",
    ));
    assert_eq!(s3(&c.remotes[0]).prefix, "bk/");
    assert_eq!(s3(&c.remotes[1]).prefix, "bk-long/");
    assert_eq!(s3(&c.remotes[2]).prefix, "");
}

#[test]
fn equal_or_nested_remotes_are_rejected_at_the_second_one() {
    // (remotes, the value in the second remote the error points at, what it says)
    for (remotes, at, names) in [
        (
            "  - {id: a, local: {path: /mnt/disk}}\n  - {id: b, local: {path: /mnt/disk/}}\n",
            "/mnt/disk/",
            "\"b\" (local:/mnt/disk/) overlaps remote \"a\" (local:/mnt/disk, at remotes[0].local.path)",
        ),
        (
            "  - {id: a, local: {path: /mnt/disk/sub}}\n  - {id: b, local: {path: /mnt/disk}}\n",
            "/mnt/disk",
            "overlaps remote \"a\"",
        ),
        (
            "  - {id: a, s3: {bucket: b, prefix: bk}}\n  - {id: b, s3: {bucket: b, prefix: bk/host1}}\n",
            "bk/host1",
            "overlaps remote \"a\" (s3://b/bk/ at aws",
        ),
        (
            "  - {id: a, s3: {bucket: b, prefix: bk}}\n  - {id: b, s3: {bucket: b}}\n",
            "b}",
            "\"b\" (s3://b/ at aws)",
        ),
        (
            "  - {id: a, s3: {bucket: b, endpoint: {endpoint_url: 'http://u:pw@Host:9/'}}}\n  - {id: b, s3: {bucket: b, prefix: x, endpoint: {endpoint_url: 'http://host:9'}}}\n",
            "x,",
            "at http://host:9",
        ),
    ] {
        let second = remotes.lines().nth(1).unwrap();
        let pos = (5, second.find(at).unwrap() + 1);
        let (line, column, msg) = error_at(&with_remotes(remotes));
        assert_eq!((line, column), pos, "{msg}");
        assert!(msg.contains(names), "{msg}");
        assert!(msg.contains("would list and prune"), "{msg}");
        assert!(!msg.contains("pw@"), "credentials in the message: {msg}");
    }
}

#[test]
fn remotes_apart_are_accepted() {
    load(&with_remotes(
        "  - {id: a, s3: {bucket: b, prefix: bk}}\n\
         \x20 - {id: b, s3: {bucket: b, prefix: bk-long}}\n\
         \x20 - {id: c, s3: {bucket: other, prefix: bk}}\n\
         \x20 - {id: d, s3: {bucket: b, endpoint: {endpoint_url: 'http://elsewhere:9'}}}\n\
         \x20 - {id: e, local: {path: /mnt/disk}}\n\
         \x20 - {id: f, local: {path: /mnt/disk-2}}\n",
    ));
}

#[test]
fn safety_settings_have_defaults_and_are_checked() {
    let c = load(&with_remotes("  - {id: a, local: {path: /x}}\n"));
    assert_eq!(c.safety, Safety::default());
    assert_eq!(c.safety.prune_budget, 0.5);
    let c = load(&format!(
        "{}safety: {{prune_budget: 20%, clock_tolerance: 1h, abort_incomplete_uploads_after: 2d}}\n",
        with_remotes("  - {id: a, local: {path: /x}}\n")
    ));
    assert_eq!(c.safety.prune_budget, 0.2);
    assert_eq!(c.safety.clock_tolerance, Duration::from_secs(3600));
    assert_eq!(
        c.safety.abort_incomplete_uploads_after,
        Duration::from_secs(2 * 86400)
    );
    for (bad, says) in [
        ("prune_budget: 150%", "share"),
        ("prune_budget: lots", "share"),
        ("clock_tolerance: 15", "no unit"),
        ("abort_incomplete_uploads_after: 10m", "at least 1h"),
        ("prune_limit: 1", "prune_limit"),
    ] {
        let (line, _, msg) = error_at(&format!(
            "{}safety: {{{bad}}}\n",
            with_remotes("  - {id: a, local: {path: /x}}\n")
        ));
        assert_eq!(line, 5, "{msg}");
        assert!(msg.contains(says), "{bad}: {msg}");
    }
}

#[test]
fn a_reader_config_may_leave_out_sources_but_not_list_none() {
    let reader = "\
timezone: UTC
remotes:
  - id: fleet
    s3: {bucket: b, prefix: fleet/}
";
    let c = load(reader);
    assert!(c.sources.is_empty());
    assert_eq!(c.remotes[0].id, "fleet");
    let e = load_err(&format!("{reader}sources: []\n"));
    assert!(
        e.to_string().contains("must list at least one entry"),
        "{e}"
    );
}

#[test]
fn single_put_max_is_a_size_within_bounds() {
    let with = |v: &str| {
        format!(
            "timezone: UTC\nremotes:\n  - id: r\n    single_put_max: {v}\n    s3: {{bucket: b}}\n"
        )
    };
    assert_eq!(
        load(&with("64MiB")).remotes[0].single_put_max,
        Some(64 << 20)
    );
    assert_eq!(
        load(&with("8 MiB")).remotes[0].single_put_max,
        Some(8 << 20)
    );
    let e = load_err(&with("64")).to_string();
    assert!(e.contains("single_put_max") && e.contains("no unit"), "{e}");
    let e = load_err(&with("2GiB")).to_string();
    assert!(e.contains("between 5MiB"), "{e}");
    let e = load_err(&with("64Mi")).to_string();
    assert!(e.contains("unknown unit"), "{e}");
}

#[test]
fn prices_are_a_table_of_known_classes_and_request_kinds() {
    let base = "timezone: UTC\nremotes:\n  - id: r\n    s3: {bucket: b}\n";
    assert!(load(base).prices.is_none(), "no prices: no estimates");
    let c = load(&format!(
        "{base}prices:\n  currency: EUR\n  storage_gb_month: {{STANDARD: 0.02, DEEP_ARCHIVE: 0.001}}\n  \
         requests_per_1000: {{PutObject: 0.005}}\n  min_storage_days: {{GLACIER: 100}}\n"
    ));
    let p = c.prices.unwrap();
    assert_eq!(p.currency, "EUR");
    assert_eq!(p.storage_gb_month["DEEP_ARCHIVE"], 0.001);
    assert_eq!(p.requests_per_1000["PutObject"], 0.005);
    assert_eq!(p.min_storage_days["GLACIER"], 100.0, "overridden");
    assert_eq!(p.min_storage_days["DEEP_ARCHIVE"], 180.0, "S3's by default");
    let e = load_err(&format!(
        "{base}prices:\n  storage_gb_month: {{STANDRAD: 0.02}}\n"
    ));
    assert!(e.to_string().contains("did you mean \"STANDARD\""), "{e}");
    let e = load_err(&format!(
        "{base}prices:\n  requests_per_1000: {{PutObject: -1}}\n"
    ));
    assert!(
        e.to_string().contains("prices.requests_per_1000.PutObject"),
        "{e}"
    );
}
