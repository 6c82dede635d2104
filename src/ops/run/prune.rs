//! Pruning after the uploads: destroy the snapshots and delete the objects the
//! plan no longer keeps. Reached only when every upload of the source succeeded.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::upload::Uploaded;
use super::{opened, SourceReport};
use crate::config::Source;
use crate::core::planner::{Action, Plan};
use crate::ops::remotes::OpenRemotes;
use crate::ops::subvols::Subvolumes;
use crate::remote::ObjectStore;

/// Destroys and deletes what `plan` prunes, except a key this run uploaded (an
/// upload can replace a broken object under the same key). Every failure is
/// collected; the error names them all.
pub(super) async fn prune<S: Subvolumes>(
    source: &Source,
    plan: &Plan,
    remotes: &OpenRemotes,
    uploaded: &[Uploaded],
    subvols: &S,
    report: &mut SourceReport,
) -> Result<()> {
    let mut failures = Vec::new();
    for action in &plan.actions {
        if let Action::DestroySnapshot { path, .. } = action {
            match subvols.destroy_snapshot(path) {
                Ok(()) => {
                    tracing::info!(
                        "source {}: destroyed snapshot {}",
                        source.name,
                        path.display()
                    );
                    report.destroyed += 1;
                }
                Err(e) => failures.push(format!("{e}")),
            }
        }
    }
    let mut deletes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for action in &plan.actions {
        if let Action::DeleteBackup { remote, key } = action {
            if uploaded
                .iter()
                .any(|u| &u.remote == remote && &u.key == key)
            {
                continue;
            }
            deletes.entry(remote).or_default().push(key.clone());
        }
    }
    for (remote, keys) in deletes {
        let open = opened(remotes, remote)?;
        match open.store.delete(&keys).await {
            Ok(rep) => {
                for key in &rep.deleted {
                    tracing::info!("source {}: deleted {key} from remote {remote}", source.name);
                }
                report.deleted += rep.deleted.len();
                for (key, err) in rep.failed {
                    failures.push(format!("remote {remote}: cannot delete {key}: {err}"));
                }
            }
            Err(e) => failures.push(format!("remote {remote}: {e}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "source {}: pruning failed ({}); backups are complete, the next run retries",
            source.name,
            failures.join("; ")
        );
    }
    Ok(())
}
