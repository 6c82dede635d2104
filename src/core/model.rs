//! The nouns every part of subvault shares: local snapshots and remote backups.
//!
//! These are plain data. The btrfs adapter produces [`Snapshot`]s, the remote
//! listing produces [`Backup`]s (by parsing object keys), and the planner consumes
//! both without doing any I/O.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A read-only snapshot of a source subvolume, as found in (or about to be
/// created in) the source's snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Absolute path of the snapshot subvolume.
    pub path: PathBuf,
    /// The snapshot's own subvolume uuid. `Uuid::nil()` for a snapshot that is
    /// only planned (see [`Snapshot::planned`]).
    pub uuid: Uuid,
    /// The uuid of the subvolume it was snapshotted from (the source).
    pub parent_uuid: Uuid,
    /// The btrfs transaction id of the last change captured in the snapshot.
    /// Orders snapshots of one source: lower means older content.
    pub ctransid: u64,
    /// The snapshot's time: the time of the run that took it (recorded in its
    /// name), or its btrfs creation time when the name does not say.
    pub time: DateTime<Utc>,
    /// True for a snapshot a run would create but that does not exist yet.
    #[serde(default)]
    pub planned: bool,
}

impl Snapshot {
    /// A snapshot that a run would take now: it has no uuid yet.
    pub fn planned(path: PathBuf, parent_uuid: Uuid, ctransid: u64, time: DateTime<Utc>) -> Self {
        Snapshot {
            path,
            uuid: Uuid::nil(),
            parent_uuid,
            ctransid,
            time,
            planned: true,
        }
    }
}

/// A backup object in a remote, as described by its key (see `object_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The full object key, prefix included. Shared (not copied) by the
    /// plan's verdicts and `list`'s entries: a copy per backup was 19 MiB
    /// at 100k backups (issue 21).
    pub key: Arc<str>,
    /// The uuid of the snapshot this backup was sent from.
    pub uuid: Uuid,
    /// The uuid of the snapshot the stream is relative to (`btrfs send -p`),
    /// `None` for a full backup.
    pub send_parent_uuid: Option<Uuid>,
    /// The uuid of the source subvolume the snapshot was taken of (`.prnt`).
    pub source_uuid: Uuid,
    /// ctransid of the snapshot (`.ctid`).
    pub ctransid: u64,
    /// The snapshot's time (`.ctim`).
    pub time: DateTime<Utc>,
    /// Object size in bytes, when known from the listing.
    pub size: Option<u64>,
    /// Storage class reported by the listing (e.g. `STANDARD`, `DEEP_ARCHIVE`);
    /// one shared string per class in a listing (see [`StorageClasses`]).
    pub storage_class: Option<Arc<str>>,
    /// Compression recorded in the key (`.cmpr...`); `None` when the key does not
    /// say (e.g. objects written by btrfs2s3), in which case readers sniff magic bytes.
    pub codec: Option<Codec>,
}

/// Interns storage class names, so a listing of 100k objects in one class
/// holds one string instead of 100k copies.
#[derive(Debug, Default)]
pub struct StorageClasses(Vec<Arc<str>>);

impl StorageClasses {
    /// The shared string for `class`.
    pub fn intern(&mut self, class: &str) -> Arc<str> {
        if let Some(c) = self.0.iter().find(|c| &***c == class) {
            return c.clone();
        }
        let c: Arc<str> = Arc::from(class);
        self.0.push(c.clone());
        c
    }
}

/// Compression applied to the raw `btrfs send` stream before upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Zstandard (the default).
    #[default]
    Zstd,
    /// gzip (RFC 1952).
    Gzip,
    /// No compression.
    None,
}

impl Codec {
    /// The name used in config files and in the `.cmpr` key suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
            Codec::None => "none",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown codec name.
#[derive(Debug, thiserror::Error)]
#[error("unknown compression {0:?} (expected zstd, gzip or none)")]
pub struct UnknownCodec(pub String);

impl FromStr for Codec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(Codec::Zstd),
            "gzip" => Ok(Codec::Gzip),
            "none" => Ok(Codec::None),
            other => Err(UnknownCodec(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_class_is_held_once_per_listing() {
        let mut classes = StorageClasses::default();
        let a = classes.intern("STANDARD");
        let b = classes.intern("GLACIER");
        let c = classes.intern("STANDARD");
        assert!(Arc::ptr_eq(&a, &c), "the same class shares one string");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!((&*a, &*b), ("STANDARD", "GLACIER"));
    }
}
