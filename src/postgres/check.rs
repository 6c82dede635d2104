//! What `subvault check` asks the server: its archive settings, the layout
//! checks every run makes, and a segment switch whose WAL must then arrive in
//! every remote (what pgBackRest's `check` does).

use std::path::{Path, PathBuf};

use crate::config::PostgresConfig;

use super::error::PgError;
use super::session::{Session, Step};

/// What the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFacts {
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_command`.
    pub archive_command: String,
    /// The cluster's system identifier (`pg_control_system()`).
    pub system_id: u64,
    /// The data directory (inside the source subvolume: checked).
    pub data_directory: PathBuf,
    /// The segment closed by the switch, when `switch` was asked for.
    pub switched: Option<String>,
}

/// Reads the archive settings and checks the layout (data directory, pg_wal
/// and tablespaces inside `source_path`); with `switch`, writes a restore
/// point and switches to a new segment, so the one returned must be archived
/// soon (the restore point makes sure there is WAL to switch away from, even
/// on an idle server).
pub async fn archive_facts(
    cfg: &PostgresConfig,
    source_path: &Path,
    switch: bool,
) -> Result<ArchiveFacts, PgError> {
    let session = Session::connect(cfg).await?;
    let prepared = super::prepare(&session, source_path).await?;
    let row = session
        .one(
            Step {
                action: "read the archive settings",
                needs: "superuser or membership in pg_read_all_settings",
                slow_hint: "",
            },
            "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
             (SELECT system_identifier::text FROM pg_control_system())",
            &[],
        )
        .await?;
    let system_id: String = row.get(2);
    let mut facts = ArchiveFacts {
        archive_mode: row.get(0),
        archive_command: row.get(1),
        system_id: system_id.parse().unwrap_or_default(),
        data_directory: source_path.join(&prepared.layout.datadir_in_subvolume),
        switched: None,
    };
    if switch {
        let row = session
            .one(
                Step {
                    action: "switch to a new WAL segment",
                    needs: "superuser, or EXECUTE on pg_create_restore_point and pg_switch_wal",
                    slow_hint: "",
                },
                "SELECT pg_walfile_name(pg_create_restore_point('subvault check')), \
                 pg_walfile_name(pg_switch_wal())",
                &[],
            )
            .await?;
        facts.switched = Some(row.get(1));
    }
    session.close().await;
    Ok(facts)
}
