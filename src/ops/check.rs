//! `subvault check --source NAME`: is the WAL archive of a PostgreSQL source
//! working? The server's archive settings must hand WAL to `subvault
//! wal-push`, the cluster must live inside the subvolume (the checks every
//! run makes), and a segment the check makes the server close must arrive in
//! every remote of the source within the timeout.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Source};
use crate::core::wal::{check_archive_settings, WalFile};
use crate::ops::wal::WalRemote;

/// What a passing check found, one line each.
pub type CheckReport = Vec<String>;

/// Runs the checks; the first that fails is the error (one line naming the
/// setting, the layout problem, or the remotes the segment did not reach).
pub async fn check(config: &Config, source: &Source, timeout: Duration) -> Result<CheckReport> {
    let pg = source
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow!("source {} has no `postgres:` settings", source.name))?;
    let mut report = Vec::new();
    let facts = crate::postgres::check::archive_facts(pg, &source.path, false).await?;
    report.push(format!(
        "layout: data directory {} with pg_wal and tablespaces inside {}",
        facts.data_directory.display(),
        source.path.display()
    ));
    check_archive_settings(&facts.archive_mode, &facts.archive_command)
        .map_err(|e| anyhow!("source {}: {e}", source.name))?;
    report.push(format!(
        "archive_mode = {}, archive_command = {:?}",
        facts.archive_mode, facts.archive_command
    ));
    let facts = crate::postgres::check::archive_facts(pg, &source.path, true).await?;
    let segment = facts.switched.clone().unwrap_or_default();
    let file = WalFile::parse(&segment)?;
    let mut remotes = Vec::new();
    for up in &source.upload_to_remotes {
        let rc = config
            .remote(&up.id)
            .ok_or_else(|| anyhow!("remote {} is not configured", up.id))?;
        let r = WalRemote::open(rc, source, facts.system_id).await?;
        let key = r.key(&file);
        remotes.push((r, key));
    }
    let started = Instant::now();
    let mut waiting: Vec<usize> = (0..remotes.len()).collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for i in waiting {
            let (r, key) = &remotes[i];
            if !r.exists(key).await? {
                still.push(i);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if started.elapsed() > timeout {
            let names: Vec<String> = waiting
                .iter()
                .map(|&i| format!("{} ({})", remotes[i].0.id(), remotes[i].1))
                .collect();
            bail!(
                "source {}: segment {segment} did not arrive within {} s on {}: see the server log for archive_command's errors, and `SELECT * FROM pg_stat_archiver`",
                source.name,
                timeout.as_secs(),
                names.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.push(format!(
        "segment {segment} arrived on every remote ({}) in {:.1} s",
        remotes
            .iter()
            .map(|(r, _)| r.id().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    ));
    Ok(report)
}
