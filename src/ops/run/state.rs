//! What a run did, as data: the summary `run --json` prints and hooks read
//! ([`RunRecord`]), and the small state file every run updates so `status`
//! and the metrics file know the last run, and each source's last success,
//! without asking the remotes (docs/monitoring.md has both schemas).
//!
//! The state file is `<state dir>/state-<hash of the config path>.json`
//! (state dir `/var/lib/subvault`, `SUBVAULT_STATE_DIR` for tests), one per
//! config like the run lock, written to a temporary file and renamed, so a
//! reader never sees half of it. A run merges its record in: sources it did
//! not run keep theirs; sources no longer in the config are dropped.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SourceReport, SourceRun, Uploaded};
use crate::config::Config;
use crate::ops::status::Inventory;

/// Where state files live unless `SUBVAULT_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/subvault";

/// The version of the JSON schemas of [`RunRecord`] and [`State`].
pub const SCHEMA_VERSION: u32 = 1;

/// How a run, or one source's run, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Everything worked.
    Ok,
    /// Something failed or was held back (exit status 1).
    Failed,
    /// A signal stopped it (exit status 130/143).
    Interrupted,
}

/// The summary of one run: `run --json` prints it, hooks read it on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub version: u32,
    /// The config file.
    pub config: PathBuf,
    /// When the run started and ended (wall clock).
    pub started: DateTime<Utc>,
    /// When the run ended.
    pub finished: DateTime<Utc>,
    /// `finished - started`, seconds.
    pub duration_seconds: f64,
    /// The time the run planned with (`--now`, else the clock at its start).
    pub now: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// The exit status of `subvault run`.
    pub exit_status: i32,
    /// One entry per source the run covered, in config order.
    pub sources: Vec<SourceRecord>,
    /// Requests sent per remote and kind (S3 API names), retries included;
    /// empty for a local remote, and for a run a signal stopped.
    #[serde(default)]
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One source's part of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's name.
    pub source: String,
    /// How it ended.
    pub outcome: Outcome,
    /// `outcome == ok`.
    pub ok: bool,
    /// When its run started (absent for a source a signal kept from starting).
    pub started: Option<DateTime<Utc>>,
    /// When its run ended.
    pub finished: Option<DateTime<Utc>>,
    /// Seconds it took.
    pub duration_seconds: f64,
    /// The snapshot taken (its name in the snapshot directory), if any.
    pub snapshot_created: Option<String>,
    /// Snapshots destroyed (paths).
    pub snapshots_destroyed: Vec<String>,
    /// Bytes of send stream read, over all remotes.
    pub read_bytes: u64,
    /// Bytes uploaded (objects as stored), over all remotes.
    pub sent_bytes: u64,
    /// Objects uploaded, over all remotes.
    pub uploaded: usize,
    /// Objects deleted, over all remotes.
    pub deleted: usize,
    /// Per remote of the source.
    pub remotes: Vec<RemoteRecord>,
    /// Broken chains and the like: reported, not failures.
    pub warnings: Vec<String>,
    /// What failed or was held back, one line each (empty when ok).
    pub errors: Vec<String>,
}

/// One source's part of a run on one remote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// The remote's id.
    pub remote: String,
    /// No error on this remote (and the source did not fail before it).
    pub ok: bool,
    /// Objects uploaded.
    pub uploaded: Vec<UploadRecord>,
    /// Keys deleted.
    pub deleted: Vec<String>,
    /// Archived WAL keys deleted by WAL retention (PostgreSQL sources).
    #[serde(default)]
    pub wal_deleted: Vec<String>,
    /// Bytes of send stream read for this remote.
    pub read_bytes: u64,
    /// Bytes uploaded to it.
    pub sent_bytes: u64,
    /// This remote's problems.
    pub errors: Vec<String>,
    /// What the remote holds of the source after the run (absent when it
    /// could not be listed, or the source failed before).
    pub backups: Option<Inventory>,
}

/// One object uploaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Its key.
    pub key: String,
    /// A full backup (else relative to a parent).
    pub full: bool,
    /// Bytes stored.
    pub bytes: u64,
    /// Bytes of send stream.
    pub read_bytes: u64,
    /// Seconds the upload took (send, encode, upload, read back).
    pub seconds: f64,
    /// Storage class.
    pub storage_class: String,
}

impl From<&Uploaded> for UploadRecord {
    fn from(u: &Uploaded) -> Self {
        UploadRecord {
            key: u.key.clone(),
            full: u.full,
            bytes: u.stored_bytes,
            read_bytes: u.raw_bytes,
            seconds: u.seconds,
            storage_class: u.storage_class.clone(),
        }
    }
}

impl SourceRecord {
    /// The record of a finished source run.
    pub fn of(run: &SourceRun) -> SourceRecord {
        let mut rec = SourceRecord::empty(&run.source.name, Outcome::Failed);
        rec.started = Some(run.started);
        rec.finished = Some(run.finished);
        rec.duration_seconds = seconds(run.started, run.finished);
        match &run.result {
            Ok(report) => rec.fill(run.source, report),
            Err(e) => {
                rec.errors.push(crate::errors::one_line(e));
                if super::interrupted(e) {
                    rec.outcome = Outcome::Interrupted;
                }
                rec.remotes = run
                    .source
                    .upload_to_remotes
                    .iter()
                    .map(|up| RemoteRecord::empty(&up.id))
                    .collect();
            }
        }
        rec
    }

    /// The record of a source a signal kept from finishing.
    pub fn interrupted(source: &crate::config::Source) -> SourceRecord {
        let mut rec = SourceRecord::empty(&source.name, Outcome::Interrupted);
        rec.errors
            .push("stopped by a signal before this source finished".into());
        rec.remotes = source
            .upload_to_remotes
            .iter()
            .map(|up| RemoteRecord::empty(&up.id))
            .collect();
        rec
    }

    fn empty(name: &str, outcome: Outcome) -> SourceRecord {
        SourceRecord {
            source: name.to_string(),
            outcome,
            ok: outcome == Outcome::Ok,
            started: None,
            finished: None,
            duration_seconds: 0.0,
            snapshot_created: None,
            snapshots_destroyed: Vec::new(),
            read_bytes: 0,
            sent_bytes: 0,
            uploaded: 0,
            deleted: 0,
            remotes: Vec::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn fill(&mut self, source: &crate::config::Source, r: &SourceReport) {
        self.outcome = if r.problems.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        self.ok = self.outcome == Outcome::Ok;
        self.snapshot_created = r.created.clone();
        self.snapshots_destroyed = r.destroyed_snapshots.clone();
        self.read_bytes = r.raw_bytes;
        self.sent_bytes = r.bytes;
        self.uploaded = r.uploaded;
        self.deleted = r.deleted;
        self.warnings = r.warnings.clone();
        self.errors = r.problems.clone();
        self.remotes = source
            .upload_to_remotes
            .iter()
            .map(|up| match r.remotes.get(&up.id) {
                None => RemoteRecord {
                    ok: true,
                    ..RemoteRecord::empty(&up.id)
                },
                Some(rr) => RemoteRecord {
                    remote: up.id.clone(),
                    ok: rr.errors.is_empty(),
                    uploaded: rr.uploaded.iter().map(UploadRecord::from).collect(),
                    deleted: rr.deleted.clone(),
                    wal_deleted: rr.wal_deleted.clone(),
                    read_bytes: rr.uploaded.iter().map(|u| u.raw_bytes).sum(),
                    sent_bytes: rr.uploaded.iter().map(|u| u.stored_bytes).sum(),
                    errors: rr.errors.clone(),
                    backups: rr.inventory.clone(),
                },
            })
            .collect();
    }
}

impl RemoteRecord {
    fn empty(id: &str) -> RemoteRecord {
        RemoteRecord {
            remote: id.to_string(),
            ok: false,
            uploaded: Vec::new(),
            deleted: Vec::new(),
            wal_deleted: Vec::new(),
            read_bytes: 0,
            sent_bytes: 0,
            errors: Vec::new(),
            backups: None,
        }
    }
}

/// Seconds from `a` to `b` (0 when negative).
pub fn seconds(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    ((b - a).num_milliseconds().max(0) as f64) / 1000.0
}

/// The state file: the last run and each source's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub version: u32,
    /// The last run.
    pub last_run: Option<RunSummaryLine>,
    /// Per source (by name).
    pub sources: BTreeMap<String, SourceHistory>,
    /// The hooks the last run ran.
    #[serde(default)]
    pub hooks: Vec<HookRecord>,
}

/// A run in brief.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummaryLine {
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Seconds.
    pub duration_seconds: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// Its exit status.
    pub exit_status: i32,
}

/// One source across runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceHistory {
    /// When its last run ended (or the run that a signal stopped).
    pub last_attempt: DateTime<Utc>,
    /// When its last successful run ended.
    pub last_success: Option<DateTime<Utc>>,
    /// Per remote: the same two times, for this source on that remote.
    pub remotes: BTreeMap<String, RemoteHistory>,
    /// Its last run.
    pub last: SourceRecord,
}

/// One source on one remote across runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteHistory {
    /// When the last run of the source ended.
    pub last_attempt: DateTime<Utc>,
    /// When the last run without an error on this remote ended.
    pub last_success: Option<DateTime<Utc>>,
}

/// What a hook did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookRecord {
    /// `on_success` or `on_failure`.
    pub hook: String,
    /// True when it exited 0 in time.
    pub ok: bool,
    /// What went wrong (exit status, timeout, not found), and the end of its output.
    pub error: Option<String>,
    /// Seconds it ran.
    pub seconds: f64,
}

impl State {
    /// Merges the record of a run in (sources not in the config are dropped).
    pub fn merge(&mut self, config: &Config, run: &RunRecord) {
        self.version = SCHEMA_VERSION;
        self.last_run = Some(RunSummaryLine {
            started: run.started,
            finished: run.finished,
            duration_seconds: run.duration_seconds,
            outcome: run.outcome,
            exit_status: run.exit_status,
        });
        for rec in &run.sources {
            let at = rec.finished.unwrap_or(run.finished);
            let old = self.sources.remove(&rec.source);
            let mut remotes = old.as_ref().map(|h| h.remotes.clone()).unwrap_or_default();
            for r in &rec.remotes {
                let prev = remotes.get(&r.remote).and_then(|h| h.last_success);
                remotes.insert(
                    r.remote.clone(),
                    RemoteHistory {
                        last_attempt: at,
                        last_success: if r.ok { Some(at) } else { prev },
                    },
                );
            }
            let last_success = if rec.ok {
                Some(at)
            } else {
                old.as_ref().and_then(|h| h.last_success)
            };
            self.sources.insert(
                rec.source.clone(),
                SourceHistory {
                    last_attempt: at,
                    last_success,
                    remotes,
                    last: rec.clone(),
                },
            );
        }
        self.sources
            .retain(|name, _| config.sources.iter().any(|s| &s.name == name));
        for h in self.sources.values_mut() {
            let Some(source) = config.source(&h.last.source) else {
                continue;
            };
            h.remotes
                .retain(|id, _| source.upload_to_remotes.iter().any(|u| &u.id == id));
        }
    }
}

/// `SUBVAULT_STATE_DIR` or [`DEFAULT_STATE_DIR`].
pub fn state_dir() -> PathBuf {
    std::env::var_os("SUBVAULT_STATE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The state file of the config at `config_path`.
pub fn state_path(config_path: &Path) -> PathBuf {
    let canonical =
        std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    state_dir().join(format!("state-{}.json", hex::encode(&digest[..8])))
}

/// The state of the config at `config_path`; `None` when no run wrote one yet.
pub fn load(config_path: &Path) -> Result<Option<State>> {
    let path = state_path(config_path);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let state: State = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a subvault state file (delete it; the next run writes a new one)",
            path.display()
        )
    })?;
    Ok(Some(state))
}

/// Merges `run` into the state file and writes it; returns the new state.
pub fn record(config: &Config, run: &RunRecord) -> Result<State> {
    // An unreadable old state is replaced: the run's own record matters more.
    let mut state = load(&config.path).ok().flatten().unwrap_or_default();
    state.merge(config, run);
    save(config, &state)?;
    Ok(state)
}

/// Writes the state file.
pub fn save(config: &Config, state: &State) -> Result<()> {
    let path = state_path(&config.path);
    let dir = path.parent().expect("a file in the state dir");
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let text = serde_json::to_vec_pretty(state)?;
    write_atomically(&path, &text, 0o644)
}

/// Writes `data` to `path` through a temporary file in the same directory,
/// fsynced and renamed into place, so readers see the old or the new file.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The unit's UMask=0077 would narrow `mode`; node_exporter, another
        // user, must read the metrics file.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_str_at(
            "timezone: UTC\nsources:\n  - path: /srv/a\n    snapshots: /srv/s\n    \
             upload_to_remotes: [{id: r, preserve: 1d}]\n  - path: /srv/b\n    snapshots: /srv/s\n    \
             upload_to_remotes: [{id: r, preserve: 1d}]\nremotes:\n  - {id: r, local: {path: /mnt}}\n",
            Path::new("/x/c.yaml"),
        )
        .unwrap()
    }

    fn run(at: &str, a_ok: Option<bool>) -> RunRecord {
        let t: DateTime<Utc> = at.parse().unwrap();
        let mut sources = Vec::new();
        if let Some(ok) = a_ok {
            let mut rec = SourceRecord::empty("a", if ok { Outcome::Ok } else { Outcome::Failed });
            rec.finished = Some(t);
            rec.remotes.push(RemoteRecord {
                ok,
                ..RemoteRecord::empty("r")
            });
            sources.push(rec);
        }
        RunRecord {
            version: SCHEMA_VERSION,
            config: "/x/c.yaml".into(),
            started: t,
            finished: t,
            duration_seconds: 0.0,
            now: t,
            outcome: Outcome::Ok,
            exit_status: 0,
            sources,
            requests: BTreeMap::new(),
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success() {
        let c = config();
        let mut state = State::default();
        state.merge(&c, &run("2026-01-01T00:00:00Z", Some(true)));
        state.merge(&c, &run("2026-01-02T00:00:00Z", Some(false)));
        let a = &state.sources["a"];
        assert_eq!(a.last_attempt.to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert_eq!(
            a.last_success.unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(
            a.remotes["r"].last_success.unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert!(!a.last.ok);
        // A run of other sources leaves a's history alone.
        state.merge(&c, &run("2026-01-03T00:00:00Z", None));
        assert_eq!(
            state.sources["a"].last_attempt.to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        let text = serde_json::to_string(&state).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back.sources.len(), 1);
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomically(&path, b"one", 0o644).unwrap();
        // 0o666 is narrower under any umask but 0; the mode asked for wins.
        write_atomically(&path, b"two", 0o666).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o666
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
