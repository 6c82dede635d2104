//! The checks a run makes before it changes anything: the clock against what
//! exists, and other machines writing this source to the same remote.

use std::collections::BTreeSet;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::SourceReport;
use crate::config::{Config, Source};
use crate::core::guards;
use crate::core::model::Backup;
use crate::ops::remotes::OpenRemotes;
use crate::ops::sources::SourceState;

/// The source's backups on each opened remote of this source.
fn backups_of<'a>(
    source: &'a Source,
    remotes: &'a OpenRemotes,
    state: &'a SourceState,
) -> impl Iterator<Item = (&'a str, Vec<&'a Backup>)> {
    source.upload_to_remotes.iter().filter_map(move |up| {
        let open = remotes.get(&up.id)?.as_ref().ok()?;
        let mine = open
            .backups
            .iter()
            .filter(|b| b.source_uuid == state.info.uuid)
            .collect();
        Some((up.id.as_str(), mine))
    })
}

/// Refuses a run whose time lies before the source's newest snapshot or
/// backup (beyond the configured tolerance).
pub(crate) fn clock(
    config: &Config,
    source: &Source,
    remotes: &OpenRemotes,
    state: &SourceState,
    now: DateTime<Utc>,
) -> Result<()> {
    let backups: Vec<(&str, &Backup)> = backups_of(source, remotes, state)
        .flat_map(|(id, bs)| bs.into_iter().map(move |b| (id, b)))
        .collect();
    let newest = guards::newest(&state.snapshots, backups);
    guards::check_clock(now, newest, config.safety.clock_tolerance)?;
    Ok(())
}

/// The remotes not to prune because backups of this source appear there that
/// no snapshot of this host explains and that are newer than its newest (a
/// cloned machine writing the same prefix); each is reported.
pub(crate) fn foreign_writers(
    source: &Source,
    remotes: &OpenRemotes,
    state: &SourceState,
    report: &mut SourceReport,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (id, mine) in backups_of(source, remotes, state) {
        let foreign = guards::unexplained_newer(&state.snapshots, mine);
        let Some(newest) = foreign.iter().max_by_key(|b| b.time) else {
            continue;
        };
        report.remote_problem(
            id,
            format!(
            "remote {id}: not pruned: it holds {} backup(s) of this source that no snapshot on \
             this host explains, newer than this host's newest snapshot (newest: {}): another \
             machine (a cloned VM?) writes this source to the same place; give each machine its \
             own prefix, then delete the other machine's objects or move them away",
            foreign.len(),
            newest.key()
        ),
        );
        out.insert(id.to_string());
    }
    out
}
