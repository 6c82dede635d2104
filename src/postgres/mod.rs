//! PostgreSQL sources: consistent snapshots of a data directory on btrfs, and
//! preparing a restored copy to start.
//!
//! Two modes (docs/design.md, "PostgreSQL sources"; `postgres.mode`):
//! - `checkpoint`: `CHECKPOINT`, then one atomic snapshot. Everything the server
//!   needs (data directory, `pg_wal`, tablespaces) is in the subvolume, so the
//!   snapshot is exactly what a power cut would leave: it starts on its own with
//!   crash recovery, which the checkpoint keeps short.
//! - `backup`: `pg_backup_start` / snapshot / `pg_backup_stop` on one session. The
//!   `backup_label` (and `tablespace_map`) that `pg_backup_stop` returns is written
//!   INTO the snapshot's data directory before the snapshot is made read-only.
//!   Why there and not in a companion object: a restored snapshot is then exactly
//!   the "base backup" PostgreSQL's documentation describes, one object restores
//!   it, nothing can get separated from its backup, and `btrfs receive` by hand
//!   gives a startable directory. Such a restore needs the WAL archive up to the
//!   backup's end (`restore_command`), which is what backup mode is for.
//!
//! The runner calls [`snapshot_with`] with a callback that creates the snapshot,
//! and after a restore, [`prepare_restored_datadir`] on a writable copy.

mod error;
mod layout;
mod pgpass;
mod restore;
mod seal;
mod session;
pub mod sidecar;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{PgMode, PostgresConfig};
use session::{Session, Step};

pub mod check;
pub mod start;
pub mod tls;
mod trim;

pub use error::PgError;
pub use restore::{prepare_restored_datadir, write_recovery, RecoverySettings};

/// What a consistent PostgreSQL snapshot recorded; the runner stores it with the
/// backup (object metadata, `list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PgSnapshotInfo {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// `server_version_num`, e.g. `150018`.
    pub server_version_num: u32,
    /// How consistency was reached.
    #[serde(serialize_with = "serialize_mode")]
    pub mode: PgMode,
    /// Checkpoint mode: the checkpoint's LSN. Backup mode: the backup's start LSN.
    pub lsn: String,
    /// Backup mode: the LSN `pg_backup_stop` returned (recovery must replay WAL
    /// up to here before the copy is consistent).
    pub stop_lsn: Option<String>,
    /// The timeline the checkpoint or backup started on.
    pub timeline: u32,
    /// The wall-clock time (rounded up to the second) from which the copy is
    /// consistent: taken after the snapshot (checkpoint mode) or after
    /// `pg_backup_stop` returned (backup mode). Every commit in the copy's WAL
    /// happened before it, so a recovery target at or after it never stops
    /// replay before the copy is consistent.
    pub consistent_at: chrono::DateTime<chrono::Utc>,
    /// The WAL segment holding the redo point recovery from the copy starts
    /// at (the checkpoint's `redo_wal_file`, or the label's `START WAL
    /// LOCATION` file); WAL retention keeps the archive from here.
    pub wal_start: Option<String>,
    /// Backup mode: the `backup_label` written into the snapshot.
    pub backup_label: Option<String>,
    /// Backup mode with tablespaces: the `tablespace_map` written into the snapshot.
    pub tablespace_map: Option<String>,
    /// The read-only snapshot (not serialized: the backup records it elsewhere).
    #[serde(skip)]
    pub snapshot: PathBuf,
}

fn serialize_mode<S: serde::Serializer>(mode: &PgMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.as_str())
}

/// Connects as `cfg` says and reports whether the session is encrypted
/// (`pg_stat_ssl`): the TLS settings' check, for `subvault check` and tests.
pub async fn connection_uses_tls(cfg: &PostgresConfig) -> Result<bool, PgError> {
    let session = Session::connect(cfg).await?;
    let row = session
        .one(
            Step::plain("read pg_stat_ssl"),
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await;
    session.close().await;
    Ok(row?.get(0))
}

/// Take a consistent snapshot of the PostgreSQL cluster in `source_path` (the
/// source subvolume). `label` names the backup on the server (backup mode).
///
/// `take_snapshot(readonly)` must create the snapshot atomically (e.g.
/// `crate::sys::btrfs::create_snapshot(source, dir, name, readonly)`) and return its
/// path. It is asked for a read-write snapshot: the segments of its `pg_wal`
/// that recovery from it cannot read are removed (and in backup mode
/// `backup_label` is written into it), and it is then made read-only here, so a
/// read-only snapshot comes back ([`PgSnapshotInfo::snapshot`]); a failure on
/// the way destroys it. Its error is returned as [`PgError::Snapshot`].
///
/// Backup mode always ends the backup: on a callback error (explicit
/// `pg_backup_stop`), a panic or a dropped future (the session is closed, and the
/// server aborts a non-exclusive backup whose session ends), and on SIGINT/SIGTERM
/// ([`PgError::Interrupted`]; tokio keeps its handler installed afterwards, so the
/// caller must treat that error as "exit now"). A snapshot taken while the backup
/// failed is destroyed. `cfg.timeout` bounds connecting and each statement.
pub async fn snapshot_with<F>(
    cfg: &PostgresConfig,
    source_path: &Path,
    label: &str,
    take_snapshot: F,
) -> Result<PgSnapshotInfo, PgError>
where
    F: FnOnce(bool) -> Result<PathBuf, anyhow::Error>,
{
    let session = Session::connect(cfg).await?;
    match cfg.mode {
        PgMode::Checkpoint => checkpoint_snapshot(session, source_path, take_snapshot).await,
        PgMode::Backup => {
            let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
            let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
            // Signals first: one that arrived during the snapshot wins over a
            // backup that would otherwise complete. Dropping the backup future
            // closes the session (the server aborts the backup) and destroys a
            // half-made snapshot (its guard).
            tokio::select! {
                biased;
                _ = interrupt.recv() => Err(PgError::Interrupted("SIGINT")),
                _ = terminate.recv() => Err(PgError::Interrupted("SIGTERM")),
                r = backup_snapshot(session, source_path, label, take_snapshot) => r,
            }
        }
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, PgError> {
    tokio::signal::unix::signal(kind).map_err(PgError::io("listen for signals in", "/"))
}

const CHECKPOINT: Step = Step {
    action: "run CHECKPOINT",
    needs: "superuser or membership in pg_checkpoint (PostgreSQL 15+; superuser before 15)",
    slow_hint: "; a large shared_buffers with many dirty pages makes CHECKPOINT slow: raise postgres.timeout",
};
const READ_DATA_DIRECTORY: Step = Step {
    action: "read data_directory",
    needs: "superuser or membership in pg_read_all_settings",
    slow_hint: "",
};
const BACKUP_START: Step = Step {
    action: "start the backup (pg_backup_start / pg_start_backup)",
    needs: "superuser, or EXECUTE on pg_backup_start and pg_backup_stop (pg_start_backup and \
            pg_stop_backup before PostgreSQL 15)",
    slow_hint: "; the backup starts with a checkpoint",
};
const BACKUP_STOP: Step = Step {
    action: "stop the backup (pg_backup_stop / pg_stop_backup)",
    needs: "superuser, or EXECUTE on pg_backup_stop (pg_stop_backup before PostgreSQL 15)",
    slow_hint: "; pg_backup_stop waits until the WAL is archived: check archive_command and \
                the server log",
};

/// Server version and the checks both modes share.
struct Prepared {
    server_version: String,
    server_version_num: u32,
    layout: layout::Layout,
}

async fn prepare(session: &Session, source_path: &Path) -> Result<Prepared, PgError> {
    let row = session
        .one(
            Step::plain("report its version"),
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
            &[],
        )
        .await?;
    let server_version: String = row.get(0);
    let server_version_num = row.get::<_, i32>(1) as u32;
    if server_version_num < 90600 {
        return Err(PgError::Unsupported(server_version));
    }
    let data_directory: String = session
        .one(
            READ_DATA_DIRECTORY,
            "SELECT current_setting('data_directory')",
            &[],
        )
        .await?
        .get(0);
    let tablespaces = session
        .all(
            Step::plain("list tablespaces"),
            "SELECT oid::text, spcname::text FROM pg_tablespace \
             WHERE spcname NOT IN ('pg_default', 'pg_global')",
            &[],
        )
        .await?
        .iter()
        .map(|r| layout::Tablespace {
            oid: r.get(0),
            name: r.get(1),
        })
        .collect::<Vec<_>>();
    let layout = layout::check(source_path, Path::new(&data_directory), &tablespaces)?;
    Ok(Prepared {
        server_version,
        server_version_num,
        layout,
    })
}

async fn checkpoint_snapshot<F>(
    session: Session,
    source_path: &Path,
    take_snapshot: F,
) -> Result<PgSnapshotInfo, PgError>
where
    F: FnOnce(bool) -> Result<PathBuf, anyhow::Error>,
{
    let prepared = prepare(&session, source_path).await?;
    session.execute(CHECKPOINT, "CHECKPOINT").await?;
    let row = session
        .one(
            Step::plain("read pg_control_checkpoint()"),
            "SELECT checkpoint_lsn::text, timeline_id::int8, redo_wal_file FROM pg_control_checkpoint()",
            &[],
        )
        .await?;
    let lsn: String = row.get(0);
    let timeline = row.get::<_, i64>(1) as u32;
    // The redo point of the checkpoint just made (or of a later one the
    // snapshot's pg_control may name): recovery never reads WAL before it.
    let wal_start = row
        .get::<_, Option<String>>(2)
        .filter(|f| crate::core::wal::SegmentName::parse(f).is_some());
    // Crash-consistent by atomicity; the checkpoint only shortens recovery.
    // Taken writable so its pg_wal can be trimmed, and made read-only before
    // anything may send it; until then it is half-made (destroyed on any
    // failure, and never listed: runs list read-only snapshots only).
    let mut half_made = HalfMade(None);
    let snapshot = match take_snapshot(false) {
        Ok(p) => p,
        Err(e) => {
            session.close().await;
            return Err(PgError::Snapshot(e));
        }
    };
    half_made.0 = Some(snapshot.clone());
    let consistent_at = crate::core::pg_record::round_up(chrono::Utc::now());
    let insert = insert_segment(&session, prepared.server_version_num).await;
    session.close().await;
    trim::trim_snapshot_wal(
        &snapshot,
        &prepared.layout,
        wal_start.as_deref(),
        insert.as_deref(),
    )?;
    seal::set_readonly(&snapshot)?;
    half_made.0 = None;
    Ok(PgSnapshotInfo {
        server_version: prepared.server_version,
        server_version_num: prepared.server_version_num,
        mode: PgMode::Checkpoint,
        lsn,
        stop_lsn: None,
        timeline,
        consistent_at,
        wal_start,
        backup_label: None,
        tablespace_map: None,
        snapshot,
    })
}

/// Destroys a snapshot taken during a backup that did not complete, including
/// when the future is dropped or a panic unwinds through it.
struct HalfMade(Option<PathBuf>);

impl Drop for HalfMade {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            match crate::sys::btrfs::destroy_subvolume(&path) {
                Ok(()) => tracing::info!("discarded the half-made snapshot {}", path.display()),
                Err(e) => tracing::error!(
                    "could not discard the half-made snapshot {}: {e}; delete it with \
                     `btrfs subvolume delete`",
                    path.display()
                ),
            }
        }
    }
}

async fn backup_snapshot<F>(
    session: Session,
    source_path: &Path,
    label: &str,
    take_snapshot: F,
) -> Result<PgSnapshotInfo, PgError>
where
    F: FnOnce(bool) -> Result<PathBuf, anyhow::Error>,
{
    let prepared = prepare(&session, source_path).await?;
    let archive_mode: String = session
        .one(
            Step::plain("read archive_mode"),
            "SELECT current_setting('archive_mode')",
            &[],
        )
        .await?
        .get(0);
    let wait_for_archive = archive_mode != "off";
    if !wait_for_archive {
        tracing::warn!(
            "archive_mode is off: a backup-mode snapshot restores only with the WAL written up \
             to the end of the backup, which the snapshot does not contain; archive WAL or use \
             checkpoint mode"
        );
    }
    let v15 = prepared.server_version_num >= 150000;
    let start_sql = if v15 {
        "SELECT pg_backup_start($1, fast => true)::text"
    } else {
        "SELECT pg_start_backup($1, true, false)::text"
    };
    let start_lsn: String = session
        .one(BACKUP_START, start_sql, &[&label])
        .await?
        .get(0);

    // From here the server holds a backup for this session: every exit path below
    // either stops it or ends the session (which aborts it).
    let mut half_made = HalfMade(None);
    let snapshot = match take_snapshot(false) {
        Ok(p) => p,
        Err(e) => {
            if let Err(stop) = stop_backup(&session, prepared.server_version_num, false).await {
                tracing::warn!("stopping the backup after the failed snapshot: {stop}");
            }
            session.close().await;
            return Err(PgError::Snapshot(e));
        }
    };
    half_made.0 = Some(snapshot.clone());
    let insert = insert_segment(&session, prepared.server_version_num).await;
    let stopped = stop_backup(&session, prepared.server_version_num, wait_for_archive).await;
    let consistent_at = crate::core::pg_record::round_up(chrono::Utc::now());
    session.close().await;
    let (stop_lsn, labelfile, spcmapfile) =
        stopped.map_err(|e| match session::session_lost(&e) {
            Some(detail) => PgError::BackupAborted { detail },
            None => e,
        })?;

    let datadir = snapshot.join(&prepared.layout.datadir_in_subvolume);
    write_into_snapshot(&datadir, "backup_label", &labelfile)?;
    let tablespace_map = spcmapfile.filter(|m| !m.is_empty());
    if let Some(map) = &tablespace_map {
        write_into_snapshot(&datadir, "tablespace_map", map)?;
    }
    sync_dir(&datadir)?;
    let wal_start = start_wal_file(&labelfile);
    trim::trim_snapshot_wal(
        &snapshot,
        &prepared.layout,
        wal_start.as_deref(),
        insert.as_deref(),
    )?;
    seal::set_readonly(&snapshot)?;
    half_made.0 = None;

    let timeline = start_timeline(&labelfile).unwrap_or(1);
    Ok(PgSnapshotInfo {
        server_version: prepared.server_version,
        server_version_num: prepared.server_version_num,
        mode: PgMode::Backup,
        lsn: start_lsn,
        stop_lsn: Some(stop_lsn),
        timeline,
        consistent_at,
        wal_start,
        backup_label: Some(labelfile),
        tablespace_map,
        snapshot,
    })
}

/// `pg_backup_stop` (or `pg_stop_backup` before 15): (stop LSN, labelfile, spcmapfile).
async fn stop_backup(
    session: &Session,
    version_num: u32,
    wait_for_archive: bool,
) -> Result<(String, String, Option<String>), PgError> {
    let row = if version_num >= 150000 {
        let sql =
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => $1)";
        session.one(BACKUP_STOP, sql, &[&wait_for_archive]).await?
    } else if version_num >= 100000 {
        let sql = "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, $1)";
        session.one(BACKUP_STOP, sql, &[&wait_for_archive]).await?
    } else {
        let sql = "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false)";
        session.one(BACKUP_STOP, sql, &[]).await?
    };
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// `START TIMELINE: N` from a backup label.
fn start_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
}

/// The segment the server is writing (asked after the snapshot: every later
/// segment file in the snapshot is a recycled or preallocated one). `None`
/// when it cannot say (a standby, before PostgreSQL 10): nothing is trimmed.
async fn insert_segment(session: &Session, server_version_num: u32) -> Option<String> {
    if server_version_num < 100000 {
        return None;
    }
    match session
        .one(
            Step::plain("read the WAL insert position"),
            "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
            &[],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => {
            tracing::info!("pg_wal not trimmed: {e}");
            None
        }
    }
}

/// The segment named by the label's `START WAL LOCATION: 0/2000028 (file
/// 000000010000000000000002)` line: where recovery from the backup starts.
fn start_wal_file(label: &str) -> Option<String> {
    let line = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))?;
    let file = line.split_once("(file ")?.1.strip_suffix(')')?;
    crate::core::wal::SegmentName::parse(file).map(|s| s.to_string())
}

/// Write `name` into the snapshot's data directory, owned like the directory (the
/// server runs as that user and renames backup_label at startup), mode 0600, synced.
fn write_into_snapshot(datadir: &Path, name: &str, content: &str) -> Result<(), PgError> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = datadir.join(name);
    let owner = std::fs::metadata(datadir).map_err(PgError::io("stat", datadir))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(PgError::io("create (in the snapshot)", &path))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(PgError::io("write", &path))?;
    std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))
        .map_err(PgError::io("chown", &path))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), PgError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PgError::io("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_is_read_from_the_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nSTART TIMELINE: 3\n";
        assert_eq!(start_timeline(label), Some(3));
        assert_eq!(
            start_wal_file(label).as_deref(),
            Some("000000010000000000000002")
        );
        assert_eq!(start_wal_file("START WAL LOCATION: 0/2000028\n"), None);
        assert_eq!(start_timeline("LABEL: x\n"), None);
    }

    #[test]
    fn info_serializes_mode_by_its_config_name_and_hides_the_path() {
        let info = PgSnapshotInfo {
            server_version: "15.18".into(),
            server_version_num: 150018,
            mode: PgMode::Backup,
            lsn: "0/2000028".into(),
            stop_lsn: Some("0/2000100".into()),
            timeline: 1,
            consistent_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            wal_start: Some("000000010000000000000002".into()),
            backup_label: Some("LABEL: x\n".into()),
            tablespace_map: None,
            snapshot: PathBuf::from("/snapshots/x"),
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["mode"], "backup");
        assert!(json.get("snapshot").is_none());
    }
}
