//! Healing broken chains (`run --heal`): a backup that cannot be restored
//! because its chain does not reach a full backup is planned as if it were
//! missing, so its snapshot (if kept and still on disk) is uploaded again, and
//! the broken object is deleted once its replacement exists.

use std::sync::Arc;

use super::{plan_inner, Action, BackupAction, BackupPlan, Plan, PlanInput};
use crate::core::model::Backup;

/// Healing: plan without the unrestorable backups, then delete each of them whose
/// snapshot gets a good backup in the same plan (uploaded first, deleted after).
pub(super) fn plan_healing(input: &PlanInput) -> Plan {
    let mut healed_input = input.clone();
    // Per remote: its id and the broken backups taken out of its listing.
    let mut removed: Vec<(String, Arc<Vec<Backup>>)> = Vec::new();
    for remote in &mut healed_input.remotes {
        let mine: Vec<&Backup> = remote
            .backups
            .iter()
            .filter(|b| b.source_uuid == input.source_uuid)
            .collect();
        let ok = crate::core::chain::restorable(&mine);
        // A copy whose parent has no restorable object; another copy of the
        // same snapshot may still be fine.
        let unrestorable = |b: &Backup| {
            b.source_uuid == input.source_uuid
                && b.send_parent_uuid.is_some_and(|p| !ok.contains(&p))
        };
        if !remote.backups.iter().any(unrestorable) {
            continue;
        }
        let (broken, good): (Vec<Backup>, Vec<Backup>) = remote
            .backups
            .iter()
            .cloned()
            .partition(|b| unrestorable(b));
        remote.backups = Arc::new(good);
        removed.push((remote.id.clone(), Arc::new(broken)));
    }
    let mut plan = plan_inner(&healed_input);
    for (remote, broken) in removed {
        for (index, b) in broken.iter().enumerate() {
            let replacement = plan.backups.iter().find(|p| {
                *p.remote == *remote && p.uuid() == b.uuid && p.action != BackupAction::Delete
            });
            // Same snapshot and parent: the new object gets the same key and the upload
            // replaces the broken one in place, so there is nothing to delete.
            if replacement.is_some_and(|p| p.send_parent_uuid() == b.send_parent_uuid) {
                continue;
            }
            let action = if replacement.is_some() {
                plan.actions.push(Action::DeleteBackup {
                    remote: remote.clone(),
                    key: b.key().into_owned(),
                });
                plan.warnings.push(format!(
                    "remote {remote}: healing: {} cannot be restored (its chain does not reach a full \
                     backup); it is uploaded again and the broken object deleted",
                    b.key()
                ));
                BackupAction::Delete
            } else {
                plan.warnings.push(format!(
                    "remote {remote}: {} cannot be restored (its chain does not reach a full backup) \
                     and its snapshot is not kept, so it cannot be uploaded again",
                    b.key()
                ));
                BackupAction::Keep
            };
            // `as u32`: see `decide::collect_items`.
            let mut verdict =
                BackupPlan::listed(remote.as_str().into(), &broken, index as u32, action);
            verdict.broken_chain = true;
            plan.backups.push(verdict);
        }
    }
    plan
}
