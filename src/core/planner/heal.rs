//! Healing broken chains (`run --heal`): a backup that cannot be restored
//! because its chain does not reach a full backup is planned as if it were
//! missing, so its snapshot (if kept and still on disk) is uploaded again, and
//! the broken object is deleted once its replacement exists.

use std::collections::HashSet;
use std::sync::Arc;

use super::{plan_inner, Action, BackupAction, BackupPlan, Plan, PlanInput};
use crate::core::model::Backup;

/// Keys of the backups whose restore chain does not reach a full backup (a
/// copy whose parent has no restorable object; another copy of the same
/// snapshot may still be fine).
pub(super) fn unrestorable(backups: &[&Backup]) -> HashSet<Arc<str>> {
    let ok = crate::core::chain::restorable(backups);
    backups
        .iter()
        .filter(|b| b.send_parent_uuid.is_some_and(|p| !ok.contains(&p)))
        .map(|b| b.key.clone())
        .collect()
}

/// Healing: plan without the unrestorable backups, then delete each of them whose
/// snapshot gets a good backup in the same plan (uploaded first, deleted after).
pub(super) fn plan_healing(input: &PlanInput) -> Plan {
    let mut healed_input = input.clone();
    let mut removed: Vec<(String, Backup)> = Vec::new();
    for remote in &mut healed_input.remotes {
        let mine: Vec<&Backup> = remote
            .backups
            .iter()
            .filter(|b| b.source_uuid == input.source_uuid)
            .collect();
        let bad = unrestorable(&mine);
        let (broken, good): (Vec<Backup>, Vec<Backup>) = remote
            .backups
            .to_mut()
            .drain(..)
            .partition(|b| bad.contains(&b.key));
        remote.backups = good.into();
        removed.extend(broken.into_iter().map(|b| (remote.id.clone(), b)));
    }
    let mut plan = plan_inner(&healed_input);
    for (remote, b) in removed {
        let replacement = plan
            .backups
            .iter()
            .find(|p| *p.remote == *remote && p.uuid == b.uuid && p.action != BackupAction::Delete);
        // Same snapshot and parent: the new object gets the same key and the upload
        // replaces the broken one in place, so there is nothing to delete.
        if replacement.is_some_and(|p| p.send_parent_uuid == b.send_parent_uuid) {
            continue;
        }
        let action = if replacement.is_some() {
            plan.actions.push(Action::DeleteBackup {
                remote: remote.clone(),
                key: b.key.to_string(),
            });
            plan.warnings.push(format!(
                "remote {remote}: healing: {} cannot be restored (its chain does not reach a full \
                 backup); it is uploaded again and the broken object deleted",
                b.key
            ));
            BackupAction::Delete
        } else {
            plan.warnings.push(format!(
                "remote {remote}: {} cannot be restored (its chain does not reach a full backup) \
                 and its snapshot is not kept, so it cannot be uploaded again",
                b.key
            ));
            BackupAction::Keep
        };
        plan.backups.push(BackupPlan {
            remote: remote.as_str().into(),
            key: Some(b.key.clone()),
            uuid: b.uuid,
            send_parent_uuid: b.send_parent_uuid,
            ctransid: b.ctransid,
            time: b.time,
            action,
            reasons: Vec::new(),
            timeframe: None,
            retain_until: None,
            size: b.size,
            storage_class: b.storage_class.clone(),
            broken_chain: true,
        });
    }
    plan
}
