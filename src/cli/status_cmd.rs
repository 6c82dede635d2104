//! `subvault status`: renders `ops::status` as text, JSON (docs/json.md) or
//! the Prometheus text format, and turns its judgement into the exit status
//! monitoring reads: 0 healthy, 1 not.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;

use super::load_config;
use crate::config::parse_duration;
use crate::errors::{UsageError, EXIT_FAILURE, EXIT_OK};
use crate::ops::run::metrics::{self, Inventories};
use crate::ops::run::state::{self, State};
use crate::ops::sources::select_sources;
use crate::ops::status::{self, short_duration, Health, Status};
use crate::units::{human_bytes, show_time};

/// Arguments of `subvault status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Only these sources (by name; default: all).
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Call a source stale when its newest restorable backup is older than
    /// this (e.g. 26h, 2d); overrides the sources' `max_age`.
    #[arg(long, value_name = "DURATION", value_parser = parse_max_age)]
    pub max_age: Option<Duration>,
    /// Print the status as one JSON object (docs/json.md).
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the metrics (as in `metrics_file`) with a fresh listing's
    /// inventories, in the Prometheus text format.
    #[arg(long)]
    pub prometheus: bool,
    /// Many hosts, one bucket: treat each remote's prefix as a fleet's root
    /// and report every host under it (`<root><host>/`, docs/fleet.md).
    /// Needs list access only. Without --max-age, stale means older than 26h.
    #[arg(long, conflicts_with_all = ["prometheus", "sources"])]
    pub fleet: bool,
    /// With --fleet: only this remote (repeatable; default: every remote).
    #[arg(long = "remote", value_name = "ID", requires = "fleet")]
    pub remotes: Vec<String>,
}

fn parse_max_age(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

/// Runs `subvault status`: 0 when every source is fresh and healthy, 1 when not.
pub fn execute(config_path: &Path, args: &StatusArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    if args.fleet {
        return super::fleet_view::execute(&config, args);
    }
    let sources = select_sources(&config, &args.sources)?;
    if sources.is_empty() {
        return Err(UsageError("no sources in the config".into()).into());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let st = rt.block_on(status::status(&config, &sources, args.max_age, Utc::now()))?;
    if args.json {
        super::print_json(&st)?;
    } else if args.prometheus {
        let saved = state::load(&config.path)?.unwrap_or_default();
        print!("{}", prometheus(&config, &saved, &st));
    } else if !super::quiet() || !st.healthy {
        print!("{}", render(&st, config.timezone, super::quiet()));
    }
    Ok(if st.healthy { EXIT_OK } else { EXIT_FAILURE })
}

/// The metrics of the state file, with the inventories `st` just listed.
fn prometheus(config: &crate::config::Config, saved: &State, st: &Status) -> String {
    let fresh: Inventories = st
        .sources
        .iter()
        .flat_map(|s| {
            s.remotes.iter().filter_map(|r| {
                let inv = r.inventory.clone()?;
                Some(((s.source.clone(), r.remote.clone()), inv))
            })
        })
        .collect();
    metrics::render(config, saved, Some(&fresh))
}

/// The text form: one line per source and remote, then its problems. With
/// `only_problems` (`-q`) the healthy lines are left out.
pub fn render(st: &Status, tz: chrono_tz::Tz, only_problems: bool) -> String {
    let mut out = String::new();
    for s in &st.sources {
        let healthy = s.last_run_ok && s.remotes.iter().all(|r| r.health == Health::Ok);
        if only_problems && healthy {
            continue;
        }
        let last = match &s.last_run {
            None => "no run recorded".to_string(),
            Some(h) => format!(
                "last run {} {}",
                show_time(h.last_attempt, tz),
                if h.last.ok { "ok" } else { "FAILED" }
            ),
        };
        let _ = writeln!(out, "{}: {}", s.source, last);
        if !s.last_run_ok {
            if let Some(h) = &s.last_run {
                for e in &h.last.errors {
                    let _ = writeln!(out, "    last run: {e}");
                }
            }
        }
        for r in &s.remotes {
            let newest = match (&r.inventory, r.newest_age_seconds) {
                (Some(inv), Some(age)) => format!(
                    "newest {} ({} ago), {} backup(s), {}",
                    inv.newest
                        .as_ref()
                        .map(|n| show_time(n.time, tz))
                        .unwrap_or_default(),
                    short_duration(age),
                    inv.backups,
                    human_bytes(inv.bytes)
                ),
                (Some(inv), None) => format!("{} backup(s)", inv.backups),
                (None, _) => "not listed".into(),
            };
            let health = match r.health {
                Health::Ok => "ok",
                Health::Stale => "STALE",
                Health::Broken => "BROKEN",
                Health::Empty => "EMPTY",
                Health::Unreachable => "UNREACHABLE",
            };
            let _ = writeln!(out, "  -> {}: {health}: {newest}", r.remote);
            for p in &r.problems {
                let _ = writeln!(out, "       {p}");
            }
        }
    }
    for r in &st.remotes {
        if let (Some(c), false) = (&r.cost, only_problems) {
            let _ = writeln!(out, "remote {}: {}", r.remote, cost_line(c));
        }
        if r.orphans > 0 && !only_problems {
            let _ = writeln!(
                out,
                "remote {}: {} backup(s) of no configured source (see `subvault list`)",
                r.remote, r.orphans
            );
        }
    }
    if !only_problems || !st.healthy {
        let _ = writeln!(
            out,
            "{}",
            if st.healthy {
                "status: OK"
            } else {
                "status: NOT OK"
            }
        );
    }
    out
}

/// `12.3 GiB stored (STANDARD 1.2 GiB, DEEP_ARCHIVE 11.1 GiB), about 0.06 USD a month`.
pub fn cost_line(c: &crate::core::cost::CostEstimate) -> String {
    let total: u64 = c.by_storage_class.values().map(|x| x.bytes).sum();
    let classes: Vec<String> = c
        .by_storage_class
        .iter()
        .map(|(class, x)| format!("{class} {}", human_bytes(x.bytes)))
        .collect();
    let mut line = format!(
        "{} stored ({}), about {:.2} {} a month",
        human_bytes(total),
        classes.join(", "),
        c.storage_monthly,
        c.currency
    );
    if c.early_deletion > 0.0 {
        let _ = write!(
            line,
            ", plus {:.2} {} of early-deletion charges",
            c.early_deletion, c.currency
        );
    }
    if !c.unpriced.is_empty() {
        let _ = write!(line, " (no price for {})", c.unpriced.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_line_names_classes_totals_and_what_has_no_price() {
        use crate::core::cost::{CostEstimate, PriceTable};
        let t = PriceTable {
            currency: "EUR".into(),
            storage_gb_month: [("STANDARD".to_string(), 0.02)].into(),
            ..Default::default()
        };
        let mut c = CostEstimate::new(&t);
        c.add_storage(&t, "STANDARD", 10 << 30);
        c.add_storage(&t, "GLACIER", 1 << 30);
        assert_eq!(
            cost_line(&c),
            "11.0 GiB stored (GLACIER 1.0 GiB, STANDARD 10.0 GiB), about 0.20 EUR a month \
             (no price for GLACIER)"
        );
    }

    #[test]
    fn max_age_takes_durations_only() {
        assert_eq!(
            parse_max_age("26h").unwrap(),
            Duration::from_secs(26 * 3600)
        );
        assert!(parse_max_age("26").is_err());
        assert!(parse_max_age("0s").is_err());
    }
}
