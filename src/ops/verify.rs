//! `verify`: download objects and check them without btrfs.
//!
//! Each object is decompressed to nowhere while its raw stream's length and
//! SHA-256 are compared with the object's trailer and every send-stream command's
//! CRC-32C is checked; each checked object's send parent must exist. Without a
//! uuid or `all`, the chain of each source's newest backup is checked (what the
//! next restore would need).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use uuid::Uuid;

use super::remotes::{self, bucket_of, Decoding};
use super::restore::{download_cause, object_reader, restore_request_command, Fetch};
use super::sources::{basename_of, restore_pipe_through};
use crate::config::{Config, RemoteConfig};
use crate::core::chain;
use crate::core::model::Backup;
use crate::remote::{AnyStore, ObjectStore};
use crate::stream::{self, StreamError};
use crate::units::human_bytes;

/// Which objects to check.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The chain of the backup of this snapshot.
    pub uuid: Option<Uuid>,
    /// Every object.
    pub all: bool,
    /// Only this many, chosen at random.
    pub sample: Option<usize>,
}

/// What checking one object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It is good; how it was checked.
    Good(String),
    /// It is in archive storage and was not checked; the command that makes it readable.
    Archived(String),
    /// It is bad; what is wrong.
    Bad(String),
}

/// One bad object (or chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    /// The object's key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// What a verify found over all remotes.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Objects downloaded and checked.
    pub checked: usize,
    /// Bad objects and broken chains.
    pub bad: Vec<Bad>,
    /// Keys not checked because they are in archive storage.
    pub archived: Vec<String>,
    /// False when a uuid was asked for and no remote has its backup.
    pub found_uuid: bool,
}

/// Bytes buffered ahead of the checker per object.
const VERIFY_WINDOW: usize = 8 << 20;

/// Checks the selected objects of each remote in turn, telling `on_object`
/// about each as soon as it is checked. Objects are read through their
/// source's `restore_pipe_through` for that remote (the source named by the
/// key's base name), as `restore` reads them.
pub async fn verify(
    config: &Config,
    remotes: &[&RemoteConfig],
    selection: &Selection,
    mut on_object: impl FnMut(&Backup, &Outcome),
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        found_uuid: selection.uuid.is_none(),
        ..Default::default()
    };
    for rc in remotes {
        let opened = remotes::open((*rc).clone()).await?;
        let decoding = opened.decoding()?;
        let store = Arc::new(opened.store);
        let Some(chosen) = select(&store, &opened.backups, selection, &mut report.bad) else {
            continue;
        };
        report.found_uuid |= !chosen.is_empty() && selection.uuid.is_some();
        for b in chosen {
            let name = basename_of(store.prefix(), &b.key());
            let unpipe = restore_pipe_through(config, &rc.id, name.as_deref());
            let outcome = match check(&store, &b, bucket_of(rc), unpipe, &decoding).await {
                Ok(o) => o,
                Err(problem) => Outcome::Bad(problem),
            };
            on_object(&b, &outcome);
            match outcome {
                Outcome::Good(_) => report.checked += 1,
                Outcome::Archived(_) => report.archived.push(b.key().to_string()),
                Outcome::Bad(problem) => {
                    report.checked += 1;
                    report.bad.push(Bad {
                        key: b.key().to_string(),
                        problem,
                    });
                }
            }
        }
    }
    Ok(report)
}

/// The objects to check; chain problems found on the way go to `bad`.
fn select(
    store: &AnyStore,
    backups: &[Backup],
    selection: &Selection,
    bad: &mut Vec<Bad>,
) -> Option<Vec<Backup>> {
    let mut out: BTreeMap<String, Backup> = BTreeMap::new();
    let mut add_chain = |leaf: &Backup, bad: &mut Vec<Bad>| match chain::chain(backups, leaf) {
        Ok(c) => out.extend(c.into_iter().map(|b| (b.key().to_string(), b))),
        Err(e) => bad.push(Bad {
            key: leaf.key().to_string(),
            problem: e.to_string(),
        }),
    };
    if let Some(u) = selection.uuid {
        let leaf = chain::select(backups, chain::Selector::Uuid(u)).ok()?;
        add_chain(leaf, bad);
    } else if selection.all {
        for link in chain::broken(backups) {
            bad.push(Bad {
                key: link.backup.key().to_string(),
                problem: format!(
                    "its send parent {} has no object (missing chain object)",
                    link.missing_parent
                ),
            });
        }
        out.extend(backups.iter().map(|b| (b.key().to_string(), b.clone())));
    } else {
        // One object per snapshot (a restorable one where there are
        // duplicates), then the newest per source.
        let unique = chain::by_uuid(backups);
        let mut newest: BTreeMap<(Uuid, String), &Backup> = BTreeMap::new();
        for b in unique.values().copied() {
            let name = basename_of(store.prefix(), &b.key()).unwrap_or_default();
            let e = newest.entry((b.source_uuid, name)).or_insert(b);
            if (b.time, b.ctransid) > (e.time, e.ctransid) {
                *e = b;
            }
        }
        for leaf in newest.into_values() {
            add_chain(leaf, bad);
        }
    }
    let mut v: Vec<Backup> = out.into_values().collect();
    if let Some(n) = selection.sample {
        fastrand::shuffle(&mut v);
        v.truncate(n);
        v.sort_by(crate::core::object_key::key_order);
    }
    Some(v)
}

/// Checks one object; `Err` says what is wrong with it.
async fn check(
    store: &Arc<AnyStore>,
    b: &Backup,
    bucket: &str,
    restore_pipe_through: &[Vec<String>],
    decoding: &Decoding,
) -> Result<Outcome, String> {
    if matches!(
        b.storage_class.as_deref(),
        Some("GLACIER") | Some("DEEP_ARCHIVE")
    ) {
        let info = store.head(&b.key()).await.map_err(|e| e.to_string())?;
        if info.needs_restore() {
            return Ok(Outcome::Archived(restore_request_command(bucket, &b.key())));
        }
    }
    // Through restore's downloader, so a body that breaks off midway is
    // resumed with a ranged GET instead of failing the check.
    let body = Fetch::start(
        store.clone(),
        b.key().to_string(),
        b.size.unwrap_or(u64::MAX),
        VERIFY_WINDOW,
    );
    let (obj, opts) =
        object_reader(body, b, restore_pipe_through, decoding).map_err(|e| e.to_string())?;
    let s = stream::verify_object_with(obj, opts)
        .await
        .map_err(|e| match &e {
            StreamError::ObjectRead(inner) => download_cause(inner),
            _ => e.to_string(),
        })?;
    let how = match (&s.trailer, s.verified, s.authenticated) {
        (Some(_), true, true) => {
            "decrypted, body MAC ok, length and SHA-256 match the trailer, send-stream CRCs ok"
        }
        (Some(_), true, false) => "length and SHA-256 match the trailer, send-stream CRCs ok",
        _ => "no checksum trailer (not written by subvault): send-stream CRCs ok",
    };
    Ok(Outcome::Good(format!(
        "{}, {} raw, {how}",
        s.codec,
        human_bytes(s.raw_len)
    )))
}
