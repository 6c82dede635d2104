//! The config file: YAML, `/etc/subvault/config.yaml` by default.
//!
//! A superset of btrfs2s3's schema, so a btrfs2s3 config loads unchanged (see
//! `config-examples/btrfs2s3.yaml`); everything else is optional with defaults.
//! Loading is strict: an unknown key, a wrong type, a bad value or an
//! inconsistency between fields is a [`ConfigError`] that names the file, line,
//! column and field in one line.
//!
//! YAML crate: serde_yaml_ng. serde_yaml is archived and its last release is
//! marked deprecated; serde_yaml_ng is its maintained fork with the same serde
//! model and libyaml-based parser, and its errors carry line and column.
//!
//! How it works: the text is parsed once into a `serde_yaml_ng::Value` (syntax
//! errors come with their position), then `schema` reads the typed config from
//! that tree by hand, so every check, semantic ones included (unknown remote id,
//! duplicate names), is reported with its field path; the line and column of
//! that path are looked up only when an error is reported (`locate`). Hand
//! reading rather than `#[derive(Deserialize)]` keeps all messages in our words
//! (with "did you mean" hints) and lets cross-field checks name positions too.

mod duration;
mod locate;
mod node;
mod operations;
mod prices;
mod schema;
mod storage_costs;
mod warnings;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

pub use duration::parse_duration;
pub use operations::{
    parse_rate, Hooks, DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_PARALLEL_SOURCES, MAX_PARALLEL_SOURCES,
};

use crate::core::model::Codec;
use crate::core::policy::{Policy, Timeframe};

/// The whole config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (for messages).
    pub path: PathBuf,
    /// The time zone in which preservation spans (days, months, ...) are aligned.
    pub timezone: Tz,
    /// The subvolumes to back up, at least one.
    pub sources: Vec<Source>,
    /// Where backups go, at least one.
    pub remotes: Vec<RemoteConfig>,
    /// The guards that keep one run from losing history.
    pub safety: Safety,
    /// How many sources a run works on at once (`max_parallel_sources`).
    pub max_parallel_sources: usize,
    /// Where a run writes its Prometheus textfile (`metrics_file`), if anywhere.
    pub metrics_file: Option<PathBuf>,
    /// Commands run after each run (`hooks`).
    pub hooks: Hooks,
    /// The `prices:` table for cost estimates in `plan` and `status`
    /// (`None`: no estimates).
    pub prices: Option<crate::core::cost::PriceTable>,
}

/// The guards against a run that would lose history (`safety:` in the file).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Safety {
    /// The share of a remote's backups of a source (or of a source's
    /// snapshots) one run may delete; above it the run prunes nothing there and
    /// asks for `--allow-large-prune`. Two are always allowed.
    pub prune_budget: f64,
    /// How far a run's time may lie before the newest snapshot or backup of a
    /// source (a clock stepping back) before the run is refused.
    pub clock_tolerance: Duration,
    /// Unfinished multipart uploads (and a local remote's temp files) older
    /// than this are aborted by each run.
    pub abort_incomplete_uploads_after: Duration,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            prune_budget: 0.5,
            clock_tolerance: Duration::from_secs(15 * 60),
            abort_incomplete_uploads_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// A subvolume to snapshot and back up.
#[derive(Debug, Clone)]
pub struct Source {
    /// A short unique name (`--source NAME`, snapshot names); defaults to the
    /// base name of `path`.
    pub name: String,
    /// The source subvolume (absolute).
    pub path: PathBuf,
    /// The directory holding its read-only snapshots (absolute, outside `path`).
    pub snapshots: PathBuf,
    /// Set when the subvolume holds a PostgreSQL data directory.
    pub postgres: Option<PostgresConfig>,
    /// Block-level dedupe settings.
    pub dedupe: DedupeConfig,
    /// The remotes this source is backed up to, with per-remote policy.
    pub upload_to_remotes: Vec<UploadConfig>,
    /// `status` calls the source stale on a remote whose newest restorable
    /// backup is older than this (`max_age`).
    pub max_age: Option<Duration>,
}

/// How one source is backed up to one remote.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The remote's id (always one of `Config::remotes`).
    pub id: String,
    /// Which snapshots and backups to keep.
    pub preserve: Policy,
    /// Compression applied by subvault itself (before `pipe_through`).
    pub compression: Compression,
    /// Commands the compressed stream is piped through, in order (btrfs2s3's
    /// `pipe_through`, e.g. `[[gpg, --encrypt, -r, me@example.com]]`).
    pub pipe_through: Vec<Vec<String>>,
    /// Commands that undo `pipe_through` (e.g. `[[gpg, --decrypt]]`): `restore`
    /// and `verify` pass this source's objects on this remote through them
    /// before decoding, when the key names no codec (the keys `pipe_through`
    /// writes, and btrfs2s3's). Empty: objects are read as they are.
    pub restore_pipe_through: Vec<Vec<String>>,
    /// S3 storage class per timeframe.
    pub storage_class: StorageClasses,
    /// S3 Object Lock settings, when wanted.
    pub object_lock: Option<ObjectLockConfig>,
}

/// A codec and an optional level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The codec.
    pub codec: Codec,
    /// The level; `None` means the codec's default (zstd 3, gzip 6).
    pub level: Option<i32>,
    /// Compression threads (zstd only); `None` means the machine's cores, at
    /// most 4 (`stream::default_threads`).
    pub threads: Option<u32>,
}

/// The levels each codec accepts.
impl Compression {
    /// Valid levels for `codec`, `None` when it takes no level.
    pub fn level_range(codec: Codec) -> Option<std::ops::RangeInclusive<i32>> {
        // One source of truth: the levels the encoder accepts.
        crate::stream::level_range(codec)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Some(level) => write!(f, "{} level {level}", self.codec),
            None => write!(f, "{}", self.codec),
        }
    }
}

/// Storage class per timeframe: a backup kept for its yearly span can go to a
/// cold class, dailies stay in a warm one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageClasses {
    /// Class for backups whose timeframe has no entry (config key `default`).
    pub default: String,
    /// Explicit classes, keyed by timeframe.
    pub by_timeframe: Vec<(Timeframe, String)>,
}

impl Default for StorageClasses {
    fn default() -> Self {
        StorageClasses {
            default: "STANDARD".to_string(),
            by_timeframe: Vec::new(),
        }
    }
}

impl StorageClasses {
    /// The class for a backup whose longest preserved timeframe is `tf` (`None`:
    /// kept for another reason, e.g. most recent or ancestor).
    pub fn for_timeframe(&self, tf: Option<Timeframe>) -> String {
        tf.and_then(|tf| self.by_timeframe.iter().find(|(t, _)| *t == tf))
            .map(|(_, class)| class.clone())
            .unwrap_or_else(|| self.default.clone())
    }

    /// Same as [`StorageClasses::for_timeframe`], under the name other modules
    /// were promised (`for` is a keyword, hence the raw identifier).
    pub fn r#for(&self, tf: Option<Timeframe>) -> String {
        self.for_timeframe(tf)
    }
}

/// S3 Object Lock settings; the retain-until date is computed by the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLockConfig {
    /// The lock mode.
    pub mode: ObjectLockMode,
}

/// S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectLockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete.
    Governance,
    /// Nobody can delete before the retain-until date, not even root.
    Compliance,
}

impl ObjectLockMode {
    /// The name S3 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectLockMode::Governance => "GOVERNANCE",
            ObjectLockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// PostgreSQL settings of a source.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// libpq connection string or `postgres://` URL. May hold a password, hence
    /// a [`Secret`]: never print it.
    pub connection: Secret,
    /// How the snapshot is made consistent.
    pub mode: PgMode,
    /// Limit for connecting and for each statement (default 60 s).
    pub timeout: Duration,
    /// `pitr_window`: keep archived WAL for point-in-time recovery to this
    /// span back from now only (never less than a kept backup needs);
    /// `None` keeps the WAL every kept backup can use.
    pub pitr_window: Option<Duration>,
    /// `sslmode`: TLS to the server; `None` leaves it to the connection
    /// string (`disable`, `prefer` or `require`; default `prefer`, as libpq).
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`: the CA certificates (PEM) the server's certificate
    /// must lead to (needed by `verify-ca` and `verify-full`).
    pub sslrootcert: Option<PathBuf>,
}

/// TLS to a PostgreSQL server, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS; the certificate is checked only when `sslrootcert` is given.
    Require,
    /// TLS; the certificate must lead to a CA of `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How a PostgreSQL snapshot is made consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgMode {
    /// `CHECKPOINT`, then an atomic snapshot: crash-consistent.
    #[default]
    Checkpoint,
    /// `pg_backup_start` / `pg_backup_stop` around the snapshot: for PITR with a
    /// WAL archive.
    Backup,
}

impl PgMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PgMode::Checkpoint => "checkpoint",
            PgMode::Backup => "backup",
        }
    }
}

/// Dedupe settings of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DedupeConfig {
    /// Run a dedupe pass after each `run`'s uploads.
    pub after_run: bool,
}

/// A place backups are stored.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Unique id, referenced by `upload_to_remotes[].id`.
    pub id: String,
    /// The kind of store and its settings.
    pub kind: RemoteKind,
    /// Upload bandwidth in bytes per second, shared by every upload to this
    /// remote (`rate_limit`).
    pub rate_limit: Option<u64>,
    /// Streams up to this many bytes go up in one PutObject
    /// (`single_put_max`; default 64 MiB, S3 remotes only).
    pub single_put_max: Option<u64>,
    /// Encryption and authentication of every object in it, when set.
    pub encryption: Option<EncryptionConfig>,
}

/// `encryption: {key_file: /etc/subvault/keys/NAME.key}` of a remote: every
/// object subvault writes there is age-encrypted to the key file's recipients
/// and authenticated with its auth key; what does not authenticate is foreign
/// and never touched (docs/design.md, "Encryption and authentication").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// The key file (`subvault key generate`), absolute.
    pub key_file: PathBuf,
}

impl RemoteConfig {
    /// Where the remote stores, for messages: `s3://bucket/prefix` (with the
    /// endpoint, its credentials removed) or `local:/path`.
    pub fn location(&self) -> String {
        match &self.kind {
            RemoteKind::S3(s) => {
                let (endpoint, _) = s.store_identity();
                format!("s3://{}/{} at {endpoint}", s.bucket, s.prefix)
            }
            RemoteKind::Local(l) => format!("local:{}", l.path.display()),
        }
    }
}

/// The kinds of remote.
#[derive(Debug, Clone)]
pub enum RemoteKind {
    /// An S3-compatible bucket.
    S3(S3Config),
    /// A local directory (e.g. a mounted backup disk) used as an object store.
    Local(LocalConfig),
}

/// An S3 bucket and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, e.g. `backups/` (default empty).
    pub prefix: String,
    /// Endpoint and credentials; unset fields fall back to the AWS default chain.
    pub endpoint: S3Endpoint,
}

/// Endpoint and credential settings (btrfs2s3's `endpoint` block).
#[derive(Debug, Clone, Default)]
pub struct S3Endpoint {
    /// Service URL for non-AWS stores, e.g. `https://s3.example.com`.
    pub endpoint_url: Option<String>,
    /// Region, e.g. `us-west-2`.
    pub region_name: Option<String>,
    /// Profile in `~/.aws/config` / `~/.aws/credentials`.
    pub profile_name: Option<String>,
    /// Static access key id (`aws_access_key_id`).
    pub access_key_id: Option<String>,
    /// Static secret key (`aws_secret_access_key`).
    pub secret_access_key: Option<Secret>,
    /// TLS certificate verification.
    pub verify: Verify,
    /// Path-style addressing; `None` means the default (see [`S3Endpoint::path_style`]).
    pub force_path_style: Option<bool>,
}

impl S3Config {
    /// The store and bucket this remote writes to, comparable between remotes:
    /// the endpoint URL without credentials, case-folded and without a trailing
    /// `/` (`aws` for AWS itself), and the bucket.
    pub fn store_identity(&self) -> (String, String) {
        let endpoint = match &self.endpoint.endpoint_url {
            None => "aws".to_string(),
            Some(url) => {
                let url = url.trim_end_matches('/').to_ascii_lowercase();
                match (url.find("://"), url.rfind('@')) {
                    (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
                    _ => url,
                }
            }
        };
        (endpoint, self.bucket.clone())
    }
}

impl S3Endpoint {
    /// Whether to use path-style requests: as configured, else on for a custom
    /// endpoint URL (most self-hosted stores have no virtual-host DNS) and off for AWS.
    pub fn path_style(&self) -> bool {
        self.force_path_style.unwrap_or(self.endpoint_url.is_some())
    }

    /// Whether both static keys are given.
    pub fn has_static_keys(&self) -> bool {
        self.access_key_id.is_some() && self.secret_access_key.is_some()
    }
}

/// TLS certificate verification for an S3 endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verify {
    /// Verify against the system's trust store (`verify: true`, the default).
    #[default]
    Default,
    /// Do not verify (`verify: false`); only for testing.
    Disabled,
    /// Verify against this PEM bundle (`verify: /path/ca.pem`; a relative path is
    /// taken relative to the config file's directory).
    CaBundle(PathBuf),
}

/// A directory used as an object store.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The directory (absolute).
    pub path: PathBuf,
}

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The actual value, for handing to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a config could not be loaded. Display is always a single line, ready for
/// stderr. Every variant is a usage error: the CLI exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}{}", path.display(), read_hint(source))]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{}:{line}:{column}: invalid YAML: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A field is missing, unknown, of the wrong type or has a bad value.
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Field path, e.g. `sources[0].upload_to_remotes[0].preserve`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// Always true: a config error is fixed by editing the config, so the CLI
    /// reports it with exit status 2.
    pub fn is_usage(&self) -> bool {
        true
    }

    /// The 1-based line and column the error points at, when it has one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { line, column, .. }
            | ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }
}

/// What to do about a config file that is not there.
fn read_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        "; create it (the README has an example) or point -c at your config"
    } else {
        ""
    }
}

impl Config {
    /// Read and validate the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_str_at(&text, path)
    }

    /// Validate config `text` as if it had been read from `path` (which is used
    /// in messages and to resolve a relative `verify:` CA bundle).
    pub fn from_str_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
            match locate::duplicate_key(text) {
                // A repeated key: point at the second one, the one to remove.
                Some((field, pos)) => ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: pos.line,
                    column: pos.column,
                    message: "this key appears twice in the same mapping; keep only one"
                        .to_string(),
                    field: field.to_string(),
                },
                None => syntax_error(&e, path),
            }
        })?;
        // `<<: *defaults` merge keys are a common way to share settings between
        // sources; resolve them like most YAML tools do.
        value.apply_merge().map_err(|e| syntax_error(&e, path))?;
        let base_dir = path.parent().unwrap_or(Path::new("/"));
        schema::build(&value, base_dir, path).map_err(|fault| {
            let pos = locate::locate(text, &fault.at, fault.target);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line: pos.line,
                column: pos.column,
                field: fault.field.to_string(),
                message: fault.message,
            }
        })
    }

    /// The remote with this id.
    pub fn remote(&self, id: &str) -> Option<&RemoteConfig> {
        self.remotes.iter().find(|r| r.id == id)
    }

    /// The source with this name.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Turn a serde_yaml_ng parse error into a one-line [`ConfigError::Syntax`].
fn syntax_error(e: &serde_yaml_ng::Error, path: &Path) -> ConfigError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    // The library appends "at line L column C"; we print the position up front.
    let message = e
        .to_string()
        .replace(&format!(" at line {line} column {column}"), "")
        .replace('\n', " ");
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests;
