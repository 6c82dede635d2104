//! `subvault config check`: validate the config file and summarize it.
//!
//! The summary is what a user checks before trusting a config: which
//! subvolumes go where, kept for how long, compressed how. It never prints a
//! credential, a connection string (either may hold a password), the
//! `user:password@` of an endpoint URL or a passphrase on a `pipe_through`
//! command line. Warnings (secrets in a file others may read, `pipe_through`
//! without `restore_pipe_through`) follow on stderr, one `warning:` line each;
//! they do not change the exit status.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::config::{Config, ConfigError, RemoteKind, Source, UploadConfig, Verify};
use crate::core::policy::Timeframe;
use crate::errors::{redact_url, EXIT_USAGE};
use crate::stream::show_command;

/// Arguments of `subvault config check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckArgs {
    /// Print the result as one JSON object (docs/json.md): `ok`, the error
    /// with its line and column, the warnings, the sources and remotes.
    #[arg(long)]
    pub json: bool,
}

/// Validate `config_path`; print a summary to stdout and return 0, or print the
/// one-line error to stderr and return 2. With `--json` both go to stdout as
/// one object (the exit status is the same).
pub fn execute(config_path: &Path, args: &CheckArgs) -> anyhow::Result<i32> {
    let loaded = Config::load(config_path);
    if args.json {
        let report = match &loaded {
            Ok(config) => CheckReport::valid(config),
            Err(e) => CheckReport::invalid(config_path, e),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(if loaded.is_ok() { 0 } else { EXIT_USAGE });
    }
    match loaded {
        Ok(config) => {
            if !super::quiet() {
                print!("{}", summary(&config));
            }
            for w in config.warnings() {
                super::journal::warning(&format!("warning: {w}"));
            }
            // Key files are read too: one that cannot be used fails here
            // rather than at the first run.
            for remote in &config.remotes {
                match crate::ops::remotes::load_keys(remote) {
                    Ok(Some(k)) => println!(
                        "key file {}: ok ({} recipient(s), {})",
                        k.path.display(),
                        k.recipients.len(),
                        if k.can_decrypt() {
                            "with identity: can restore"
                        } else {
                            "no identity: write-only, cannot restore or verify"
                        }
                    ),
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("{e}");
                        return Ok(EXIT_USAGE);
                    }
                }
            }
            Ok(0)
        }
        Err(e) => {
            super::journal::error(&e.to_string());
            Ok(EXIT_USAGE)
        }
    }
}

/// `config check --json` (schema in docs/json.md). Never holds a secret: no
/// keys, no connection strings, no `pipe_through` arguments, endpoints
/// without `user:password@`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Schema version.
    pub version: u32,
    /// The config file.
    pub path: String,
    /// True when the file is valid.
    pub ok: bool,
    /// Why it is not.
    pub error: Option<CheckError>,
    /// Warnings about a valid file, one line each.
    pub warnings: Vec<String>,
    /// The sources (empty when invalid).
    pub sources: Vec<CheckSource>,
    /// The remotes (empty when invalid).
    pub remotes: Vec<CheckRemote>,
}

/// Where and why a config is invalid.
#[derive(Debug, Serialize)]
pub struct CheckError {
    /// The one-line message, as printed without --json.
    pub message: String,
    /// 1-based line, when the error has a place.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
}

/// A source in brief.
#[derive(Debug, Serialize)]
pub struct CheckSource {
    /// Its name.
    pub name: String,
    /// The subvolume.
    pub path: String,
    /// Its snapshot directory.
    pub snapshots: String,
    /// `checkpoint` or `backup` for a PostgreSQL source.
    pub postgres_mode: Option<&'static str>,
    /// `max_age`, seconds.
    pub max_age_seconds: Option<u64>,
    /// Where it goes.
    pub upload_to_remotes: Vec<CheckUpload>,
}

/// One `upload_to_remotes` entry in brief.
#[derive(Debug, Serialize)]
pub struct CheckUpload {
    /// The remote's id.
    pub remote: String,
    /// The policy as written (`1y 3m 30d 24h`).
    pub preserve: String,
    /// The policy in words.
    pub preserve_described: String,
    /// The codec (and level).
    pub compression: String,
    /// Number of `pipe_through` commands (their arguments may hold secrets).
    pub pipe_through_commands: usize,
}

/// A remote in brief.
#[derive(Debug, Serialize)]
pub struct CheckRemote {
    /// Its id.
    pub id: String,
    /// `s3` or `local`.
    pub kind: &'static str,
    /// Where it stores, credentials removed.
    pub location: String,
    /// `rate_limit`, bytes per second.
    pub rate_limit_bytes_per_second: Option<u64>,
}

impl CheckReport {
    fn valid(config: &Config) -> CheckReport {
        CheckReport {
            version: 1,
            path: config.path.display().to_string(),
            ok: true,
            error: None,
            warnings: config.warnings(),
            sources: config
                .sources
                .iter()
                .map(|s| CheckSource {
                    name: s.name.clone(),
                    path: s.path.display().to_string(),
                    snapshots: s.snapshots.display().to_string(),
                    postgres_mode: s.postgres.as_ref().map(|p| p.mode.as_str()),
                    max_age_seconds: s.max_age.map(|d| d.as_secs()),
                    upload_to_remotes: s
                        .upload_to_remotes
                        .iter()
                        .map(|u| CheckUpload {
                            remote: u.id.clone(),
                            preserve: u.preserve.to_string(),
                            preserve_described: u.preserve.describe(),
                            compression: u.compression.to_string(),
                            pipe_through_commands: u.pipe_through.len(),
                        })
                        .collect(),
                })
                .collect(),
            remotes: config
                .remotes
                .iter()
                .map(|r| CheckRemote {
                    id: r.id.clone(),
                    kind: match r.kind {
                        RemoteKind::S3(_) => "s3",
                        RemoteKind::Local(_) => "local",
                    },
                    location: r.location(),
                    rate_limit_bytes_per_second: r.rate_limit,
                })
                .collect(),
        }
    }

    fn invalid(path: &Path, e: &ConfigError) -> CheckReport {
        let (line, column) = e.position().unzip();
        CheckReport {
            version: 1,
            path: path.display().to_string(),
            ok: false,
            error: Some(CheckError {
                message: e.to_string(),
                line,
                column,
            }),
            warnings: Vec::new(),
            sources: Vec::new(),
            remotes: Vec::new(),
        }
    }
}

/// The human summary of a valid config.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the `let _` keeps that visible.
    let _ = writeln!(out, "{}: OK", config.path.display());
    let _ = writeln!(out, "time zone: {}", config.timezone.name());
    let _ = writeln!(out, "sources:");
    for source in &config.sources {
        write_source(&mut out, config, source);
    }
    let _ = writeln!(out, "remotes:");
    for remote in &config.remotes {
        match &remote.kind {
            RemoteKind::S3(s3) => {
                let ep = &s3.endpoint;
                let _ = writeln!(
                    out,
                    "  {}: s3 bucket {:?}, prefix {:?}",
                    remote.id, s3.bucket, s3.prefix
                );
                let url = ep.endpoint_url.as_deref().map(redact_url);
                let _ = writeln!(
                    out,
                    "    endpoint: {}; region: {}; profile: {}",
                    url.as_deref().unwrap_or("AWS default"),
                    ep.region_name.as_deref().unwrap_or("from AWS config"),
                    ep.profile_name.as_deref().unwrap_or("default"),
                );
                let keys = if ep.has_static_keys() {
                    "static keys from this file"
                } else if ep.access_key_id.is_some() || ep.secret_access_key.is_some() {
                    "INCOMPLETE static keys (need both aws_access_key_id and aws_secret_access_key)"
                } else {
                    "AWS default chain (environment, profile, instance role)"
                };
                let verify = match &ep.verify {
                    Verify::Default => "verified".to_string(),
                    Verify::Disabled => "NOT verified".to_string(),
                    Verify::CaBundle(p) => format!("verified against {}", p.display()),
                };
                let style = if ep.path_style() {
                    "path"
                } else {
                    "virtual-host"
                };
                let _ = writeln!(
                    out,
                    "    credentials: {keys}; TLS {verify}; {style}-style requests"
                );
            }
            RemoteKind::Local(local) => {
                let _ = writeln!(
                    out,
                    "  {}: local directory {}",
                    remote.id,
                    local.path.display()
                );
            }
        }
        match &remote.encryption {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "    encrypted (age) and authenticated, key file {}",
                    e.key_file.display()
                );
            }
            None => {
                let _ = writeln!(out, "    not encrypted");
            }
        }
    }
    let safety = &config.safety;
    let _ = writeln!(
        out,
        "safety: a run prunes at most {:.0}% of a remote's backups or a source's snapshots \
         (at least 2; more needs --allow-large-prune); refuses a time more than {} before the \
         newest snapshot or backup; aborts unfinished uploads older than {}",
        safety.prune_budget * 100.0,
        humantime_short(safety.clock_tolerance),
        humantime_short(safety.abort_incomplete_uploads_after)
    );
    out
}

/// A duration as the config writes it (`15m`, `1d`, `1h30m`).
fn humantime_short(d: std::time::Duration) -> String {
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// One source and its uploads.
fn write_source(out: &mut String, config: &Config, source: &Source) {
    let _ = writeln!(out, "  {}: {}", source.name, source.path.display());
    let _ = writeln!(out, "    snapshots in {}", source.snapshots.display());
    if let Some(pg) = &source.postgres {
        let _ = writeln!(
            out,
            "    postgresql: {} mode, timeout {}s",
            pg.mode.as_str(),
            pg.timeout.as_secs_f64()
        );
    }
    if source.dedupe.after_run {
        let _ = writeln!(out, "    dedupe after each run");
    }
    for up in &source.upload_to_remotes {
        let is_s3 = matches!(
            config.remote(&up.id).map(|r| &r.kind),
            Some(RemoteKind::S3(_))
        );
        write_upload(out, up, is_s3);
    }
}

/// One `upload_to_remotes` entry; storage classes and object lock only mean
/// something for S3.
fn write_upload(out: &mut String, up: &UploadConfig, is_s3: bool) {
    let _ = writeln!(out, "    -> {}: keep {}", up.id, up.preserve.describe());
    let mut how = format!("compression {}", up.compression);
    let show = |cmds: &[Vec<String>]| -> String {
        let shown: Vec<String> = cmds.iter().map(|c| show_command(c)).collect();
        shown.join(" | ")
    };
    if !up.pipe_through.is_empty() {
        let _ = write!(how, ", piped through {}", show(&up.pipe_through));
    }
    if !up.restore_pipe_through.is_empty() {
        let _ = write!(
            how,
            ", read back through {}",
            show(&up.restore_pipe_through)
        );
    }
    let _ = writeln!(out, "       {how}");
    if !is_s3 {
        return;
    }
    let mut classes: Vec<String> = Timeframe::ALL
        .iter()
        .filter_map(|tf| {
            up.storage_class
                .by_timeframe
                .iter()
                .find(|(t, _)| t == tf)
                .map(|(_, c)| format!("{} {c}", tf.adjective()))
        })
        .collect();
    if classes.is_empty() {
        classes.push(up.storage_class.default.clone());
    } else {
        classes.push(format!("otherwise {}", up.storage_class.default));
    }
    let _ = writeln!(out, "       storage class: {}", classes.join(", "));
    if let Some(lock) = &up.object_lock {
        let _ = writeln!(
            out,
            "       object lock: {} until the end of the last preserved span",
            lock.mode.as_str()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_everything_but_secrets() {
        let text = "\
timezone: Europe/Berlin
sources:
  - path: /srv/pg
    snapshots: /srv/snaps
    postgres: {connection: 'host=/run/postgresql password=pgpass123', mode: backup}
    upload_to_remotes:
      - id: aws
        preserve: 1y 3m 30d 24h
        pipe_through: [[gpg, --encrypt, -r, me@example.com, --passphrase, gpgpass456]]
        restore_pipe_through: [[gpg, --decrypt, '--passphrase=gpgpass456']]
        storage_class: {yearly: DEEP_ARCHIVE}
        object_lock: {mode: GOVERNANCE}
remotes:
  - id: aws
    s3:
      bucket: bkt
      prefix: host/
      endpoint: {endpoint_url: 'https://minio:urlpass789@s3.lan:9000', aws_access_key_id: AKIDSECRETISH, aws_secret_access_key: verysecret, region_name: eu-central-1}
";
        let config = Config::from_str_at(text, Path::new("/x/c.yaml")).unwrap();
        let s = summary(&config);
        for needle in [
            "time zone: Europe/Berlin",
            "pg: /srv/pg",
            "snapshots in /srv/snaps",
            "postgresql: backup mode",
            "keep 1 yearly (full), 3 monthly, 30 daily, 24 hourly",
            "compression none, piped through gpg --encrypt -r me@example.com --passphrase ***, \
             read back through gpg --decrypt --passphrase=***",
            "endpoint: https://s3.lan:9000;",
            "yearly DEEP_ARCHIVE, otherwise STANDARD",
            "object lock: GOVERNANCE",
            "s3 bucket \"bkt\", prefix \"host/\"",
            "region: eu-central-1",
            "static keys from this file",
        ] {
            assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
        }
        for secret in [
            "pgpass123",
            "verysecret",
            "AKIDSECRETISH",
            "urlpass789",
            "gpgpass456",
        ] {
            assert!(!s.contains(secret), "summary leaks {secret:?}:\n{s}");
        }
    }

    #[test]
    fn execute_returns_2_on_a_bad_file() {
        let status = execute(
            Path::new("/nonexistent/subvault-config.yaml"),
            &CheckArgs::default(),
        )
        .unwrap();
        assert_eq!(status, 2);
    }
}
