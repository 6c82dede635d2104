//! `restore --pitr TIME`: which backup a point-in-time recovery starts from
//! (`core::pitr`), from the remote's backups and its WAL archive, and the
//! recovery settings written into the restored copy.

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

use crate::config::{Config, RemoteConfig, Source};
use crate::core::model::Backup;
use crate::core::pitr;
use crate::ops::remotes;
use crate::ops::sources::{backups_of_source, source_uuids};
use crate::postgres::RecoverySettings;
use crate::remote::ObjectStore;

/// The base backup of a point-in-time recovery, and the archive it replays.
#[derive(Debug, Clone)]
pub struct PitrBase {
    /// The backup to restore.
    pub backup: Backup,
    /// When it became consistent.
    pub consistent_at: DateTime<Utc>,
    /// The upload time of the newest archived WAL object.
    pub wal_end: DateTime<Utc>,
    /// WAL objects of the source on the remote, and their bytes.
    pub wal_objects: (usize, u64),
}

/// Lists `rc` and picks the base backup of `source` for a recovery to `target`.
pub async fn choose_base(
    config: &Config,
    rc: &RemoteConfig,
    source: &Source,
    target: DateTime<Utc>,
) -> Result<PitrBase> {
    if source.postgres.is_none() {
        bail!(
            "source {} has no `postgres:` settings: --pitr needs a PostgreSQL source",
            source.name
        );
    }
    let opened = remotes::open(rc.clone()).await?;
    let prefix = opened.store.prefix().to_string();
    let uuid = source_uuids(config).get(&source.name).copied().flatten();
    let backups = backups_of_source(opened.backups.to_vec(), &prefix, source, uuid);
    let summary = crate::ops::wal::summary(&opened, source).await?;
    // Backups older than the archive (WAL retention with `pitr_window`)
    // cannot replay to any later time; the range named on error leaves them out.
    let backups = pitr::reachable_by_archive(backups, summary.first_segment.as_deref());
    let end = summary.newest_upload;
    let (count, bytes) = (summary.objects, summary.bytes);
    let (b, at) = pitr::choose_base(&backups, end, target)
        .map_err(|e| anyhow::anyhow!("--pitr on remote {}: {e}", rc.id))?;
    Ok(PitrBase {
        backup: b.clone(),
        consistent_at: at,
        wal_end: end.expect("choose_base needs WAL"),
        wal_objects: (count, bytes),
    })
}

/// The recovery settings of a restored copy of `source` recovering to
/// `target` with `action`, along `timeline` (`latest`, `current` or an id).
pub fn recovery_settings(
    config: &Config,
    source: &Source,
    target: DateTime<Utc>,
    action: &str,
    timeline: &str,
) -> Result<RecoverySettings> {
    // Linux names a replaced binary "<path> (deleted)" (a package upgrade
    // while this runs); the path itself then holds the new subvault.
    let exe = std::env::current_exe()?;
    let exe = exe.to_string_lossy();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
    let config_path = config
        .path
        .canonicalize()
        .unwrap_or_else(|_| config.path.clone());
    Ok(RecoverySettings {
        restore_command: format!(
            "{} -c {} wal-fetch --source {} %f %p",
            shell_quote(exe),
            shell_quote(&config_path.to_string_lossy()),
            shell_quote(&source.name)
        ),
        target_time: pg_time(target),
        target_action: action.to_string(),
        target_timeline: timeline.to_string(),
    })
}

/// Checks a `--timeline` value: `latest`, `current`, or a timeline id
/// (decimal, as PostgreSQL reads it; 1 or more).
pub fn parse_timeline(s: &str) -> Result<String, String> {
    match s {
        "latest" | "current" => Ok(s.to_string()),
        _ => match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n.to_string()),
            _ => Err(format!(
                "{s:?}: expected latest, current or a timeline id (1, 2, ...)"
            )),
        },
    }
}

/// A time as PostgreSQL's `recovery_target_time` reads it, in UTC.
pub fn pg_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.f+00").to_string()
}

/// `s` as one word for `/bin/sh` (restore_command runs through it).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=,@".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_command_words_survive_the_shell() {
        assert_eq!(
            shell_quote("/usr/local/bin/subvault"),
            "/usr/local/bin/subvault"
        );
        assert_eq!(shell_quote("/etc/my config.yaml"), "'/etc/my config.yaml'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
    }

    #[test]
    fn timelines_are_latest_current_or_an_id() {
        assert_eq!(parse_timeline("latest").unwrap(), "latest");
        assert_eq!(parse_timeline("current").unwrap(), "current");
        assert_eq!(parse_timeline("2").unwrap(), "2");
        for bad in ["0", "-1", "0x2", "newest", ""] {
            assert!(parse_timeline(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_times_are_written_in_utc_with_their_fraction() {
        let t: DateTime<Utc> = "2026-12-03T13:20:18.250Z".parse().unwrap();
        assert_eq!(pg_time(t), "2026-12-03 13:20:18.250+00");
        let t: DateTime<Utc> = "2026-12-03T13:20:18Z".parse().unwrap();
        assert_eq!(pg_time(t), "2026-12-03 13:20:18+00");
    }
}
