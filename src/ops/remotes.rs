//! Opening remotes: the one way every command gets a store and its listing.
//!
//! An encrypted remote's key file is read here, and its listing is
//! authenticated here: only backups whose key carries a valid MAC reach the
//! planner, `restore`, `verify` and `list`'s tree; the rest is foreign
//! ([`OpenRemote::foreign`]) and never touched.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{Config, RemoteConfig, RemoteKind, Source};
use crate::core::auth::{self, Foreign};
use crate::core::model::Backup;
use crate::crypt::KeyFile;
use crate::errors::UsageError;
use crate::remote::rate::RateLimiter;
use crate::remote::{self, AnyStore, ObjectStore};
use crate::stream::{DecodeOptions, Seal, Unseal};

/// An opened remote and the backups listed on it.
pub struct OpenRemote {
    /// The remote's config.
    pub config: RemoteConfig,
    /// The store.
    pub store: AnyStore,
    /// Every backup key found under the prefix (all sources); in an encrypted
    /// remote, only those whose key authenticates. Shared with the plans
    /// made from it (their verdicts point into it).
    pub backups: Arc<Vec<Backup>>,
    /// The remote's `rate_limit`, shared by every upload to it in this run.
    pub rate: Option<Arc<RateLimiter>>,
    /// The key file of an encrypted remote.
    pub keys: Option<Arc<KeyFile>>,
    /// In an encrypted remote, the keys that look like backups but do not
    /// authenticate: shown by `list`, never planned, restored, verified or deleted.
    pub foreign: Vec<Foreign>,
}

impl OpenRemote {
    /// How a new object under `key` is encrypted and authenticated (`None`:
    /// the remote is not encrypted).
    pub fn seal(&self, key: &str) -> Option<Seal> {
        self.keys.as_ref().map(|k| Seal {
            recipients: k.recipients.clone(),
            auth: Arc::new(k.auth.clone()),
            name: auth::mac_name(self.store.prefix(), key).to_string(),
        })
    }

    /// How this remote's objects are read; fails with one line when it is
    /// encrypted and its key file holds no identity (a write-only copy).
    pub fn decoding(&self) -> Result<Decoding, UsageError> {
        let keys = match &self.keys {
            None => None,
            Some(k) if !k.can_decrypt() => {
                return Err(UsageError(format!(
                    "remote {} is encrypted and its key file {} holds no identity (no AGE-SECRET-KEY-1... line): reading backups needs the full key file, and this host has a write-only copy",
                    self.config.id,
                    k.path.display()
                )))
            }
            Some(k) => Some((
                Arc::new(k.identities.clone()),
                Arc::new(k.auth.clone()),
                k.path.display().to_string(),
            )),
        };
        Ok(Decoding {
            prefix: self.store.prefix().to_string(),
            keys,
        })
    }
}

/// How the objects of one remote are decoded: plain, or decrypted and
/// authenticated with its key file.
#[derive(Clone)]
pub struct Decoding {
    prefix: String,
    keys: Option<(Arc<Vec<age::x25519::Identity>>, Arc<auth::AuthKey>, String)>,
}

impl Decoding {
    /// The decode options of backup `b`.
    pub fn options(&self, b: &Backup) -> DecodeOptions {
        let mut opts = DecodeOptions::new(b.codec);
        opts.unseal = self.keys.as_ref().map(|(ids, auth, file)| Unseal {
            identities: Some(ids.clone()),
            auth: auth.clone(),
            name: auth::mac_name(&self.prefix, &b.key()).to_string(),
            key_file: file.clone(),
        });
        opts
    }

    /// True for an encrypted remote.
    pub fn encrypted(&self) -> bool {
        self.keys.is_some()
    }
}

/// Remote id -> the opened remote, or why it could not be opened or listed.
pub type OpenRemotes = BTreeMap<String, Result<OpenRemote>>;

/// Reads the key file of an encrypted remote (`None` when it is not
/// encrypted); a key file that cannot be used is a usage error naming it.
pub fn load_keys(config: &RemoteConfig) -> Result<Option<Arc<KeyFile>>, UsageError> {
    match &config.encryption {
        None => Ok(None),
        Some(e) => KeyFile::load(&e.key_file)
            .map(|k| Some(Arc::new(k)))
            .map_err(|err| UsageError(format!("remote {}: {err}", config.id))),
    }
}

/// Opens a remote and lists its backups (authenticated, when it is encrypted).
pub async fn open(config: RemoteConfig) -> Result<OpenRemote> {
    let keys = load_keys(&config)?;
    let store = remote::open(&config)
        .await
        .with_context(|| format!("remote {}: cannot open", config.id))?;
    let listing = remote::list_backups(&store, store.prefix())
        .await
        // The error names the store and the operation.
        .with_context(|| format!("remote {}", config.id))?;
    let (backups, foreign) = match &keys {
        None => (listing.backups, Vec::new()),
        Some(k) => {
            let a = auth::authenticate(listing.backups, store.prefix(), &k.auth);
            if !a.foreign.is_empty() {
                tracing::warn!(
                    "remote {}: {} object(s) named like backups do not authenticate with {} (foreign: never planned, restored or deleted; `subvault list` shows them)",
                    config.id,
                    a.foreign.len(),
                    k.path.display()
                );
            }
            (a.backups, a.foreign)
        }
    };
    Ok(OpenRemote {
        rate: config.rate_limit.map(RateLimiter::new),
        config,
        store,
        backups: Arc::new(backups),
        keys,
        foreign,
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
