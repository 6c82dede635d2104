//! What a remote holds of one source: counts and bytes per storage class,
//! the newest backup a chain of objects restores, and the backups whose chain
//! is broken. Computed from a listing alone, so `status` and the fleet view
//! (`core::fleet`) judge a source the same way.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::chain;
use crate::core::model::Backup;

/// What a remote holds of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Backup objects of the source.
    pub backups: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Count and bytes per storage class (`STANDARD` when the listing does not say).
    pub by_storage_class: BTreeMap<String, ClassTotal>,
    /// The newest backup a chain of objects on this remote restores.
    pub newest: Option<NewestBackup>,
    /// Backups whose chain does not reach a full backup on this remote.
    pub broken: Vec<BrokenBackup>,
}

/// Count and bytes of one storage class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassTotal {
    /// Objects.
    pub count: usize,
    /// Bytes.
    pub bytes: u64,
}

impl ClassTotal {
    /// Counts one object of `size` bytes in `class` (`None`: STANDARD, as S3
    /// omits it). Looked up before inserting: a key String per object was
    /// 100k allocations for nothing (issue 21).
    pub fn add(totals: &mut BTreeMap<String, ClassTotal>, class: Option<&str>, size: u64) {
        let class = class.unwrap_or("STANDARD");
        if !totals.contains_key(class) {
            totals.insert(class.to_string(), ClassTotal::default());
        }
        let t = totals.get_mut(class).expect("inserted above");
        t.count += 1;
        t.bytes += size;
    }
}

/// The newest restorable backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewestBackup {
    /// Its snapshot time.
    pub time: DateTime<Utc>,
    /// Its object key.
    pub key: String,
    /// Its snapshot uuid.
    pub uuid: Uuid,
}

/// A backup that cannot be restored from this remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenBackup {
    /// Its object key.
    pub key: String,
    /// The send parent it needs (missing, or itself broken).
    pub send_parent_uuid: Option<Uuid>,
}

impl Inventory {
    /// The inventory of `backups` (all of one source on one remote), given
    /// as backups or references to them.
    pub fn of<B: Borrow<Backup>>(backups: &[B]) -> Inventory {
        let restorable = chain::restorable(backups);
        let mut inv = Inventory::default();
        for b in backups.iter().map(Borrow::borrow) {
            let size = b.size.unwrap_or(0);
            inv.backups += 1;
            inv.bytes += size;
            ClassTotal::add(&mut inv.by_storage_class, b.storage_class.as_deref(), size);
            if !restorable.contains(&b.uuid) {
                inv.broken.push(BrokenBackup {
                    key: b.key().to_string(),
                    send_parent_uuid: b.send_parent_uuid,
                });
                continue;
            }
            let newer = inv
                .newest
                .as_ref()
                .map_or(true, |n| (b.time, &*b.key()) > (n.time, n.key.as_str()));
            if newer {
                inv.newest = Some(NewestBackup {
                    time: b.time,
                    key: b.key().to_string(),
                    uuid: b.uuid,
                });
            }
        }
        inv.broken.sort_by(|a, b| a.key.cmp(&b.key));
        inv
    }
}
