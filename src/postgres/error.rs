//! The errors of PostgreSQL sources. None of them carries the password: details
//! come from server messages, socket errors and paths only.

use std::path::PathBuf;
use std::time::Duration;

/// Why a consistent snapshot of a PostgreSQL source could not be taken, or a
/// restored data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `postgres.connection` does not parse as a libpq connection string or URL.
    #[error(
        "postgres.connection is not a valid libpq connection string or postgresql:// URL: \
         {0}"
    )]
    BadConnection(String),

    /// Nothing answers at the configured address, or the server is starting up or
    /// shutting down.
    #[error(
        "PostgreSQL at {target} is down or unreachable ({detail}); start the server or fix \
         host/port in postgres.connection"
    )]
    Unreachable {
        /// `host:port` or socket directory tried.
        target: String,
        /// The socket or server message.
        detail: String,
    },

    /// TLS to the server failed or is required and not used: `setting` names
    /// the setting to change.
    #[error("PostgreSQL at {target}: {detail}; {setting}")]
    Tls {
        /// `host:port`.
        target: String,
        /// What went wrong.
        detail: String,
        /// What to change (`postgres.sslmode`, `postgres.sslrootcert`).
        setting: String,
    },

    /// The server refused the login.
    #[error(
        "PostgreSQL at {target} rejected the login of user {user:?} ({detail}); check the \
         password (postgres.connection, PGPASSWORD or the pgpass file) and pg_hba.conf"
    )]
    Authentication {
        /// `host:port` or socket directory.
        target: String,
        /// The role that tried to log in.
        user: String,
        /// The server's message.
        detail: String,
    },

    /// The role lacks a privilege one step needs.
    #[error("user {user:?} may not {action} ({detail}); it needs {needed}")]
    InsufficientPrivilege {
        /// The role used.
        user: String,
        /// The step that was refused, e.g. `run CHECKPOINT`.
        action: &'static str,
        /// The roles or grants that allow it.
        needed: &'static str,
        /// The server's message.
        detail: String,
    },

    /// The server refused to start a backup because one is running that conflicts.
    #[error(
        "PostgreSQL refused to start the backup because a backup is already in progress \
         ({detail}); wait for it to finish (or stop it with pg_backup_stop / pg_stop_backup) \
         and run again"
    )]
    BackupInProgress {
        /// The server's message.
        detail: String,
    },

    /// Part of the cluster lives outside the subvolume that is snapshotted, so the
    /// snapshot would silently miss it.
    #[error(
        "{what} is at {location}, outside the source subvolume {subvolume}{why}; a snapshot of \
         the subvolume would not contain it. Move it into the subvolume (or make the \
         subvolume that holds it the source)"
    )]
    OutsideSubvolume {
        /// What lives there, e.g. `pg_wal` or `tablespace ts1 (pg_tblspc/16390)`.
        what: String,
        /// Where it really is (symlinks resolved).
        location: PathBuf,
        /// The source subvolume.
        subvolume: PathBuf,
        /// Extra reason, e.g. ` (it is on a nested subvolume or another mount)`.
        why: &'static str,
    },

    /// The data directory the server reports is not visible on this host.
    #[error(
        "the server's data_directory {0} does not exist on this host; subvault must run on the \
         database host, with the data directory inside the source subvolume"
    )]
    DataDirNotFound(PathBuf),

    /// A step did not finish within `postgres.timeout`.
    #[error("timed out after {timeout:?} waiting for PostgreSQL to {action}{hint}")]
    Timeout {
        /// The step, e.g. `connect`.
        action: &'static str,
        /// The configured timeout.
        timeout: Duration,
        /// What may be slow, e.g. the archive command.
        hint: &'static str,
    },

    /// The session holding the backup ended (backend terminated, server restart or
    /// crash) before `pg_backup_stop`: the server aborted the backup.
    #[error(
        "the backup was aborted by the server: the session holding it ended before the backup \
         was stopped ({detail}); the half-made snapshot was discarded"
    )]
    BackupAborted {
        /// What the client saw.
        detail: String,
    },

    /// The snapshot callback failed. Any backup was stopped first.
    #[error("taking the snapshot failed: {0:#}")]
    Snapshot(anyhow::Error),

    /// SIGINT or SIGTERM arrived while a backup was running. The backup was stopped
    /// and the half-made snapshot discarded; the caller should exit.
    #[error("interrupted by {0} while the backup was running; the backup was stopped and the snapshot discarded")]
    Interrupted(&'static str),

    /// The server is older than 9.6 (no non-exclusive backups).
    #[error("PostgreSQL {0} is not supported; subvault needs 9.6 or newer")]
    Unsupported(String),

    /// Any other failed statement.
    #[error("PostgreSQL failed to {action}: {detail}")]
    Query {
        /// The step.
        action: &'static str,
        /// The server's or client's message.
        detail: String,
    },

    /// A file operation on the data directory or snapshot failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was tried, e.g. `write backup_label into`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// `prepare_restored_datadir` found no PostgreSQL data directory.
    #[error(
        "{0} holds no PostgreSQL data directory (no PG_VERSION with global/pg_control at it or up \
         to 3 levels below); pass the writable copy of the restored subvolume"
    )]
    NotADataDir(PathBuf),

    /// A symlink (pg_wal, a tablespace) in a restored copy points outside the copy
    /// and no matching directory was found inside it.
    #[error(
        "{link} in the restored copy points to {target}, outside the copy, and no matching \
         directory exists inside it; starting a server there would write into another \
         cluster's files. Fix the link by hand"
    )]
    LinkOutsideCopy {
        /// The symlink or tablespace_map entry.
        link: String,
        /// Its target.
        target: PathBuf,
    },

    /// A restored copy holds a symlink where PostgreSQL never makes one
    /// (`postmaster.pid`, `pg_replslot`, `tablespace_map`, ...): preparing the
    /// copy would follow it out of the copy.
    #[error(
        "{} in the restored copy is a symlink (to {}), which PostgreSQL never makes; \
         preparing the copy would remove or rewrite what it points to, so nothing was \
         changed there. Inspect the backup; if the link is expected, remove it by hand and \
         prepare the copy as docs/postgres.md says",
        .path.display(),
        .target.display()
    )]
    SymlinkInCopy {
        /// The symlink.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
}

impl PgError {
    /// An [`PgError::Io`] builder for `map_err`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PgError {
        let path = path.into();
        move |source| PgError::Io {
            action,
            path,
            source,
        }
    }
}
