//! The nouns every part of subvault shares: local snapshots and remote backups.
//!
//! These are plain data. The btrfs adapter produces [`Snapshot`]s, the remote
//! listing produces [`Backup`]s (by parsing object keys), and the planner consumes
//! both without doing any I/O.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
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
#[derive(Clone)]
pub struct Backup {
    /// The object key, held compactly; [`Backup::key`] gives the text.
    pub key_form: KeyForm,
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

impl Backup {
    /// The full object key, prefix included.
    pub fn key(&self) -> Cow<'_, str> {
        crate::core::object_key::key_text(self)
    }
}

/// Equal when every field is, the key compared as text (a key may be held
/// in either [`KeyForm`]).
impl PartialEq for Backup {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
            && self.send_parent_uuid == other.send_parent_uuid
            && self.source_uuid == other.source_uuid
            && self.ctransid == other.ctransid
            && self.time == other.time
            && self.size == other.size
            && self.storage_class == other.storage_class
            && self.codec == other.codec
            && self.key() == other.key()
    }
}

impl Eq for Backup {}

impl fmt::Debug for Backup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backup")
            .field("key", &self.key())
            .field("uuid", &self.uuid)
            .field("send_parent_uuid", &self.send_parent_uuid)
            .field("source_uuid", &self.source_uuid)
            .field("ctransid", &self.ctransid)
            .field("time", &self.time)
            .field("size", &self.size)
            .field("storage_class", &self.storage_class)
            .field("codec", &self.codec)
            .finish()
    }
}

/// How a [`Backup`] holds its object key.
///
/// Nearly every key is exactly what `object_key::format_key` writes for the
/// backup's own fields, so it is held as the part before its suffixes (one
/// string shared by a listing's keys of a source), the offset its time was
/// written in, and whatever follows the suffixes subvault writes (an `.auth`
/// MAC, a PostgreSQL record, btrfs2s3's `.gz`). [`Backup::key`] writes it out
/// again. The text of every key was 20 MiB at 100k backups, a third of
/// `plan`'s peak (issue 21).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyForm {
    /// The key as it is: one that `format_key` would not write the same way.
    /// Tests and callers that name a backup by hand use this form.
    Verbatim(Arc<str>),
    /// `stem`, then the suffixes written from the backup's fields with the
    /// time in `offset`, then `tail`. Made by `object_key::KeyForms`, only
    /// for keys whose time has a four-digit year (which `key_order` relies on).
    Derived {
        /// Prefix and base name (`backups/home`), shared.
        stem: Arc<str>,
        /// The offset the key's `.ctim` is written in.
        offset: FixedOffset,
        /// Whatever follows `.seqn0[.cmpr…]`, e.g. `.auth<mac>`.
        tail: Option<Box<str>>,
    },
}

impl From<&str> for KeyForm {
    fn from(key: &str) -> Self {
        KeyForm::Verbatim(key.into())
    }
}

impl From<String> for KeyForm {
    fn from(key: String) -> Self {
        KeyForm::Verbatim(key.into())
    }
}

impl From<Arc<str>> for KeyForm {
    fn from(key: Arc<str>) -> Self {
        KeyForm::Verbatim(key)
    }
}

/// Interns strings a listing repeats (storage classes, key stems), so 100k
/// objects in one class hold one string instead of 100k copies.
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    /// The shared string equal to `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(c) = self.0.get(s) {
            return c.clone();
        }
        let c: Arc<str> = Arc::from(s);
        self.0.insert(c.clone());
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
        let mut classes = Interner::default();
        let a = classes.intern("STANDARD");
        let b = classes.intern("GLACIER");
        let c = classes.intern("STANDARD");
        assert!(Arc::ptr_eq(&a, &c), "the same class shares one string");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!((&*a, &*b), ("STANDARD", "GLACIER"));
    }
}
