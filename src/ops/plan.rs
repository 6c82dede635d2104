//! `plan`: what a run would do now, for each source, changing nothing.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::keys::KeyNaming;
use super::remotes::{self, OpenRemotes};
use super::sources::{plan_input, read_source_flushed};
use crate::config::{Config, Source};
use crate::core::cost::{self, CostEstimate};
use crate::core::planner::{self, Plan, PlanOptions};
use crate::remote::ObjectStore;

/// A planned source, with what a renderer needs besides the plan.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// Source name.
    pub name: String,
    /// Source subvolume path.
    pub path: String,
    /// The plan.
    pub plan: Plan,
    /// Remote id -> (description such as `s3://bucket/prefix`, policy in words).
    pub remotes: BTreeMap<String, (String, String)>,
    /// (remote, snapshot uuid) -> the key an upload will get (known for existing snapshots).
    pub upload_keys: HashMap<(String, Uuid), String>,
    /// Remote id -> what the source's backups there cost after the plan
    /// (with the config's `prices:`; empty without).
    pub costs: BTreeMap<String, CostEstimate>,
    /// What a run would report as failed or held back: remotes that cannot be
    /// opened or listed, remotes another machine writes this source to.
    pub problems: Vec<String>,
    /// PostgreSQL sources: each remote's WAL archive and what WAL retention
    /// would delete from it.
    pub wal: Vec<super::wal_retention::WalPrunePlan>,
}

/// Plans every source (opening each remote once); a source that cannot be
/// planned gives its error in its place.
pub async fn plan_sources(
    config: &Config,
    sources: &[&Source],
    now: DateTime<Utc>,
    heal: bool,
) -> Vec<Result<SourcePlan>> {
    let remotes = remotes::open_for_sources(config, sources).await;
    let mut out = Vec::new();
    for source in sources {
        let mut planned = plan_source(config, source, &remotes, now, heal);
        if let (Ok(sp), Some(_)) = (&mut planned, &source.postgres) {
            wal_plans(config, source, &remotes, now, sp).await;
        }
        out.push(planned);
    }
    out
}

/// What WAL retention would delete on each remote of a PostgreSQL source,
/// keeping WAL for the backups the plan keeps. A remote whose archive cannot
/// be listed adds a problem.
async fn wal_plans(
    config: &Config,
    source: &Source,
    remotes: &OpenRemotes,
    now: DateTime<Utc>,
    sp: &mut SourcePlan,
) {
    for up in &source.upload_to_remotes {
        let Some(Ok(open)) = remotes.get(&up.id) else {
            continue;
        };
        // The verdicts point at their backups: no search of the listing.
        let kept: Vec<crate::core::model::Backup> = sp
            .plan
            .backups
            .iter()
            .filter(|b| *b.remote == *up.id && b.action == planner::BackupAction::Keep)
            .filter_map(|b| b.backup())
            .cloned()
            .collect();
        match super::wal_retention::plan(&up.id, open, source, &kept, now).await {
            Ok(mut p) => {
                let budget = crate::core::guards::PruneBudget {
                    share: config.safety.prune_budget,
                };
                p.over_budget = !budget.allows(p.retention.delete.len(), p.retention.existing);
                sp.wal.push(p)
            }
            Err(e) => sp.problems.push(format!(
                "remote {}: cannot list the WAL archive: {e:#}",
                up.id
            )),
        }
    }
}

/// The plan of one source as a run at `now` would make it (with the snapshot
/// it would take, when the source changed).
pub fn plan_source(
    config: &Config,
    source: &Source,
    remotes: &OpenRemotes,
    now: DateTime<Utc>,
    heal: bool,
) -> Result<SourcePlan> {
    let state = read_source_flushed(source)?;
    super::run::checks::clock(config, source, remotes, &state, now)?;
    let mut report = super::run::SourceReport::default();
    for up in &source.upload_to_remotes {
        if let Some(Err(e)) = remotes.get(&up.id) {
            report.problems.push(crate::errors::one_line(e));
        }
    }
    super::run::checks::foreign_writers(source, remotes, &state, &mut report);
    let input = plan_input(config, source, &state, remotes, now, state.needs_snapshot())?;
    let plan = planner::plan_with(&input, PlanOptions { heal });
    let mut described = BTreeMap::new();
    for up in &source.upload_to_remotes {
        if let Some(Ok(r)) = remotes.get(&up.id) {
            described.insert(up.id.clone(), (r.store.describe(), up.preserve.describe()));
        }
    }
    let mut upload_keys = HashMap::new();
    // The snapshot this run would take has no uuid yet, so no key.
    for u in plan.uploads().filter(|u| !u.uuid.is_nil()) {
        let (Some(Ok(r)), Some(up)) = (
            remotes.get(&u.remote),
            source.upload_to_remotes.iter().find(|up| up.id == u.remote),
        ) else {
            continue;
        };
        let pg = crate::postgres::sidecar::read(&u.snapshot_path);
        let naming = KeyNaming::new(config, source, up, r.store.prefix(), state.info.uuid)
            .sealed(r.keys.as_ref().map(|k| &k.auth));
        upload_keys.insert((u.remote.clone(), u.uuid), naming.key(u, pg.as_ref()));
    }
    let costs = match &config.prices {
        Some(table) => described
            .keys()
            .map(|id| {
                let mine = plan.backups.iter().filter(|b| *b.remote == **id);
                (id.clone(), cost::plan_cost(table, mine, now))
            })
            .collect(),
        None => BTreeMap::new(),
    };
    Ok(SourcePlan {
        name: source.name.clone(),
        path: source.path.display().to_string(),
        plan,
        costs,
        remotes: described,
        upload_keys,
        problems: report.problems,
        wal: Vec::new(),
    })
}
