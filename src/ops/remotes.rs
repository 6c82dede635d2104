//! Opening remotes: the one way every command gets a store and its listing.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{Config, RemoteConfig, RemoteKind, Source};
use crate::core::model::Backup;
use crate::errors::UsageError;
use crate::remote::rate::RateLimiter;
use crate::remote::{self, AnyStore, ObjectStore};

/// An opened remote and the backups listed on it.
pub struct OpenRemote {
    /// The remote's config.
    pub config: RemoteConfig,
    /// The store.
    pub store: AnyStore,
    /// Every backup key found under the prefix (all sources).
    pub backups: Vec<Backup>,
    /// The remote's `rate_limit`, shared by every upload to it in this run.
    pub rate: Option<Arc<RateLimiter>>,
}

/// Remote id -> the opened remote, or why it could not be opened or listed.
pub type OpenRemotes = BTreeMap<String, Result<OpenRemote>>;

/// Opens a remote and lists its backups.
pub async fn open(config: RemoteConfig) -> Result<OpenRemote> {
    let store = remote::open(&config)
        .await
        .with_context(|| format!("remote {}: cannot open", config.id))?;
    let listing = remote::list_backups(&store, store.prefix())
        .await
        // The error names the store and the operation.
        .with_context(|| format!("remote {}", config.id))?;
    Ok(OpenRemote {
        rate: config.rate_limit.map(RateLimiter::new),
        config,
        store,
        backups: listing.backups,
    })
}

/// Opens and lists every remote that the given sources upload to (once each).
pub async fn open_for_sources(config: &Config, sources: &[&Source]) -> OpenRemotes {
    let ids = sources
        .iter()
        .flat_map(|s| s.upload_to_remotes.iter().map(|up| up.id.as_str()));
    open_ids(config, ids).await
}

/// Opens and lists the remotes with these ids (once each; every id must be in
/// the config).
pub async fn open_ids<'a>(config: &Config, ids: impl IntoIterator<Item = &'a str>) -> OpenRemotes {
    let mut out = BTreeMap::new();
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        let remote_cfg = config
            .remote(id)
            .expect("config validation guarantees remote ids exist")
            .clone();
        out.insert(id.to_string(), open(remote_cfg).await);
    }
    out
}

/// Picks the remote: `--remote`, else the source's first remote, else the only one.
pub fn pick<'a>(
    config: &'a Config,
    id: Option<&str>,
    source: Option<&Source>,
) -> Result<&'a RemoteConfig, UsageError> {
    let ids = || {
        config
            .remotes
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(id) = id {
        return config.remote(id).ok_or_else(|| {
            UsageError(format!(
                "--remote {id:?}: no such remote in {} (remotes: {})",
                config.path.display(),
                ids()
            ))
        });
    }
    if let Some(up) = source.and_then(|s| s.upload_to_remotes.first()) {
        if let Some(r) = config.remote(&up.id) {
            return Ok(r);
        }
    }
    match config.remotes.as_slice() {
        [only] => Ok(only),
        _ => Err(UsageError(format!(
            "several remotes are configured: choose one with --remote (remotes: {})",
            ids()
        ))),
    }
}

/// The bucket name for archive restore commands ("" for local remotes).
pub fn bucket_of(rc: &RemoteConfig) -> &str {
    match &rc.kind {
        RemoteKind::S3(s) => &s.bucket,
        _ => "",
    }
}
