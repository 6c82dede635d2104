//! Pruning after the uploads: destroy the snapshots and delete the objects the
//! plan no longer keeps, within the prune budget, and only on remotes whose
//! uploads all succeeded and whose listing can be trusted.

use std::collections::{BTreeMap, BTreeSet};

use super::upload::Uploaded;
use super::{opened, SourceReport};
use crate::config::Source;
use crate::core::guards::{PruneBudget, ALWAYS_ALLOWED};
use crate::core::planner::{Action, BackupAction, Plan};
use crate::ops::remotes::OpenRemotes;
use crate::ops::subvols::Subvolumes;
use crate::ops::wal_retention;
use crate::remote::ObjectStore;

/// What a prune may touch.
pub(super) struct Prune<'a> {
    pub source: &'a Source,
    pub remotes: &'a OpenRemotes,
    /// The share one run may delete; `None` with `--allow-large-prune`.
    pub budget: Option<f64>,
    /// Remotes not to prune this run (an upload failed, another machine writes there).
    pub no_prune: &'a BTreeSet<String>,
    /// Objects this run stored: never deleted by it (an upload can replace a
    /// broken object under the same key).
    pub uploaded: &'a [Uploaded],
    /// How many snapshots of the source exist now.
    pub snapshots_existing: usize,
}

impl Prune<'_> {
    /// Destroys the snapshots `destroys` prunes and deletes the objects
    /// `deletes` prunes; whatever fails or is held back goes to the report's
    /// problems.
    pub(super) async fn run<S: Subvolumes>(
        &self,
        deletes: &Plan,
        destroys: &Plan,
        subvols: &S,
        report: &mut SourceReport,
    ) {
        self.destroy_snapshots(destroys, subvols, report);
        for (remote, keys) in self.deletions(deletes, report) {
            self.delete(remote, &keys, report).await;
        }
    }

    /// WAL retention, after the backups' prune: on each remote that may be
    /// pruned, deletes the archived WAL that no backup left there can use
    /// (docs/postgres.md, "WAL retention"), within the prune budget.
    pub(super) async fn prune_wal(
        &self,
        source_uuid: uuid::Uuid,
        now: chrono::DateTime<chrono::Utc>,
        report: &mut SourceReport,
    ) {
        for up in &self.source.upload_to_remotes {
            let remote = up.id.as_str();
            if self.no_prune.contains(remote) {
                continue;
            }
            let Some(Ok(open)) = self.remotes.get(remote) else {
                continue;
            };
            let deleted = report
                .remotes
                .get(remote)
                .map(|r| r.deleted.clone())
                .unwrap_or_default();
            let uploaded: Vec<(String, u64)> = self
                .uploaded
                .iter()
                .filter(|u| u.remote == remote)
                .map(|u| (u.key.clone(), u.stored_bytes))
                .collect();
            let kept = wal_retention::kept_backups(open, source_uuid, &deleted, &uploaded);
            let plan = match wal_retention::plan(remote, open, self.source, &kept, now).await {
                Ok(p) => p.retention,
                Err(e) => {
                    report.remote_problem(
                        remote,
                        format!(
                            "remote {remote}: cannot list the WAL archive of source {}: {e:#}",
                            self.source.name
                        ),
                    );
                    continue;
                }
            };
            if let Some(why) = &plan.held_back {
                tracing::info!(
                    "source {}: remote {remote}: WAL kept: {why}",
                    self.source.name
                );
                continue;
            }
            if plan.delete.is_empty() {
                continue;
            }
            // Over the budget, the oldest go now and the rest in later runs:
            // what stays is still gapless and every kept backup's WAL stays.
            let keys = match self.budget {
                Some(share) => {
                    let allowed = PruneBudget { share }.allowed(plan.existing);
                    let now = plan.within(allowed);
                    if now.len() < plan.delete.len() {
                        tracing::info!(
                            "source {}: remote {remote}: WAL retention deletes {} of the {} \
                             archived WAL objects no kept backup needs now (the prune budget \
                             allows {allowed} of {}), the rest in later runs \
                             (--allow-large-prune deletes all at once)",
                            self.source.name,
                            now.len(),
                            plan.delete.len(),
                            plan.existing
                        );
                    }
                    now
                }
                None => &plan.delete[..],
            };
            self.delete_wal(remote, &open.store, keys, report).await;
        }
    }

    async fn delete_wal(
        &self,
        remote: &str,
        store: &crate::remote::AnyStore,
        keys: &[String],
        report: &mut SourceReport,
    ) {
        let deleted = delete_keys(store, remote, keys, report).await;
        tracing::info!(
            "source {}: deleted {} archived WAL objects from remote {remote} \
             (older than every kept backup needs)",
            self.source.name,
            deleted.len()
        );
        report.wal_deleted += deleted.len();
        report
            .remotes
            .entry(remote.to_string())
            .or_default()
            .wal_deleted
            .extend(deleted);
    }

    fn over_budget(&self, deleting: usize, existing: usize) -> Option<String> {
        let share = self.budget?;
        let budget = PruneBudget { share };
        (!budget.allows(deleting, existing)).then(|| {
            format!(
                "more than the prune budget allows ({}: {:.0}% of {existing}, at least \
                 {ALWAYS_ALLOWED}); if that is intended (a policy change), run once with \
                 --allow-large-prune",
                budget.allowed(existing),
                share * 100.0
            )
        })
    }

    fn destroy_snapshots<S: Subvolumes>(
        &self,
        plan: &Plan,
        subvols: &S,
        report: &mut SourceReport,
    ) {
        let paths: Vec<_> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DestroySnapshot { path, .. } => Some(path),
                _ => None,
            })
            .collect();
        if let Some(why) = self.over_budget(paths.len(), self.snapshots_existing) {
            report.problems.push(format!(
                "snapshots not destroyed: this run would destroy {} of the {} snapshots of \
                 source {}, {why}",
                paths.len(),
                self.snapshots_existing,
                self.source.name
            ));
            return;
        }
        for path in paths {
            match subvols.destroy_snapshot(path) {
                Ok(()) => {
                    tracing::info!(
                        "source {}: destroyed snapshot {}",
                        self.source.name,
                        path.display()
                    );
                    report.destroyed += 1;
                    report.destroyed_snapshots.push(path.display().to_string());
                }
                Err(e) => report.problems.push(format!("{e}")),
            }
        }
    }

    /// The keys to delete per remote, leaving out remotes not to prune, keys
    /// this run uploaded, and remotes whose deletions exceed the budget.
    fn deletions<'p>(
        &self,
        plan: &'p Plan,
        report: &mut SourceReport,
    ) -> BTreeMap<&'p str, Vec<String>> {
        let mut deletes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for action in &plan.actions {
            if let Action::DeleteBackup { remote, key } = action {
                if self.no_prune.contains(remote)
                    || self
                        .uploaded
                        .iter()
                        .any(|u| &u.remote == remote && &u.key == key)
                {
                    continue;
                }
                deletes.entry(remote).or_default().push(key.clone());
            }
        }
        deletes.retain(|remote, keys| {
            let existing = plan
                .backups
                .iter()
                .filter(|b| *b.remote == **remote && b.action != BackupAction::Upload)
                .count();
            match self.over_budget(keys.len(), existing) {
                None => true,
                Some(why) => {
                    report.remote_problem(
                        remote,
                        format!(
                            "remote {remote}: not pruned: this run would delete {} of the \
                             {existing} backups of source {} there, {why}",
                            keys.len(),
                            self.source.name
                        ),
                    );
                    false
                }
            }
        });
        deletes
    }

    async fn delete(&self, remote: &str, keys: &[String], report: &mut SourceReport) {
        let open = match opened(self.remotes, remote) {
            Ok(o) => o,
            Err(e) => return report.remote_problem(remote, format!("{e:#}")),
        };
        let deleted = delete_keys(&open.store, remote, keys, report).await;
        for key in &deleted {
            tracing::info!(
                "source {}: deleted {key} from remote {remote}",
                self.source.name
            );
        }
        report.deleted += deleted.len();
        report
            .remotes
            .entry(remote.to_string())
            .or_default()
            .deleted
            .extend(deleted);
    }
}

/// Deletes `keys` from `remote`'s store and returns those it deleted; each
/// key it could not delete, or the whole request's failure, is a problem of
/// the remote in `report`.
async fn delete_keys(
    store: &crate::remote::AnyStore,
    remote: &str,
    keys: &[String],
    report: &mut SourceReport,
) -> Vec<String> {
    match store.delete(keys).await {
        Ok(rep) => {
            for (key, err) in rep.failed {
                report.remote_problem(
                    remote,
                    format!("remote {remote}: cannot delete {key}: {err}"),
                );
            }
            rep.deleted
        }
        Err(e) => {
            report.remote_problem(remote, format!("remote {remote}: {e}"));
            Vec::new()
        }
    }
}
