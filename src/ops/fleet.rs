//! `status --fleet`: many hosts, one bucket. A fleet remote's prefix is the
//! fleet's root; each host writes under its own sub-prefix `<root><host>/`
//! (docs/fleet.md). One delimited listing finds the hosts, then one paginated
//! listing per host (several hosts at once) is grouped and judged by
//! `core::fleet`. Only List requests: the fleet reader needs no write access
//! and no key file.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::config::{Config, RemoteConfig};
use crate::core::cost::{CostEstimate, PriceTable};
use crate::core::fleet::{self, Foreign, HostInventory, Listed, SourceVerdict, Verdict};
use crate::core::inventory::ClassTotal;
use crate::errors::UsageError;
use crate::remote::{self, ObjectInfo, ObjectStore};

/// Hosts listed at once: enough to hide a request's latency, few enough not
/// to be throttled by the store (S3 allows thousands of Lists per second per
/// prefix; garage and moto on small machines are far slower).
const HOSTS_IN_FLIGHT: usize = 8;

/// The max age when `--max-age` is not given: a daily backup plus slack.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

/// One host of a fleet.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    /// The host's name (its sub-prefix without the root and the `/`).
    pub host: String,
    /// Its full key prefix.
    pub prefix: String,
    /// The worst of its sources' verdicts (see [`fleet::host_verdict`]).
    pub health: Verdict,
    /// Why its prefix could not be listed, if it could not.
    pub error: Option<String>,
    /// Every object under the prefix.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Count and bytes per storage class, of every object.
    pub by_storage_class: std::collections::BTreeMap<String, ClassTotal>,
    /// Keys that are not subvault's layout.
    pub foreign: Foreign,
    /// Per source (the keys' base name), sorted by name.
    pub sources: Vec<SourceVerdict>,
    /// What the host's objects cost a month, with the config's `prices:`.
    pub cost: Option<CostEstimate>,
}

/// One fleet remote.
#[derive(Debug, Clone, Serialize)]
pub struct FleetRemote {
    /// The remote's id in the config.
    pub remote: String,
    /// Where it points (never credentials).
    pub location: String,
    /// Why its root could not be listed, if it could not.
    pub error: Option<String>,
    /// Objects directly under the root, outside any host's prefix.
    pub root_foreign: Foreign,
    /// Per host, sorted by name.
    pub hosts: Vec<HostStatus>,
}

/// The whole fleet status.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The schema version of this JSON.
    pub version: u32,
    /// When it was computed.
    pub now: DateTime<Utc>,
    /// The max age applied to every source.
    pub max_age_seconds: u64,
    /// True when every host is fresh and healthy (exit status 0).
    pub healthy: bool,
    /// Per fleet remote.
    pub remotes: Vec<FleetRemote>,
}

impl FleetStatus {
    /// One line per failing host or source (`host-b/home: STALE: ...`), for
    /// the report's end and for `-q`.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.remotes {
            if let Some(e) = &r.error {
                out.push(format!("remote {}: UNREACHABLE: {e}", r.remote));
            } else if r.hosts.is_empty() {
                out.push(format!("remote {}: {}", r.remote, no_hosts(&r.location)));
            }
            for h in &r.hosts {
                if let Some(e) = &h.error {
                    out.push(format!("{}: UNREACHABLE: {e}", h.host));
                } else if h.sources.is_empty() && h.health.fails() {
                    out.push(format!("{}: EMPTY: no object under {}", h.host, h.prefix));
                }
                for s in h.sources.iter().filter(|s| s.health.fails()) {
                    out.push(format!(
                        "{}/{}: {}: {}",
                        h.host,
                        s.source,
                        s.health.word(),
                        s.problems.join("; ")
                    ));
                }
            }
        }
        out
    }
}

fn no_hosts(location: &str) -> String {
    format!(
        "no host prefix under {location}: a fleet remote's prefix must be the fleet's root \
         (hosts write to <root><host>/, see docs/fleet.md)"
    )
}

/// Computes the fleet status of the remotes `ids` (all of the config's when
/// empty) now.
pub async fn fleet_status(
    config: &Config,
    ids: &[String],
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<FleetStatus> {
    let remotes: Vec<&RemoteConfig> = if ids.is_empty() {
        config.remotes.iter().collect()
    } else {
        ids.iter()
            .map(|id| {
                config.remote(id).ok_or_else(|| {
                    UsageError(format!(
                        "--remote {id}: no remote with that id in {}",
                        config.path.display()
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    if remotes.is_empty() {
        return Err(UsageError(format!(
            "status --fleet: {} has no remotes; add the fleet's bucket and root prefix as a remote",
            config.path.display()
        ))
        .into());
    }
    let mut out = Vec::new();
    for r in remotes {
        out.push(fleet_remote(r, config.prices.as_ref(), max_age, now).await);
    }
    let healthy = out.iter().all(|r| {
        r.error.is_none() && !r.hosts.is_empty() && r.hosts.iter().all(|h| !h.health.fails())
    });
    Ok(FleetStatus {
        version: 1,
        now,
        max_age_seconds: max_age.as_secs(),
        healthy,
        remotes: out,
    })
}

async fn fleet_remote(
    config: &RemoteConfig,
    prices: Option<&PriceTable>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> FleetRemote {
    let mut out = FleetRemote {
        remote: config.id.clone(),
        location: config.location(),
        error: None,
        root_foreign: Foreign::default(),
        hosts: Vec::new(),
    };
    let store = match remote::open(config).await {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(crate::errors::one_line(&e.into()));
            return out;
        }
    };
    out.location = store.describe();
    let level = match store.list_prefixes().await {
        Ok(l) => l,
        Err(e) => {
            out.error = Some(crate::errors::one_line(&e.into()));
            return out;
        }
    };
    for o in &level.objects {
        out.root_foreign.add(&o.key, o.size);
    }
    let root = store.prefix().to_string();
    let store = &store;
    out.hosts = futures::stream::iter(level.prefixes)
        .map(|prefix| {
            let root = root.clone();
            async move {
                let listed = store.list_under(&prefix).await;
                let mut host = host_status(&root, prefix, listed, max_age, now);
                host.cost = prices.filter(|_| host.error.is_none()).map(|t| {
                    let mut c = CostEstimate::new(t);
                    for (class, total) in &host.by_storage_class {
                        c.add_storage(t, class, total.bytes);
                    }
                    c
                });
                host
            }
        })
        .buffered(HOSTS_IN_FLIGHT)
        .collect()
        .await;
    out
}

/// Judges one host from its listing (or the error listing it).
fn host_status(
    root: &str,
    prefix: String,
    listed: Result<Vec<ObjectInfo>, remote::RemoteError>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> HostStatus {
    let host = fleet::host_name(root, &prefix).to_string();
    let objects = match listed {
        Ok(o) => o,
        Err(e) => {
            return HostStatus {
                host,
                prefix,
                health: Verdict::Unreachable,
                error: Some(crate::errors::one_line(&e.into())),
                objects: 0,
                bytes: 0,
                by_storage_class: Default::default(),
                foreign: Foreign::default(),
                sources: Vec::new(),
                cost: None,
            }
        }
    };
    let HostInventory {
        objects,
        bytes,
        by_storage_class,
        sources,
        foreign,
    } = fleet::inventory(
        &prefix,
        objects.into_iter().map(|o| Listed {
            key: o.key,
            size: o.size,
            storage_class: o.storage_class,
        }),
    );
    let sources: Vec<SourceVerdict> = sources
        .into_iter()
        .map(|(name, inv)| fleet::judge_source(&name, inv, max_age, now))
        .collect();
    HostStatus {
        health: fleet::host_verdict(&sources, &foreign),
        host,
        prefix,
        error: None,
        objects,
        bytes,
        by_storage_class,
        foreign,
        sources,
        cost: None,
    }
}
