//! The WAL archive: `wal-push` (PostgreSQL's `archive_command`) and
//! `wal-fetch` (its `restore_command`). Keys: `core::wal`; the design and the
//! exit statuses PostgreSQL relies on: docs/postgres.md, "WAL archive".
//!
//! Each WAL file becomes one object per remote of the source that owns the
//! data directory, encoded like a backup (zstd and the integrity trailer with
//! the raw file's length and SHA-256) so `verify`-style checks and a hand
//! restore (`aws s3 cp ... - | zstd -d`) work the same way. Opening a store
//! here never lists it: a push is one HEAD and one PUT per remote, a fetch one
//! GET, whatever the archive holds.
//!
//! On an encrypted remote WAL objects are sealed like backups: the key ends
//! in its `.auth` MAC (computable from the file name, so a fetch is still one
//! GET) and the body is age-encrypted with the keyed trailer, so nothing
//! the bucket holds is trusted unless its key and body authenticate.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::config::{Config, RemoteConfig, Source, UploadConfig};
use crate::core::auth;
use crate::core::model::Codec;
use crate::core::wal::{control_system_id, SegmentHeader, SegmentName, WalArchive, WalFile};
use crate::core::wal_spool;
use crate::crypt::KeyFile;
use crate::errors::UsageError;
use crate::ops::remotes::load_keys;
use crate::ops::wal_prefetch::Prefetch;
use crate::remote::{self, AnyStore, ObjectStore, RemoteErrorKind, UploadOptions};
use crate::stream::{self, DecodeOptions, EncodeOptions, Seal, Unseal};

/// The largest WAL file PostgreSQL writes (1 GiB segments); a decoded object
/// larger than this is not a WAL file, and reading stops there.
const MAX_WAL_FILE: u64 = 1 << 30;

/// The source whose subvolume holds `datadir` (the directory PostgreSQL runs
/// `archive_command` in), or the one named by `--source`.
pub fn owning_source<'a>(
    config: &'a Config,
    datadir: &Path,
    name: Option<&str>,
) -> Result<&'a Source, UsageError> {
    let source = match name {
        Some(n) => crate::ops::sources::select_sources(config, &[n.to_string()])?[0],
        None => {
            let dir = datadir
                .canonicalize()
                .map_err(|e| UsageError(format!("data directory {}: {e}", datadir.display())))?;
            config
                .sources
                .iter()
                .filter(|s| s.postgres.is_some())
                .filter(|s| dir.starts_with(s.path.canonicalize().unwrap_or(s.path.clone())))
                .max_by_key(|s| s.path.as_os_str().len())
                .ok_or_else(|| {
                    UsageError(format!(
                        "no PostgreSQL source of {} holds the data directory {} (pass --source NAME)",
                        config.path.display(),
                        dir.display()
                    ))
                })?
        }
    };
    if source.postgres.is_none() {
        return Err(UsageError(format!(
            "source {} has no `postgres:` settings: its remotes take no WAL",
            source.name
        )));
    }
    if source.upload_to_remotes.is_empty() {
        return Err(UsageError(format!(
            "source {} uploads to no remote",
            source.name
        )));
    }
    Ok(source)
}

/// The system identifier in `<datadir>/global/pg_control`.
pub fn read_system_id(datadir: &Path) -> Result<u64> {
    let path = datadir.join("global/pg_control");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the cluster's {} (is this the data directory? pass --pgdata)",
            path.display()
        )
    })?;
    control_system_id(&bytes)
        .ok_or_else(|| anyhow!("{}: too short for a pg_control file", path.display()))
}

/// The remotes a WAL file goes to (or comes from): the source's, in config
/// order, or the one asked for.
fn remotes_of<'a>(
    config: &'a Config,
    source: &'a Source,
    only: Option<&str>,
) -> Result<Vec<(&'a RemoteConfig, &'a UploadConfig)>, UsageError> {
    let mut out = Vec::new();
    for up in &source.upload_to_remotes {
        if only.is_some_and(|id| id != up.id) {
            continue;
        }
        let rc = config
            .remote(&up.id)
            .ok_or_else(|| UsageError(format!("remote {} is not configured", up.id)))?;
        out.push((rc, up));
    }
    if out.is_empty() {
        return Err(UsageError(format!(
            "source {} does not upload to remote {}",
            source.name,
            only.unwrap_or("?")
        )));
    }
    Ok(out)
}

/// Why a WAL file cannot go to a remote as configured. `pipe_through`
/// (typically gpg) is not applied to WAL, so archiving through it would put
/// plaintext WAL next to encrypted backups: refused instead of done quietly.
fn check_upload(source: &Source, up: &UploadConfig) -> Result<(), UsageError> {
    if !up.pipe_through.is_empty() {
        return Err(UsageError(format!(
            "source {} uploads to remote {} through pipe_through, which WAL archiving does not apply; \
             WAL would be stored as it is: remove pipe_through (use the remote's encryption) or archive elsewhere",
            source.name, up.id
        )));
    }
    Ok(())
}

/// A WAL file read from disk and checked against its name.
pub struct LocalWal {
    /// What it is.
    pub file: WalFile,
    /// Its bytes.
    pub data: Bytes,
    /// Their SHA-256.
    pub sha256: [u8; 32],
}

/// Reads the WAL file at `path` (relative to `datadir`, as `%p` is) and checks
/// that a segment is the one its name says, of the cluster `system_id`.
pub fn read_local(datadir: &Path, path: &Path, system_id: u64) -> Result<LocalWal> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = WalFile::parse(&name)?;
    let full = datadir.join(path);
    let data = Bytes::from(
        std::fs::read(&full).with_context(|| format!("cannot read {}", full.display()))?,
    );
    check_content(&file, &data, system_id).with_context(|| format!("{}", full.display()))?;
    let sha256 = Sha256::digest(&data).into();
    Ok(LocalWal { file, data, sha256 })
}

/// A segment must start with the long page header of that segment of that
/// cluster; history and backup files are text and carry no header.
fn check_content(file: &WalFile, data: &[u8], system_id: u64) -> Result<()> {
    if let Some(seg) = file.segment() {
        let header = SegmentHeader::parse(data)
            .ok_or_else(|| anyhow!("{file}: does not start with a WAL segment header"))?;
        header
            .check(&seg, system_id)
            .map_err(|why| anyhow!("{file}: {why}"))?;
        if data.len() as u64 != u64::from(header.seg_size) {
            bail!(
                "{file}: {} bytes, but its header says segments have {}",
                data.len(),
                header.seg_size
            );
        }
    }
    Ok(())
}

/// What a push did on one remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Uploaded and read back: `bytes` stored.
    Uploaded {
        /// The object's size.
        bytes: u64,
    },
    /// The remote already held this file with the same content (PostgreSQL
    /// retries a push whose success it did not see).
    AlreadyThere,
}

/// One remote's outcome of a push.
pub struct PushResult {
    /// The remote's id.
    pub remote: String,
    /// The object key.
    pub key: String,
    /// What happened, or why it failed.
    pub outcome: Result<Pushed>,
}

/// Archives `wal` to every remote of `source` at once. The file is durable
/// when every result is `Ok`.
pub async fn push(
    config: &Config,
    source: &Source,
    system_id: u64,
    wal: &LocalWal,
) -> Result<Vec<PushResult>, UsageError> {
    let targets = remotes_of(config, source, None)?;
    for (_, up) in &targets {
        check_upload(source, up)?;
    }
    let jobs = targets.into_iter().map(|(rc, _)| async move {
        match WalRemote::open(rc, source, system_id).await {
            Ok(r) => {
                let key = r.key(&wal.file);
                let outcome = r.push(&key, wal).await;
                PushResult {
                    remote: rc.id.clone(),
                    key,
                    outcome,
                }
            }
            Err(e) => PushResult {
                remote: rc.id.clone(),
                key: String::new(),
                outcome: Err(e),
            },
        }
    });
    Ok(futures::future::join_all(jobs).await)
}

/// One remote, opened for WAL: its store, the cluster's archive on it, and
/// its key file when it is encrypted.
pub struct WalRemote {
    id: String,
    store: AnyStore,
    archive: WalArchive,
    keys: Option<Arc<KeyFile>>,
}

impl WalRemote {
    /// Opens remote `rc` for the WAL of `source`'s cluster `system_id`
    /// (no listing).
    pub async fn open(rc: &RemoteConfig, source: &Source, system_id: u64) -> Result<WalRemote> {
        let keys = load_keys(rc)?;
        let store = remote::open(rc)
            .await
            .with_context(|| format!("remote {}: cannot open", rc.id))?;
        let archive = WalArchive {
            prefix: store.prefix().to_string(),
            source: source.name.clone(),
            system_id,
        };
        Ok(WalRemote {
            id: rc.id.clone(),
            store,
            archive,
            keys,
        })
    }

    /// The remote's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the object `key` exists (a HEAD).
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(*e.kind, RemoteErrorKind::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The object key of `file`: on an encrypted remote with its `.auth` MAC.
    pub fn key(&self, file: &WalFile) -> String {
        let key = self.archive.key(file);
        match &self.keys {
            None => key,
            Some(k) => {
                let prefix = self.store.prefix();
                format!("{prefix}{}", k.auth.seal_name(&key[prefix.len()..]))
            }
        }
    }

    /// How WAL objects are encoded: zstd at its default level on one worker
    /// (a segment is one 16 MiB job anyway), no send-stream check, sealed on
    /// an encrypted remote.
    fn encode_options(&self, key: &str) -> EncodeOptions {
        let mut opts = EncodeOptions::new(Codec::Zstd);
        opts.threads = Some(1);
        opts.check_send_stream = false;
        opts.seal = self.keys.as_ref().map(|k| Seal {
            recipients: k.recipients.clone(),
            auth: Arc::new(k.auth.clone()),
            name: auth::mac_name(self.store.prefix(), key).to_string(),
        });
        opts
    }

    /// How WAL objects are decoded; `None` when this remote is encrypted and
    /// this host holds only the write-only copy of its key file.
    fn decode_options(&self, key: &str) -> Option<DecodeOptions> {
        let mut opts = DecodeOptions::new(Some(Codec::Zstd));
        opts.check_send_stream = false;
        if let Some(k) = &self.keys {
            if !k.can_decrypt() {
                return None;
            }
            opts.unseal = Some(Unseal {
                identities: Some(Arc::new(k.identities.clone())),
                auth: Arc::new(k.auth.clone()),
                name: auth::mac_name(self.store.prefix(), key).to_string(),
                key_file: k.path.display().to_string(),
            });
        }
        Some(opts)
    }

    async fn push(&self, key: &str, wal: &LocalWal) -> Result<Pushed> {
        match self.store.head(key).await {
            Ok(_) => return self.compare(key, wal).await,
            Err(e) if matches!(*e.kind, RemoteErrorKind::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let mut encoded = stream::encode(Cursor::new(wal.data.clone()), self.encode_options(key))?;
        let stats = self
            .store
            .upload(key, &mut encoded, &UploadOptions::default())
            .await?;
        encoded.finish().await?;
        let info = self
            .store
            .head(key)
            .await
            .context("read the object back (HEAD)")?;
        if info.size != stats.bytes {
            bail!(
                "read back: the store holds {} bytes under this key, but {} were sent",
                info.size,
                stats.bytes
            );
        }
        Ok(Pushed::Uploaded { bytes: stats.bytes })
    }

    /// The archive already holds this file: the same content is a retry
    /// (PostgreSQL pushes again when it did not see a success), other content
    /// is a second cluster, or a restored copy on this timeline, writing here.
    async fn compare(&self, key: &str, wal: &LocalWal) -> Result<Pushed> {
        let Some(opts) = self.decode_options(key) else {
            // Its key MAC shows a holder of this remote's auth key wrote it;
            // the content cannot be compared without the identity.
            tracing::warn!(
                "remote {}: {} is archived already; this host's key file is write-only, so its \
                 content was not compared",
                self.id,
                wal.file
            );
            return Ok(Pushed::AlreadyThere);
        };
        let (_, theirs) = self
            .download(key, opts)
            .await
            .context("the archive already holds this file; reading it back to compare failed")?
            .ok_or_else(|| anyhow!("{key}: vanished while being compared"))?;
        if theirs == wal.sha256 {
            return Ok(Pushed::AlreadyThere);
        }
        bail!(
            "the archive already holds {} with different content (SHA-256 {}... there, {}... here): \
             is another cluster, or a restored copy on this timeline, archiving to the same place? \
             Nothing was overwritten",
            wal.file,
            hex::encode(&theirs[..8]),
            hex::encode(&wal.sha256[..8])
        );
    }

    /// Downloads and decodes one WAL object, verifying its trailer (length,
    /// SHA-256, CRC of every byte; and the body MAC on an encrypted remote):
    /// the bytes and their (verified) SHA-256. `Ok(None)` when the key does
    /// not exist.
    async fn download(
        &self,
        key: &str,
        opts: DecodeOptions,
    ) -> Result<Option<(Vec<u8>, [u8; 32])>> {
        let body = match self.store.get(key, None).await {
            Ok(b) => b,
            Err(e) if matches!(*e.kind, RemoteErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut decoded = stream::decode_with(body, opts);
        // Room for a 16 MiB segment up front: growing by doubling would copy
        // and fault in twice the memory (pages not written cost nothing).
        let mut out = Vec::with_capacity(16 << 20);
        (&mut decoded)
            .take(MAX_WAL_FILE + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| match stream::StreamError::from_io(&e) {
                Some(s) => anyhow::Error::new(s.clone()),
                None => anyhow::Error::new(e),
            })?;
        if out.len() as u64 > MAX_WAL_FILE {
            bail!("decodes to more than {MAX_WAL_FILE} bytes: not a WAL file");
        }
        let summary = decoded.finish().await?;
        if !summary.verified {
            bail!("has no integrity trailer");
        }
        Ok(Some((out, summary.raw_sha256)))
    }
}

/// What an opened remote's WAL archive holds for `source` (one listing; on
/// an encrypted remote only the objects whose key authenticates count).
pub async fn summary(
    opened: &crate::ops::remotes::OpenRemote,
    source: &Source,
) -> Result<crate::core::wal::WalSummary> {
    let prefix = opened.store.prefix();
    let objects = opened.store.list().await?;
    let items = objects.into_iter().filter_map(|o| {
        let (sysid, file) = crate::core::wal::parse_source_key(prefix, &source.name, &o.key)?;
        if let Some(k) = &opened.keys {
            k.auth.open_name(&o.key[prefix.len()..]).ok()?;
        }
        Some((sysid, file, o.size, o.last_modified))
    });
    Ok(crate::core::wal::summarize(&source.name, items))
}

/// A fetched WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The remote it came from (for a file served from the prefetch spool,
    /// empty).
    pub remote: String,
    /// Its key (for a file served from the spool, the spool file).
    pub key: String,
    /// Bytes written.
    pub bytes: u64,
    /// Served from the prefetch spool (fetched and verified by an earlier call).
    pub from_spool: bool,
    /// Segments after it this call fetched into the spool.
    pub prefetched: usize,
}

/// Why a fetch did not deliver the file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No remote has it: the normal end of the archive for PostgreSQL.
    #[error("{name}: not in the archive")]
    Missing {
        /// The file asked for.
        name: String,
    },
    /// A remote has it but it could not be read or does not verify, and no
    /// other remote delivered a good copy. Recovery must stop here rather
    /// than take it for the end of the archive.
    #[error("{0}")]
    Failed(String),
    /// The request cannot work (bad name, source, remote).
    #[error(transparent)]
    Usage(#[from] UsageError),
}

/// Fetches the WAL file `name` of cluster `system_id` into `dest` (written
/// whole to a temporary file next to it, then renamed), trying the source's
/// remotes in order (or only `only`).
///
/// With `prefetch`, a segment is served from the spool when an earlier call
/// put it there; otherwise it is fetched, and then the next segments on its
/// timeline are fetched at once from the remote that had it, verified
/// exactly as this one was, and spooled (`ops::wal_prefetch`). A segment
/// missing ahead is not spooled (the end of the archive); one that does not
/// verify is not spooled either, and its own call then fails as a direct
/// fetch does.
pub async fn fetch(
    config: &Config,
    source: &Source,
    system_id: u64,
    name: &str,
    dest: &Path,
    only: Option<&str>,
    prefetch: Option<&Prefetch>,
) -> Result<Fetched, FetchError> {
    let file = WalFile::parse(name).map_err(|e| UsageError(e.to_string()))?;
    let remotes = remotes_of(config, source, only)?;
    // Only whole segments come in sequence; history, .partial and .backup
    // files are asked for one by one.
    let spool = match (&file, prefetch) {
        (WalFile::Segment(seg), Some(p)) => Some((*seg, p)),
        _ => None,
    };
    let mut spooled_ahead = Vec::new();
    if let Some((seg, p)) = spool {
        match p.look(seg, dest, |data| check_content(&file, data, system_id)) {
            Ok(looked) => {
                if let Some(bytes) = looked.served {
                    return Ok(Fetched {
                        remote: String::new(),
                        key: p.dir.display().to_string(),
                        bytes,
                        from_spool: true,
                        prefetched: 0,
                    });
                }
                spooled_ahead = looked.spooled_ahead;
            }
            // The spool is an optimisation: fetch directly when it fails.
            Err(e) => tracing::warn!("prefetch spool: {e:#}; fetching {name} directly"),
        }
    }
    let mut failures = Vec::new();
    for (rc, _) in remotes {
        let r = match WalRemote::open(rc, source, system_id).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("remote {}: {}", rc.id, crate::errors::one_line(&e)));
                continue;
            }
        };
        let key = r.key(&file);
        let data = match r.fetch_verified(&file, system_id).await {
            Ok(Some((d, _))) => d,
            Ok(None) => continue,
            Err(e) => {
                failures.push(format!(
                    "remote {} object {key}: {}",
                    rc.id,
                    crate::errors::one_line(&e)
                ));
                continue;
            }
        };
        write_atomically(dest, &data).map_err(|e| FetchError::Failed(format!("{e:#}")))?;
        for f in &failures {
            tracing::warn!("{f}; used the copy on remote {}", rc.id);
        }
        let prefetched = match (spool, SegmentHeader::parse(&data)) {
            (Some((seg, p)), Some(h)) => {
                let todo =
                    wal_spool::missing(&wal_spool::ahead(seg, h.seg_size, p.ahead), &spooled_ahead);
                r.prefetch(&todo, system_id, p).await
            }
            _ => 0,
        };
        return Ok(Fetched {
            remote: rc.id.clone(),
            key,
            bytes: data.len() as u64,
            from_spool: false,
            prefetched,
        });
    }
    if failures.is_empty() {
        Err(FetchError::Missing {
            name: name.to_string(),
        })
    } else {
        Err(FetchError::Failed(failures.join("; ")))
    }
}

impl WalRemote {
    /// Downloads `file` and checks it as `wal-fetch` does: the trailer (and
    /// MAC), then a segment's page header: the bytes and their SHA-256.
    /// `Ok(None)` when it is not here.
    async fn fetch_verified(
        &self,
        file: &WalFile,
        system_id: u64,
    ) -> Result<Option<(Vec<u8>, [u8; 32])>> {
        let key = self.key(file);
        let Some(opts) = self.decode_options(&key) else {
            bail!(
                "remote {} is encrypted and this host's key file holds no identity",
                self.id
            );
        };
        let Some((data, sha256)) = self.download(&key, opts).await? else {
            return Ok(None);
        };
        check_content(file, &data, system_id)?;
        Ok(Some((data, sha256)))
    }

    /// Fetches `segments` at once, verified as a direct fetch is, into the
    /// spool; returns how many were spooled. A missing one is the end of the
    /// archive; one that fails is logged and left to its own call.
    async fn prefetch(&self, segments: &[SegmentName], system_id: u64, spool: &Prefetch) -> usize {
        use futures::StreamExt;
        let jobs = segments.iter().map(|seg| async move {
            let file = WalFile::Segment(*seg);
            (*seg, self.fetch_verified(&file, system_id).await)
        });
        let mut done = futures::stream::iter(jobs).buffer_unordered(segments.len().max(1));
        let mut spooled = 0;
        while let Some((seg, got)) = done.next().await {
            match got {
                Ok(Some((data, sha256))) => match spool.store(seg, &data, &sha256) {
                    Ok(()) => spooled += 1,
                    Err(e) => tracing::warn!("prefetch {seg}: {e:#}"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "prefetch {seg} from remote {}: {}; not spooled",
                    self.id,
                    crate::errors::one_line(&e)
                ),
            }
        }
        spooled
    }
}

/// Writes `data` to `dest` through a temporary file in the same directory, so
/// PostgreSQL never sees a partial file under the name it asked for.
pub(crate) fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".subvault-wal-{:016x}", fastrand::u64(..)));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| std::fs::rename(&tmp, dest));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", dest.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wal::{SegmentName, LONG_HEADER_LEN};

    const SYSID: u64 = 7434216734418238512;
    const SEG: u32 = 1 << 20;

    fn segment(name: &str, sysid: u64) -> Vec<u8> {
        let seg = WalFile::parse(name).unwrap().segment().unwrap();
        let mut b = vec![7u8; SEG as usize];
        b[..LONG_HEADER_LEN].copy_from_slice(&long_header(seg, sysid));
        b
    }

    fn long_header(seg: SegmentName, sysid: u64) -> [u8; LONG_HEADER_LEN] {
        let mut b = [0u8; LONG_HEADER_LEN];
        b[2] = 2;
        b[4..8].copy_from_slice(&seg.timeline.to_le_bytes());
        b[8..16].copy_from_slice(&seg.start_lsn(SEG).to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&SEG.to_le_bytes());
        b
    }

    /// A config with one PostgreSQL source at `src` uploading to local
    /// remotes `dirs` (encrypted with `key_file`, when given).
    fn config(src: &Path, dirs: &[&Path]) -> Config {
        config_with(src, dirs, None)
    }

    fn config_with(src: &Path, dirs: &[&Path], key_file: Option<&Path>) -> Config {
        let mut yaml = format!(
            "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    postgres: {{connection: \"host=/tmp\"}}\n    upload_to_remotes:\n",
            src.display(),
            src.with_extension("snaps").display()
        );
        for (i, _) in dirs.iter().enumerate() {
            yaml += &format!("      - {{id: r{i}, preserve: 1d}}\n");
        }
        yaml += "remotes:\n";
        for (i, d) in dirs.iter().enumerate() {
            yaml += &format!("  - id: r{i}\n    local: {{path: {}}}\n", d.display());
            if let Some(k) = key_file {
                yaml += &format!("    encryption: {{key_file: {}}}\n", k.display());
            }
        }
        let path = src.with_extension("yaml");
        std::fs::write(&path, yaml).unwrap();
        Config::load(&path).unwrap()
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        datadir: PathBuf,
        remotes: Vec<PathBuf>,
        config: Config,
    }

    fn fixture(n: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("pg");
        let datadir = src.join("15/main");
        std::fs::create_dir_all(datadir.join("pg_wal")).unwrap();
        std::fs::create_dir_all(datadir.join("global")).unwrap();
        std::fs::write(datadir.join("global/pg_control"), SYSID.to_le_bytes()).unwrap();
        let remotes: Vec<PathBuf> = (0..n)
            .map(|i| tmp.path().join(format!("remote{i}")))
            .collect();
        for r in &remotes {
            std::fs::create_dir(r).unwrap();
        }
        let refs: Vec<&Path> = remotes.iter().map(PathBuf::as_path).collect();
        let config = config(&src, &refs);
        Fixture {
            _tmp: tmp,
            datadir,
            remotes,
            config,
        }
    }

    fn put(f: &Fixture, name: &str, data: &[u8]) -> PathBuf {
        let rel = PathBuf::from("pg_wal").join(name);
        std::fs::write(f.datadir.join(&rel), data).unwrap();
        rel
    }

    async fn push_file(f: &Fixture, rel: &Path) -> Vec<PushResult> {
        let source = owning_source(&f.config, &f.datadir, None).unwrap();
        let sysid = read_system_id(&f.datadir).unwrap();
        let wal = read_local(&f.datadir, rel, sysid).unwrap();
        push(&f.config, source, sysid, &wal).await.unwrap()
    }

    #[tokio::test]
    async fn push_reaches_every_remote_and_fetch_brings_it_back() {
        let f = fixture(2);
        let name = "000000010000000000000003";
        let data = segment(name, SYSID);
        let rel = put(&f, name, &data);
        let results = push_file(&f, &rel).await;
        assert_eq!(results.len(), 2);
        for r in &results {
            assert!(
                matches!(r.outcome, Ok(Pushed::Uploaded { .. })),
                "{:?}",
                r.outcome.as_ref().err()
            );
            assert_eq!(
                r.key,
                format!("{}.wal/{SYSID}/00000001/{name}.cmprzstd", "pg")
            );
        }
        for dir in &f.remotes {
            assert!(dir.join(&results[0].key).is_file());
        }
        // A retry of the same content succeeds without uploading.
        for r in push_file(&f, &rel).await {
            assert_eq!(r.outcome.unwrap(), Pushed::AlreadyThere);
        }

        let source = owning_source(&f.config, &f.datadir, None).unwrap();
        let dest = f.datadir.join("pg_wal/RECOVERYXLOG");
        let got = fetch(&f.config, source, SYSID, name, &dest, None, None)
            .await
            .unwrap();
        assert_eq!(got.remote, "r0");
        assert_eq!(std::fs::read(&dest).unwrap(), data);

        // A missing file is Missing, not a failure.
        let missing = fetch(
            &f.config,
            source,
            SYSID,
            "000000010000000000000004",
            &dest,
            None,
            None,
        )
        .await;
        assert!(
            matches!(missing, Err(FetchError::Missing { .. })),
            "{missing:?}"
        );
        // History files round-trip too.
        let rel = put(
            &f,
            "00000002.history",
            b"1\t0/3000000\tno recovery target specified\n",
        );
        for r in push_file(&f, &rel).await {
            r.outcome.unwrap();
        }
        fetch(
            &f.config,
            source,
            SYSID,
            "00000002.history",
            &dest,
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            b"1\t0/3000000\tno recovery target specified\n"
        );
    }

    #[tokio::test]
    async fn different_content_under_an_archived_name_fails_loudly() {
        let f = fixture(1);
        let name = "000000010000000000000005";
        let rel = put(&f, name, &segment(name, SYSID));
        push_file(&f, &rel).await[0].outcome.as_ref().unwrap();
        let mut other = segment(name, SYSID);
        other[SEG as usize - 1] ^= 1;
        let rel = put(&f, name, &other);
        let e = push_file(&f, &rel).await.remove(0).outcome.unwrap_err();
        assert!(e.to_string().contains("different content"), "{e}");
    }

    #[tokio::test]
    async fn a_damaged_or_misplaced_object_is_refused_by_fetch() {
        let f = fixture(1);
        let name = "000000010000000000000006";
        let rel = put(&f, name, &segment(name, SYSID));
        let key = push_file(&f, &rel).await.remove(0).key;
        let source = owning_source(&f.config, &f.datadir, None).unwrap();
        let dest = f.datadir.join("pg_wal/RECOVERYXLOG");

        // One flipped byte in the object.
        let obj = f.remotes[0].join(&key);
        let good = std::fs::read(&obj).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        std::fs::write(&obj, &bad).unwrap();
        let e = fetch(&f.config, source, SYSID, name, &dest, None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Failed(_)), "{e}");
        assert!(!dest.exists(), "nothing is written for a bad object");

        // A good object copied under another segment's name.
        std::fs::write(&obj, &good).unwrap();
        let other = "000000010000000000000007";
        let archive = WalArchive {
            prefix: String::new(),
            source: "pg".into(),
            system_id: SYSID,
        };
        let other_key = archive.key(&WalFile::parse(other).unwrap());
        std::fs::create_dir_all(f.remotes[0].join(&other_key).parent().unwrap()).unwrap();
        std::fs::write(f.remotes[0].join(&other_key), &good).unwrap();
        let e = fetch(&f.config, source, SYSID, other, &dest, None, None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("starts at 0/7"), "{e}");
    }

    #[tokio::test]
    async fn an_encrypted_remote_seals_wal_and_refuses_what_does_not_authenticate() {
        let mut f = fixture(1);
        let key_file = f._tmp.path().join("r0.key");
        crate::crypt::write_new(&key_file, &crate::crypt::generate("now").unwrap().text).unwrap();
        let src = f.datadir.parent().unwrap().parent().unwrap().to_path_buf();
        f.config = config_with(&src, &[&f.remotes[0]], Some(&key_file));
        let name = "000000010000000000000009";
        let data = segment(name, SYSID);
        let rel = put(&f, name, &data);
        let r = push_file(&f, &rel).await.remove(0);
        r.outcome.as_ref().unwrap();
        assert!(r.key.contains(".cmprzstd.auth"), "{}", r.key);
        // Encrypted at rest: the segment's bytes are not in the object.
        let obj = std::fs::read(f.remotes[0].join(&r.key)).unwrap();
        assert!(obj.starts_with(b"age-encryption.org/v1"), "age header");
        assert_eq!(
            push_file(&f, &rel).await.remove(0).outcome.unwrap(),
            Pushed::AlreadyThere
        );

        let source = owning_source(&f.config, &f.datadir, None).unwrap();
        let dest = f.datadir.join("pg_wal/RECOVERYXLOG");
        fetch(&f.config, source, SYSID, name, &dest, None, None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        std::fs::remove_file(&dest).unwrap();

        // The same object without its MAC, as a writer without the key
        // would name it, is not found; under another segment's MAC'd name
        // its body MAC does not match.
        let plain_key = r.key[..r.key.find(".auth").unwrap()].to_string();
        std::fs::rename(f.remotes[0].join(&r.key), f.remotes[0].join(&plain_key)).unwrap();
        let e = fetch(&f.config, source, SYSID, name, &dest, None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Missing { .. }), "{e}");
        let other = "00000001000000000000000A";
        let k = crate::crypt::KeyFile::load(&key_file).unwrap();
        let other_key = k.auth.seal_name(&plain_key.replace(name, other));
        std::fs::rename(f.remotes[0].join(&plain_key), f.remotes[0].join(&other_key)).unwrap();
        let e = fetch(&f.config, source, SYSID, other, &dest, None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Failed(_)), "{e}");
        assert!(!dest.exists());
    }

    /// The prefetch spool's entries, by segment name.
    fn spooled(p: &Prefetch) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&p.dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy()[..24].to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn prefetched_segments_are_served_from_the_spool_only_when_they_verify() {
        let f = fixture(1);
        // 1 MiB segments: 4096 per log, so 0FFF is followed by 1/000.
        let names = [
            "000000010000000000000FFE",
            "000000010000000000000FFF",
            "000000010000000100000000",
            "000000010000000100000001",
        ];
        let mut keys = Vec::new();
        for n in names {
            let rel = put(&f, n, &segment(n, SYSID));
            keys.push(push_file(&f, &rel).await.remove(0).key);
        }
        // The last object is damaged in the archive.
        let obj = f.remotes[0].join(&keys[3]);
        let mut bad = std::fs::read(&obj).unwrap();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        std::fs::write(&obj, &bad).unwrap();

        let source = owning_source(&f.config, &f.datadir, None).unwrap();
        let dest = f.datadir.join("pg_wal/RECOVERYXLOG");
        let p = Prefetch::in_datadir(&f.datadir, &dest, 3).unwrap();
        assert!(p.dir.ends_with("pg_wal/.subvault-prefetch"));
        let get = |name: &'static str| {
            let (config, dest, p) = (&f.config, &dest, &p);
            async move { fetch(config, source, SYSID, name, dest, None, Some(p)).await }
        };

        // A miss: fetched from the remote, and the next three asked for at
        // once; the damaged one and the one past the end are not spooled.
        let got = get(names[0]).await.unwrap();
        assert!(!got.from_spool);
        assert_eq!(got.prefetched, 2);
        assert_eq!(std::fs::read(&dest).unwrap(), segment(names[0], SYSID));
        assert_eq!(spooled(&p), vec![names[1], names[2]]);

        // Served from the spool: the archive no longer holds it.
        std::fs::remove_file(f.remotes[0].join(&keys[1])).unwrap();
        let got = get(names[1]).await.unwrap();
        assert!(got.from_spool, "{got:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), segment(names[1], SYSID));
        assert_eq!(spooled(&p), vec![names[2]]);

        // A spooled file that no longer hashes to its name is deleted, not
        // served, and the segment comes from the archive.
        let entry = std::fs::read_dir(&p.dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut torn = std::fs::read(&entry).unwrap();
        torn[100] ^= 1;
        std::fs::write(&entry, &torn).unwrap();
        let got = get(names[2]).await.unwrap();
        assert!(!got.from_spool);
        assert_eq!(got.remote, "r0");
        assert_eq!(std::fs::read(&dest).unwrap(), segment(names[2], SYSID));
        assert!(!entry.exists());
        assert_eq!(got.prefetched, 0, "the damaged one ahead is not spooled");

        // The damaged object itself is refused as a direct fetch refuses it.
        std::fs::remove_file(&dest).unwrap();
        let e = get(names[3]).await.unwrap_err();
        assert!(matches!(e, FetchError::Failed(_)), "{e}");
        assert!(!dest.exists());

        // A spooled file of another cluster is refused by the header check.
        let other = segment(names[3], SYSID + 1);
        let sha: [u8; 32] = Sha256::digest(&other).into();
        p.store(
            WalFile::parse(names[3]).unwrap().segment().unwrap(),
            &other,
            &sha,
        )
        .unwrap();
        let e = get(names[3]).await.unwrap_err();
        assert!(matches!(e, FetchError::Failed(_)), "{e}");
        assert!(spooled(&p).is_empty());
        // Off, or a fetch by hand to elsewhere: no spool.
        assert!(Prefetch::in_datadir(&f.datadir, &dest, 0).is_none());
        let elsewhere = f._tmp.path().join("000000010000000000000FFE");
        assert!(Prefetch::in_datadir(&f.datadir, &elsewhere, 3).is_none());
    }

    #[test]
    fn a_segment_of_another_cluster_or_name_is_not_pushed() {
        let f = fixture(1);
        let name = "000000010000000000000003";
        let rel = put(&f, name, &segment(name, SYSID + 1));
        let e = read_local(&f.datadir, &rel, SYSID).err().unwrap();
        assert!(format!("{e:#}").contains("system identifier"), "{e:#}");
        let rel = put(&f, name, &segment("000000010000000000000004", SYSID));
        assert!(read_local(&f.datadir, &rel, SYSID).is_err());
        let rel = put(&f, "RECOVERYXLOG", b"x");
        assert!(read_local(&f.datadir, &rel, SYSID).is_err());
    }

    #[test]
    fn the_owning_source_is_found_from_the_data_directory() {
        let f = fixture(1);
        assert_eq!(
            owning_source(&f.config, &f.datadir, None).unwrap().name,
            "pg"
        );
        let e = owning_source(&f.config, Path::new("/"), None).unwrap_err();
        assert!(e.0.contains("--source"), "{e}");
        assert_eq!(
            owning_source(&f.config, Path::new("/"), Some("pg"))
                .unwrap()
                .name,
            "pg"
        );
    }
}
