//! Rendering plans: the backup tree for people and the JSON document for machines.
//!
//! Pure functions over [`SourcePlan`], so the output is tested without btrfs or S3.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::core::planner::{Action, BackupAction, BackupPlan, KeepReason, SnapshotAction, Upload};
use crate::ops::plan::SourcePlan;
use crate::units::human_bytes;

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn reasons_text(reasons: &[KeepReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn marker(b: &BackupPlan) -> &'static str {
    match (b.action, b.broken_chain) {
        (BackupAction::Upload, _) => "+",
        (BackupAction::Delete, _) => "-",
        (BackupAction::Keep, true) => "!",
        (BackupAction::Keep, false) => " ",
    }
}

fn backup_line(b: &BackupPlan, tz: Tz) -> String {
    let time = b.time().with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %:z");
    let kind = if b.send_parent_uuid().is_none() {
        "full"
    } else {
        "diff"
    };
    let reasons = if b.reasons.is_empty() {
        "not preserved".to_string()
    } else {
        reasons_text(&b.reasons)
    };
    let size = b.size().map(human_bytes).unwrap_or_else(|| "-".to_string());
    let class = b.storage_class().unwrap_or("-");
    let verdict = match (b.action, b.broken_chain) {
        (BackupAction::Upload, _) => "new",
        (BackupAction::Delete, _) => "delete",
        (BackupAction::Keep, true) => "keep, BROKEN CHAIN (parent object missing)",
        (BackupAction::Keep, false) => "keep",
    };
    format!("{time}  {kind}  [{reasons}]  {size}  {class}  {verdict}")
}

/// The human-readable tree and actions for a set of source plans.
pub fn render_text(sources: &[SourcePlan], tz: Tz) -> String {
    let mut out = String::new();
    write_text(&mut out, sources, tz);
    out
}

/// [`render_text`] into `out` as it goes: `plan` writes it straight to
/// stdout, since the text of 100k backups is 10 MiB (issue 21).
pub fn write_text(out: &mut dyn std::fmt::Write, sources: &[SourcePlan], tz: Tz) {
    for (i, sp) in sources.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "source {} ({})", sp.name, sp.path);
        for (remote, (desc, policy)) in &sp.remotes {
            let _ = writeln!(out, "  remote {remote} {desc}, keeping {policy}");
            write_tree(out, sp, remote, tz);
            if let Some(c) = sp.costs.get(remote) {
                let _ = writeln!(
                    out,
                    "    after this run: {}",
                    super::status_cmd::cost_line(c)
                );
            }
        }
        write_snapshots(out, sp);
        for w in &sp.plan.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        write_actions(out, sp);
        write_wal(out, sp);
    }
}

/// Each remote's WAL archive (range, size) and what WAL retention would
/// delete from it.
fn write_wal(out: &mut dyn std::fmt::Write, sp: &SourcePlan) {
    for w in &sp.wal {
        let a = &w.archive;
        let range = match (&a.first_segment, &a.last_segment) {
            (Some(f), Some(l)) => format!("{f} .. {l}"),
            _ => "no segments".into(),
        };
        let _ = writeln!(
            out,
            "  WAL archive on {}: {range}, {} objects, {}{}",
            w.remote,
            a.objects,
            human_bytes(a.bytes),
            a.newest_upload
                .map(|t| format!(", newest uploaded {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        );
        let r = &w.retention;
        let verdict = if let Some(why) = &r.held_back {
            format!("keeps everything: {why}")
        } else if r.delete.is_empty() {
            "deletes nothing (every kept backup needs what is there)".into()
        } else {
            let from: Vec<String> = r.keep_from.values().cloned().collect();
            format!(
                "deletes {} objects ({}) older than {}{}",
                r.delete.len(),
                human_bytes(r.delete_bytes),
                from.join(", "),
                if w.over_budget {
                    "; over the prune budget: a run deletes the oldest it allows, later runs the rest (all at once with --allow-large-prune)"
                } else {
                    ""
                }
            )
        };
        let _ = writeln!(out, "    WAL retention {verdict}");
    }
}

/// One remote's backups as a tree: full backups as roots, each backup under
/// its send parent.
fn write_tree(out: &mut dyn std::fmt::Write, sp: &SourcePlan, remote: &str, tz: Tz) {
    let backups: Vec<&BackupPlan> = sp
        .plan
        .backups
        .iter()
        .filter(|b| *b.remote == *remote)
        .collect();
    if backups.is_empty() {
        let _ = writeln!(out, "    (no backups)");
        return;
    }
    let present: HashSet<Uuid> = backups.iter().map(|b| b.uuid()).collect();
    let mut children: BTreeMap<Option<Uuid>, Vec<&BackupPlan>> = BTreeMap::new();
    for b in &backups {
        let parent = b.send_parent_uuid().filter(|p| present.contains(p));
        children.entry(parent).or_default().push(b);
    }
    let mut seen = HashSet::new();
    write_children(out, &children, None, "  ", tz, &mut seen);
}

/// The children of `parent` (roots for `None`), each followed by its own.
fn write_children(
    out: &mut dyn std::fmt::Write,
    children: &BTreeMap<Option<Uuid>, Vec<&BackupPlan>>,
    parent: Option<Uuid>,
    prefix: &str,
    tz: Tz,
    seen: &mut HashSet<Uuid>,
) {
    let Some(kids) = children.get(&parent) else {
        return;
    };
    let mut kids = kids.clone();
    kids.sort_by_key(|b| (b.ctransid(), b.time()));
    for (i, b) in kids.iter().enumerate() {
        let last = i + 1 == kids.len();
        let branch = if parent.is_none() {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let _ = writeln!(
            out,
            "  {} {prefix}{branch}{}",
            marker(b),
            backup_line(b, tz)
        );
        // Guard against cycles in a corrupt bucket and duplicate uuids.
        if !seen.insert(b.uuid()) {
            continue;
        }
        let next = if parent.is_none() {
            format!("{prefix}  ")
        } else if last {
            format!("{prefix}   ")
        } else {
            format!("{prefix}│  ")
        };
        write_children(out, children, Some(b.uuid()), &next, tz, seen);
    }
}

fn write_snapshots(out: &mut dyn std::fmt::Write, sp: &SourcePlan) {
    let _ = writeln!(out, "  snapshots:");
    if sp.plan.snapshots.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for s in &sp.plan.snapshots {
        let action = match s.action {
            SnapshotAction::Keep => "keep   ",
            SnapshotAction::Create => "create ",
            SnapshotAction::Destroy => "destroy",
        };
        let reasons = if s.reasons.is_empty() {
            String::new()
        } else {
            format!("  [{}]", reasons_text(&s.reasons))
        };
        let _ = writeln!(out, "    {action} {}{reasons}", file_name(&s.snapshot.path));
    }
}

fn write_actions(out: &mut dyn std::fmt::Write, sp: &SourcePlan) {
    let _ = writeln!(out, "  actions:");
    if sp.plan.actions.is_empty() {
        let _ = writeln!(out, "    nothing to do");
    }
    for (n, a) in sp.plan.actions.iter().enumerate() {
        let text = match a {
            Action::CreateSnapshot { path } => format!("create snapshot {}", path.display()),
            Action::UploadBackup(Upload {
                remote,
                snapshot_path,
                send_parent_path,
                ..
            }) => match send_parent_path {
                None => format!("upload {} to {remote} (full)", file_name(snapshot_path)),
                Some(p) => format!(
                    "upload {} to {remote} (relative to {})",
                    file_name(snapshot_path),
                    file_name(p)
                ),
            },
            Action::DestroySnapshot { path, .. } => {
                format!("destroy snapshot {}", path.display())
            }
            Action::DeleteBackup { remote, key } => format!("delete {key} from {remote}"),
        };
        let _ = writeln!(out, "    {}. {text}", n + 1);
    }
}

fn opt_uuid(u: Uuid) -> Value {
    if u.is_nil() {
        Value::Null
    } else {
        json!(u.to_string())
    }
}

/// One backup of the JSON plan, borrowed from the plan: a plan of 100,000
/// backups is written out without a second copy of it as a JSON tree.
#[derive(Serialize)]
struct BackupJson<'a> {
    source: &'a str,
    remote: &'a str,
    key: Option<std::borrow::Cow<'a, str>>,
    uuid: Option<String>,
    send_parent_uuid: Option<String>,
    ctransid: u64,
    time: String,
    action: BackupAction,
    reasons: &'a [KeepReason],
    size: Option<u64>,
    storage_class: Option<&'a str>,
    broken_chain: bool,
}

/// The backups of the JSON plan, each made as it is written: a vector of
/// them held 17 MiB more at 100k backups (issue 21).
struct BackupsJson<'a>(&'a [SourcePlan]);

impl Serialize for BackupsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let count = self.0.iter().map(|sp| sp.plan.backups.len()).sum();
        let mut seq = s.serialize_seq(Some(count))?;
        for sp in self.0 {
            for b in &sp.plan.backups {
                seq.serialize_element(&backup_json(sp, b))?;
            }
        }
        seq.end()
    }
}

fn backup_json<'a>(sp: &'a SourcePlan, b: &'a BackupPlan) -> BackupJson<'a> {
    let key = b.key().or_else(|| {
        sp.upload_keys
            .get(&(b.remote.to_string(), b.uuid()))
            .map(|k| k.as_str().into())
    });
    BackupJson {
        source: &sp.name,
        remote: &b.remote,
        key,
        uuid: (!b.uuid().is_nil()).then(|| b.uuid().to_string()),
        send_parent_uuid: b.send_parent_uuid().map(|u| u.to_string()),
        ctransid: b.ctransid(),
        time: b.time().to_rfc3339(),
        action: b.action,
        reasons: &b.reasons,
        size: b.size(),
        storage_class: b.storage_class(),
        broken_chain: b.broken_chain,
    }
}

/// The machine-readable plan (see [`render_json`]).
#[derive(Serialize)]
pub struct PlanJson<'a> {
    snapshots: Vec<Value>,
    backups: BackupsJson<'a>,
    actions: Vec<Value>,
    wal: Vec<Value>,
    costs: Vec<Value>,
}

/// The machine-readable plan: one object with `snapshots`, `backups`,
/// `actions`, `wal` and `costs` over all sources; times are RFC 3339. Serialize it
/// (`super::print_json`) to stream it out.
pub fn render_json(sources: &[SourcePlan]) -> PlanJson<'_> {
    let mut snapshots = Vec::new();
    let mut actions = Vec::new();
    for sp in sources {
        for s in &sp.plan.snapshots {
            snapshots.push(json!({
                "source": sp.name,
                "path": s.snapshot.path,
                "uuid": opt_uuid(s.snapshot.uuid),
                "ctransid": s.snapshot.ctransid,
                "time": s.snapshot.time.to_rfc3339(),
                "action": s.action,
                "reasons": s.reasons,
            }));
        }
        for a in &sp.plan.actions {
            let mut v = serde_json::to_value(a).expect("actions serialize");
            if let Value::Object(m) = &mut v {
                m.insert("source".into(), json!(sp.name));
                if let Action::UploadBackup(Upload { remote, uuid, .. }) = a {
                    if let Some(k) = sp.upload_keys.get(&(remote.clone(), *uuid)) {
                        m.insert("key".into(), json!(k));
                    }
                }
            }
            actions.push(v);
        }
    }
    let wal: Vec<Value> = sources
        .iter()
        .flat_map(|sp| {
            sp.wal.iter().map(move |w| {
                let mut v = serde_json::to_value(w).expect("WAL plans serialize");
                if let Value::Object(m) = &mut v {
                    m.insert("source".into(), json!(sp.name));
                }
                v
            })
        })
        .collect();
    let costs: Vec<Value> = sources
        .iter()
        .flat_map(|sp| {
            sp.costs.iter().map(|(remote, c)| {
                let mut v = serde_json::to_value(c).expect("costs serialize");
                if let Value::Object(m) = &mut v {
                    m.insert("source".into(), json!(sp.name));
                    m.insert("remote".into(), json!(remote));
                }
                v
            })
        })
        .collect();
    PlanJson {
        snapshots,
        backups: BackupsJson(sources),
        actions,
        wal,
        costs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Backup, Snapshot};
    use crate::core::planner::{plan, PlanInput, RemoteInput};
    use chrono::{DateTime, Utc};
    use std::path::PathBuf;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sample() -> SourcePlan {
        let src = Uuid::from_u128(99);
        let snap = |c: u64, t: &str| Snapshot {
            path: PathBuf::from(format!("/snaps/data.{t}")),
            uuid: Uuid::from_u128(c as u128),
            parent_uuid: src,
            ctransid: c,
            time: utc(t),
            planned: false,
        };
        let s1 = snap(1, "2025-01-01T00:00:00Z");
        let s2 = snap(2, "2025-01-02T00:00:00Z");
        let s3 = snap(3, "2025-01-02T05:00:00Z");
        let b = |s: &Snapshot, parent: Option<u64>| Backup {
            key_form: format!("data.k{}", s.ctransid).into(),
            uuid: s.uuid,
            send_parent_uuid: parent.map(|p| Uuid::from_u128(p as u128)),
            source_uuid: src,
            ctransid: s.ctransid,
            time: s.time,
            size: Some(2048),
            storage_class: Some("STANDARD".into()),
            codec: None,
        };
        let input = PlanInput {
            tz: Tz::UTC,
            now: utc("2025-01-03T00:00:00Z"),
            source_uuid: src,
            snapshots: vec![
                s1.clone(),
                s2.clone(),
                s3.clone(),
                Snapshot::planned(
                    PathBuf::from("/snaps/data.new"),
                    src,
                    4,
                    utc("2025-01-03T00:00:00Z"),
                ),
            ],
            remotes: vec![RemoteInput {
                id: "aws".into(),
                policy: "1y 1d".parse().unwrap(),
                backups: vec![b(&s1, None), b(&s2, Some(1)), b(&s3, Some(2))].into(),
                unreachable: false,
            }],
        };
        SourcePlan {
            name: "data".into(),
            path: "/srv/data".into(),
            plan: plan(&input),
            remotes: BTreeMap::from([(
                "aws".to_string(),
                (
                    "s3://b/".to_string(),
                    "1 yearly (full), 1 daily".to_string(),
                ),
            )]),
            upload_keys: std::collections::HashMap::new(),
            costs: BTreeMap::new(),
            problems: Vec::new(),
            wal: Vec::new(),
        }
    }

    #[test]
    fn text_tree_nests_children_under_their_send_parent() {
        let text = render_text(&[sample()], Tz::UTC);
        let lines: Vec<&str> = text.lines().collect();
        let pos = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
        };
        // s1 is the root (full, kept), s2 relative to s1 and deleted, s3 relative to s2 and deleted
        // (not preserved), the new snapshot 4 uploaded relative to s1.
        let root = pos("2025-01-01 00:00:00 +00:00  full");
        let day2 = pos("2025-01-02 00:00:00 +00:00  diff");
        let day2b = pos("2025-01-02 05:00:00 +00:00  diff");
        let new = pos("2025-01-03 00:00:00 +00:00  diff");
        assert!(root < day2 && day2 < day2b, "{text}");
        assert!(
            lines[day2].starts_with("  - "),
            "deletion marker: {}",
            lines[day2]
        );
        assert!(
            lines[new].starts_with("  + "),
            "upload marker: {}",
            lines[new]
        );
        // s3 is indented deeper than s2 (its parent).
        let indent = |l: &str| l.find("2025").unwrap();
        assert!(indent(lines[day2b]) > indent(lines[day2]), "{text}");
        assert!(
            text.contains("1. create snapshot /snaps/data.new"),
            "{text}"
        );
        assert!(
            text.contains("upload data.new to aws (relative to data.2025-01-01T00:00:00Z)"),
            "{text}"
        );
        assert!(
            text.contains("destroy snapshot /snaps/data.2025-01-02T05:00:00Z"),
            "{text}"
        );
        assert!(text.contains("delete data.k3 from aws"), "{text}");
    }

    #[test]
    fn a_priced_plan_shows_the_cost_per_remote_in_text_and_json() {
        use crate::core::cost::{plan_cost, PriceTable};
        let mut sp = sample();
        let table = PriceTable {
            currency: "EUR".into(),
            storage_gb_month: [("STANDARD".to_string(), 0.02)].into(),
            ..Default::default()
        };
        let now = utc("2025-01-03T00:00:00Z");
        sp.costs
            .insert("aws".into(), plan_cost(&table, &sp.plan.backups, now));
        let text = render_text(std::slice::from_ref(&sp), chrono_tz::UTC);
        assert!(
            text.contains("    after this run: ") && text.contains("EUR a month"),
            "{text}"
        );
        let v = serde_json::to_value(render_json(&[sp])).unwrap();
        assert_eq!(v["costs"][0]["remote"], "aws");
        assert_eq!(v["costs"][0]["currency"], "EUR");
        assert!(v["costs"][0]["storage_monthly"].is_number());
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v = serde_json::to_value(render_json(&[sample()])).unwrap();
        let snaps = v["snapshots"].as_array().unwrap();
        assert_eq!(snaps.len(), 4);
        for s in snaps {
            for f in ["path", "uuid", "time", "action", "reasons"] {
                assert!(s.get(f).is_some(), "snapshot lacks {f}: {s}");
            }
        }
        let created = snaps.iter().find(|s| s["action"] == "create").unwrap();
        assert!(created["uuid"].is_null());
        let backups = v["backups"].as_array().unwrap();
        for b in backups {
            for f in [
                "remote",
                "key",
                "uuid",
                "send_parent_uuid",
                "time",
                "action",
                "reasons",
            ] {
                assert!(b.get(f).is_some(), "backup lacks {f}: {b}");
            }
            DateTime::parse_from_rfc3339(b["time"].as_str().unwrap()).expect("RFC 3339 time");
        }
        let kept = backups.iter().find(|b| b["key"] == "data.k1").unwrap();
        assert_eq!(kept["action"], "keep");
        assert_eq!(kept["reasons"][0], "2025 yearly");
        assert!(backups.iter().any(|b| b["action"] == "upload"));
        let kinds: Vec<&str> = v["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"create_snapshot"));
        assert!(kinds.contains(&"upload_backup") && kinds.contains(&"delete_backup"));
    }
}
