//! What to restore: the backups of the chosen source on the chosen remote, the
//! point asked for, and the steps of its chain given what DIR already holds.

use anyhow::{bail, Result};
use uuid::Uuid;

use super::{plan_steps, RestoreError, Step, StepAction, Target};
use crate::config::{Config, RemoteConfig, Source};
use crate::core::chain::{self, Selector};
use crate::core::model::Backup;
use crate::errors::UsageError;
use crate::ops::remotes::{self, Decoding};
use crate::ops::sources::{backups_of_source, basename_of, restore_pipe_through, source_uuids};
use crate::remote::{AnyStore, ObjectStore};

/// A restore, decided: where from, which backup, and what each step of its
/// chain needs. Nothing is downloaded or written yet.
pub struct Chosen {
    /// The remote's config.
    pub remote: RemoteConfig,
    /// The store the objects come from.
    pub store: AnyStore,
    /// The backup that is restored (the chain's last step).
    pub leaf: Backup,
    /// The chain, root first.
    pub steps: Vec<Step>,
    /// The name of what is restored: the source's, else the key's base name.
    pub name: Option<String>,
    /// Whether it is a PostgreSQL data directory (its source says so).
    pub postgres: bool,
    /// The source's `restore_pipe_through` for this remote.
    pub restore_pipe_through: Vec<Vec<String>>,
    /// How its objects are decoded (decrypted and authenticated, for an
    /// encrypted remote).
    pub decoding: Decoding,
}

impl Chosen {
    /// The steps to download and receive.
    pub fn to_receive(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|s| s.action == StepAction::Receive)
    }

    /// Bytes to download (objects of unknown size count as 0).
    pub fn bytes_to_get(&self) -> u64 {
        self.to_receive().filter_map(|s| s.backup.size).sum()
    }
}

/// Lists the remote and chooses the chain for `selector` among the backups of
/// `source` (or of the only source the remote holds).
pub async fn choose(
    config: &Config,
    rc: &RemoteConfig,
    source: Option<&Source>,
    selector: Selector,
    target: &Target,
) -> Result<Chosen> {
    let opened = remotes::open(rc.clone()).await?;
    // Before anything is chosen: an encrypted remote needs the identity.
    let decoding = opened.decoding()?;
    let foreign = opened.foreign.len();
    let (store, mut backups) = (
        opened.store,
        std::sync::Arc::unwrap_or_clone(opened.backups),
    );
    let prefix = store.prefix().to_string();
    match source {
        Some(s) => {
            let uuid = source_uuids(config).get(&s.name).copied().flatten();
            backups = backups_of_source(backups, &prefix, s, uuid);
        }
        None if !matches!(selector, Selector::Uuid(_)) => {
            one_source_only(rc, &prefix, &backups)?;
        }
        None => {}
    }
    if backups.is_empty() && foreign > 0 {
        let file = rc
            .encryption
            .as_ref()
            .map(|e| e.key_file.display().to_string())
            .unwrap_or_default();
        bail!(
            "remote {} ({}) has no backups that authenticate with {file}: {foreign} object(s) named like backups fail its MAC (written with another key file, or by someone else); `subvault list` shows them",
            rc.id,
            store.describe()
        );
    }
    if backups.is_empty() {
        bail!(
            "remote {} ({}) has no backups{}",
            rc.id,
            store.describe(),
            source
                .map(|s| format!(" of source {}", s.name))
                .unwrap_or_default()
        );
    }
    let leaf = chain::select(&backups, selector)
        .map_err(RestoreError::from)?
        .clone();
    let steps_chain = chain::chain(&backups, &leaf).map_err(RestoreError::from)?;
    let steps = plan_steps(&steps_chain, &target.subvolumes()?)?;
    let key_name = basename_of(&prefix, &leaf.key());
    let postgres = match source {
        Some(s) => s.postgres.is_some(),
        None => config
            .sources
            .iter()
            .any(|s| s.postgres.is_some() && key_name.as_deref() == Some(&s.name)),
    };
    let name = source.map(|s| s.name.clone()).or(key_name);
    Ok(Chosen {
        restore_pipe_through: restore_pipe_through(config, &rc.id, name.as_deref()).to_vec(),
        remote: rc.clone(),
        store,
        name,
        leaf,
        steps,
        postgres,
        decoding,
    })
}

/// Without `--source`, a remote holding several sources' backups is a usage error.
fn one_source_only(rc: &RemoteConfig, prefix: &str, backups: &[Backup]) -> Result<(), UsageError> {
    let mut names: Vec<String> = backups
        .iter()
        .map(|b| basename_of(prefix, &b.key()).unwrap_or_default())
        .collect();
    names.sort();
    names.dedup();
    let mut sources: Vec<Uuid> = backups.iter().map(|b| b.source_uuid).collect();
    sources.sort();
    sources.dedup();
    if sources.len() > 1 {
        return Err(UsageError(format!(
            "remote {} holds backups of {} sources (names in keys: {}): choose one with --source",
            rc.id,
            sources.len(),
            names.join(", ")
        )));
    }
    Ok(())
}
