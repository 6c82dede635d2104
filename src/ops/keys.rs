//! Naming new backup objects: the key of an upload, as `core::object_key`
//! formats it, for a source on a remote.

use std::sync::Arc;

use chrono_tz::Tz;
use uuid::Uuid;

use crate::config::{Config, Source, UploadConfig};
use crate::core::auth::AuthKey;
use crate::core::model::Codec;
use crate::core::object_key::{self, KeyInfo};
use crate::core::pg_record::{self, PgRecord};
use crate::core::planner::Upload;

/// The codec recorded in the key for an upload: ours, unless `pipe_through`
/// commands transform the bytes after compression. Then the key says nothing
/// (as btrfs2s3's keys) and readers sniff the object's magic bytes.
pub fn key_codec(up: &UploadConfig) -> Option<Codec> {
    if up.pipe_through.is_empty() {
        Some(up.compression.codec)
    } else {
        None
    }
}

/// How the new objects of one source on one remote are named.
pub struct KeyNaming<'a> {
    /// The key's base name (the source's name).
    pub basename: &'a str,
    /// The zone the key's time is written in.
    pub tz: Tz,
    /// The codec the key records (see [`key_codec`]).
    pub codec: Option<Codec>,
    /// The remote's prefix.
    pub prefix: &'a str,
    /// The source subvolume's uuid (`.prnt`).
    pub source_uuid: Uuid,
    /// An encrypted remote's auth key: the key gets its `.auth` MAC suffix.
    pub auth: Option<Arc<AuthKey>>,
    /// A local remote: its keys are file names, at most 255 bytes each.
    pub local: bool,
}

/// The longest file name (`NAME_MAX`): a local remote's key component.
const NAME_MAX: usize = 255;

impl<'a> KeyNaming<'a> {
    /// The naming of `source`'s uploads to the remote `up` describes, under `prefix`.
    pub fn new(
        config: &Config,
        source: &'a Source,
        up: &UploadConfig,
        prefix: &'a str,
        source_uuid: Uuid,
    ) -> Self {
        KeyNaming {
            basename: &source.name,
            tz: config.timezone,
            codec: key_codec(up),
            prefix,
            source_uuid,
            auth: None,
            local: config
                .remotes
                .iter()
                .any(|r| r.id == up.id && matches!(r.kind, crate::config::RemoteKind::Local(_))),
        }
    }

    /// The same naming with `.auth` MACs under `auth` (an encrypted remote).
    pub fn sealed(mut self, auth: Option<&AuthKey>) -> Self {
        self.auth = auth.map(|a| Arc::new(a.clone()));
        self
    }

    /// The key of `upload`; a PostgreSQL snapshot's record adds its suffixes.
    pub fn key(&self, upload: &Upload, pg: Option<&PgRecord>) -> String {
        let key = self.key_with(upload, pg);
        let too_long = |k: &str| k.rsplit('/').next().map_or(0, str::len) > NAME_MAX;
        match pg {
            // On a local remote a PostgreSQL key can pass the file name limit;
            // the WAL start is what it can lose (WAL retention then keeps all
            // WAL there, docs/postgres.md).
            Some(r) if self.local && r.wal_start.is_some() && too_long(&key) => {
                let shorter = PgRecord {
                    wal_start: None,
                    ..r.clone()
                };
                self.key_with(upload, Some(&shorter))
            }
            _ => key,
        }
    }

    fn key_with(&self, upload: &Upload, pg: Option<&PgRecord>) -> String {
        let key = object_key::format_key(
            self.prefix,
            &KeyInfo {
                basename: self.basename.to_string(),
                time: upload.time.with_timezone(&self.tz).fixed_offset(),
                ctransid: upload.ctransid,
                uuid: upload.uuid,
                send_parent_uuid: upload.send_parent_uuid,
                source_uuid: self.source_uuid,
                codec: self.codec,
            },
        );
        let key = match pg {
            Some(r) => key + &pg_record::key_suffix(r),
            None => key,
        };
        match &self.auth {
            // The MAC covers the key after the prefix (core::auth).
            Some(auth) => format!(
                "{}{}",
                self.prefix,
                auth.seal_name(&key[self.prefix.len()..])
            ),
            None => key,
        }
    }
}
