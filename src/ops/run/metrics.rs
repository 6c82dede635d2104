//! The Prometheus text format (node_exporter's textfile collector) of the
//! state: the last run, and per source and remote its last attempt and
//! success, what it read, sent, uploaded and deleted, its errors, and what the
//! remote holds (backups and bytes per storage class, the newest restorable
//! backup, broken chains). `run` writes it to `metrics_file` after each run
//! (atomically); `status --prometheus` prints it with the inventories of a
//! fresh listing. The metrics are listed in docs/monitoring.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::state::{Outcome, State};
use crate::config::Config;
use crate::ops::status::Inventory;

/// The inventories to show instead of the ones the last runs recorded, by
/// (source, remote): `status` passes a fresh listing's.
pub type Inventories = BTreeMap<(String, String), Inventory>;

struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

/// Collects samples family by family, so each family's HELP and TYPE come
/// once, before its samples.
#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, v)),
            None => self.0.push(Family {
                name,
                help,
                samples: vec![(labels, v)],
            }),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.0 {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} gauge", f.name);
            for (labels, v) in &f.samples {
                let _ = writeln!(out, "{}{labels} {}", f.name, number(*v));
            }
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The metrics of `state` for the sources of `config`.
pub fn render(config: &Config, state: &State, fresh: Option<&Inventories>) -> String {
    let mut m = Families::default();
    if let Some(run) = &state.last_run {
        m.add(
            "subvault_last_run_timestamp_seconds",
            "When the last subvault run ended (Unix time).",
            &[],
            ts(run.finished),
        );
        m.add(
            "subvault_last_run_duration_seconds",
            "How long the last subvault run took.",
            &[],
            run.duration_seconds,
        );
        m.add(
            "subvault_last_run_exit_status",
            "The exit status of the last subvault run (0 ok, 1 failed, 130/143 signal).",
            &[],
            run.exit_status as f64,
        );
    }
    for source in &config.sources {
        let name = source.name.as_str();
        let history = state.sources.get(name);
        if let Some(h) = history {
            let l = [("source", name)];
            m.add(
                "subvault_source_last_attempt_timestamp_seconds",
                "When the last run of the source ended (Unix time).",
                &l,
                ts(h.last_attempt),
            );
            if let Some(t) = h.last_success {
                m.add(
                    "subvault_source_last_success_timestamp_seconds",
                    "When the last successful run of the source ended (Unix time).",
                    &l,
                    ts(t),
                );
            }
            m.add(
                "subvault_source_last_run_success",
                "1 when the last run of the source succeeded, else 0.",
                &l,
                f64::from(u8::from(h.last.outcome == Outcome::Ok)),
            );
            m.add(
                "subvault_source_last_run_duration_seconds",
                "How long the last run of the source took.",
                &l,
                h.last.duration_seconds,
            );
            m.add(
                "subvault_source_snapshots_destroyed",
                "Snapshots the last run of the source destroyed.",
                &l,
                h.last.snapshots_destroyed.len() as f64,
            );
        }
        for up in &source.upload_to_remotes {
            let l = [("source", name), ("remote", up.id.as_str())];
            let rh = history.and_then(|h| h.remotes.get(&up.id));
            let rec = history.and_then(|h| h.last.remotes.iter().find(|r| r.remote == up.id));
            if let Some(rh) = rh {
                m.add(
                    "subvault_remote_last_attempt_timestamp_seconds",
                    "When the last run of the source ended, per remote (Unix time).",
                    &l,
                    ts(rh.last_attempt),
                );
                if let Some(t) = rh.last_success {
                    m.add(
                        "subvault_remote_last_success_timestamp_seconds",
                        "When the last run of the source without an error on this remote ended \
                         (Unix time).",
                        &l,
                        ts(t),
                    );
                }
            }
            if let Some(r) = rec {
                m.add(
                    "subvault_remote_read_bytes",
                    "Bytes of btrfs send stream the last run read for this remote.",
                    &l,
                    r.read_bytes as f64,
                );
                m.add(
                    "subvault_remote_sent_bytes",
                    "Bytes the last run uploaded to this remote (objects as stored).",
                    &l,
                    r.sent_bytes as f64,
                );
                m.add(
                    "subvault_remote_objects_uploaded",
                    "Objects the last run uploaded to this remote.",
                    &l,
                    r.uploaded.len() as f64,
                );
                m.add(
                    "subvault_remote_objects_deleted",
                    "Objects the last run deleted from this remote.",
                    &l,
                    r.deleted.len() as f64,
                );
                m.add(
                    "subvault_remote_errors",
                    "Errors of the last run on this remote (0 when it went well).",
                    &l,
                    r.errors.len() as f64,
                );
            }
            let inventory = match fresh {
                Some(f) => f.get(&(name.to_string(), up.id.clone())),
                None => rec.and_then(|r| r.backups.as_ref()),
            };
            if let Some(inv) = inventory {
                inventory_metrics(&mut m, name, &up.id, inv);
            }
        }
    }
    m.render()
}

fn inventory_metrics(m: &mut Families, source: &str, remote: &str, inv: &Inventory) {
    let l = [("source", source), ("remote", remote)];
    for (class, total) in &inv.by_storage_class {
        let lc = [
            ("source", source),
            ("remote", remote),
            ("storage_class", class.as_str()),
        ];
        m.add(
            "subvault_backups",
            "Backup objects of the source on the remote, per storage class.",
            &lc,
            total.count as f64,
        );
        m.add(
            "subvault_backup_bytes",
            "Bytes stored for the source on the remote, per storage class.",
            &lc,
            total.bytes as f64,
        );
    }
    if let Some(n) = &inv.newest {
        m.add(
            "subvault_newest_backup_timestamp_seconds",
            "Snapshot time of the newest backup a chain on the remote restores (Unix time).",
            &l,
            ts(n.time),
        );
    }
    m.add(
        "subvault_broken_chains",
        "Backups of the source on the remote whose chain does not reach a full backup.",
        &l,
        inv.broken.len() as f64,
    );
}

/// Writes the metrics of `state` to the config's `metrics_file` (atomically,
/// mode 0644: node_exporter runs as another user).
pub fn write(config: &Config, state: &State) -> anyhow::Result<()> {
    let Some(path) = &config.metrics_file else {
        return Ok(());
    };
    super::state::write_atomically(path, render(config, state, None).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_plain() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1.25), "1.250");
        let mut m = Families::default();
        m.add("x", "help", &[("source", "s")], 1.0);
        m.add("x", "help", &[("source", "t")], 2.0);
        assert_eq!(
            m.render(),
            "# HELP x help\n# TYPE x gauge\nx{source=\"s\"} 1\nx{source=\"t\"} 2\n"
        );
    }
}
