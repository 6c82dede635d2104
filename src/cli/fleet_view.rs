//! `subvault status --fleet`: renders `ops::fleet` as text or JSON
//! (docs/json.md) and turns it into the exit status: 0 when every host is
//! fresh and healthy, 1 naming the stale, broken, empty or unreachable ones.

use std::fmt::Write as _;

use anyhow::Result;
use chrono::Utc;

use super::status_cmd::StatusArgs;
use crate::config::Config;
use crate::core::fleet::Verdict;
use crate::core::inventory::ClassTotal;
use crate::errors::{EXIT_FAILURE, EXIT_OK};
use crate::ops::fleet::{self, FleetStatus, DEFAULT_MAX_AGE};
use crate::units::{human_bytes, short_duration, show_time};

/// Runs `status --fleet`.
pub fn execute(config: &Config, args: &StatusArgs) -> Result<i32> {
    let max_age = args.max_age.unwrap_or(DEFAULT_MAX_AGE);
    let rt = tokio::runtime::Runtime::new()?;
    let st = rt.block_on(fleet::fleet_status(
        config,
        &args.remotes,
        max_age,
        Utc::now(),
    ))?;
    if args.json {
        super::print_json(&st)?;
    } else {
        print!("{}", render(&st, config.timezone, super::quiet()));
    }
    Ok(if st.healthy { EXIT_OK } else { EXIT_FAILURE })
}

fn classes(map: &std::collections::BTreeMap<String, ClassTotal>) -> String {
    map.iter()
        .map(|(class, t)| format!("{class} {} / {}", t.count, human_bytes(t.bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text form: per remote, one line per host and per source, then one
/// line per failure. With `only_problems` (`-q`) only the failure lines.
pub fn render(st: &FleetStatus, tz: chrono_tz::Tz, only_problems: bool) -> String {
    let mut out = String::new();
    if !only_problems {
        for r in &st.remotes {
            let _ = writeln!(out, "fleet {}: {} host(s)", r.location, r.hosts.len());
            if r.root_foreign.count > 0 {
                let _ = writeln!(
                    out,
                    "  {} key(s) outside any host prefix (not subvault's layout), e.g. {}",
                    r.root_foreign.count,
                    r.root_foreign.examples.join(", ")
                );
            }
            for h in &r.hosts {
                let _ = writeln!(
                    out,
                    "{}: {}: {} object(s), {}{}",
                    h.host,
                    h.health.word(),
                    h.objects,
                    human_bytes(h.bytes),
                    if h.by_storage_class.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", classes(&h.by_storage_class))
                    }
                );
                for s in &h.sources {
                    let inv = &s.inventory;
                    let newest = match (&inv.newest, s.newest_age_seconds) {
                        (Some(n), Some(age)) => format!(
                            "newest {} ({} ago)",
                            show_time(n.time, tz),
                            short_duration(age)
                        ),
                        _ => "no restorable backup".into(),
                    };
                    let _ = writeln!(
                        out,
                        "  {}: {}: {newest}, {} backup(s), {}",
                        s.source,
                        s.health.word(),
                        inv.backups,
                        human_bytes(inv.bytes)
                    );
                }
                if let Some(c) = &h.cost {
                    let _ = writeln!(out, "  {}", super::status_cmd::cost_line(c));
                }
                if h.foreign.count > 0 {
                    let _ = writeln!(
                        out,
                        "  {} foreign key(s) (not subvault's layout; left alone), e.g. {}",
                        h.foreign.count,
                        h.foreign.examples.join(", ")
                    );
                }
            }
        }
    }
    let failures = st.failures();
    for f in &failures {
        let _ = writeln!(out, "{f}");
    }
    if !only_problems || !st.healthy {
        let hosts: usize = st.remotes.iter().map(|r| r.hosts.len()).sum();
        let failing: usize = st
            .remotes
            .iter()
            .flat_map(|r| &r.hosts)
            .filter(|h| h.health.fails())
            .count();
        let foreign = st
            .remotes
            .iter()
            .flat_map(|r| &r.hosts)
            .filter(|h| h.health == Verdict::Foreign)
            .count();
        let _ = writeln!(
            out,
            "fleet: {hosts} host(s), {failing} not ok, {foreign} foreign: {}",
            if st.healthy { "OK" } else { "NOT OK" }
        );
    }
    out
}
