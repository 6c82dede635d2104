//! After a PostgreSQL data directory is received: a writable copy prepared to
//! start. The received subvolume stays read-only (it is the restore point, and
//! later incremental restores need it untouched); the server runs on a writable
//! snapshot of it, prepared as PostgreSQL's backup docs say.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// The writable copy and what was done to prepare it.
#[derive(Debug, Clone)]
pub struct PreparedCopy {
    /// The writable snapshot the server can start on.
    pub datadir: PathBuf,
    /// One line per preparation step.
    pub done: Vec<String>,
}

/// Makes `<received>.pgdata` next to the received subvolume and prepares it.
pub fn prepare_copy(received: &Path) -> Result<PreparedCopy> {
    let name = format!(
        "{}.pgdata",
        received
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let dir = received.parent().unwrap_or(received);
    let rw = crate::sys::btrfs::create_snapshot(received, dir, &name, false)
        .map_err(|e| anyhow!("PostgreSQL: cannot make a writable copy: {e}"))?;
    let done = crate::postgres::prepare_restored_datadir(&rw)
        .map_err(|e| anyhow!("PostgreSQL: cannot prepare {}: {e}", rw.display()))?;
    Ok(PreparedCopy { datadir: rw, done })
}
