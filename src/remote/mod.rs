//! Object stores behind one small trait: S3 and a local directory.
//!
//! The rest of subvault sees only [`ObjectStore`]: list the objects under the
//! remote's prefix, stream one up, stream one down, delete some. Each store lives
//! in its own file; retries are a policy inside the S3 store (`retry.rs`), and the
//! key format is `crate::core::object_key`'s business, not the store's.

mod error;
pub mod local;
pub mod parts;
pub mod pending;
pub mod rate;
pub mod retry;
pub mod s3;

use std::fmt;
use std::future::Future;
use std::ops::Range;

use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

pub use error::{RemoteError, RemoteErrorKind};
pub use local::LocalStore;
pub use s3::{S3Settings, S3Store};

use crate::config::{RemoteConfig, RemoteKind, Verify};
use crate::core::model::Backup;
use crate::core::object_key;

/// What a listing or HeadObject says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The full key, prefix included.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Storage class as the store reports it; `None` when it does not say
    /// (S3 omits it for STANDARD in HeadObject; local stores have none).
    pub storage_class: Option<String>,
    /// Last modification time, when known.
    pub last_modified: Option<DateTime<Utc>>,
    /// The raw `x-amz-restore` status from HeadObject (e.g.
    /// `ongoing-request="false", expiry-date="..."`), for archived objects.
    pub restore: Option<String>,
}

impl ObjectInfo {
    /// True when the object sits in an archive class (GLACIER, DEEP_ARCHIVE) and
    /// no restored copy is available yet, so a GET would fail with
    /// `InvalidObjectState`. Only meaningful on a [`ObjectStore::head`] result:
    /// listings do not carry the restore status.
    pub fn needs_restore(&self) -> bool {
        let archived = matches!(
            self.storage_class.as_deref(),
            Some("GLACIER") | Some("DEEP_ARCHIVE")
        );
        let restored = self
            .restore
            .as_deref()
            .is_some_and(|r| r.contains("ongoing-request=\"false\""));
        archived && !restored
    }
}

/// Called with the number of bytes uploaded so far.
pub use crate::progress::ProgressFn;

/// How to store an uploaded object.
#[derive(Clone, Default)]
pub struct UploadOptions {
    /// Storage class (e.g. `STANDARD`, `DEEP_ARCHIVE`); `None` = the bucket default.
    pub storage_class: Option<String>,
    /// S3 Object Lock: mode (`GOVERNANCE` or `COMPLIANCE`) and retain-until date.
    pub object_lock: Option<(String, DateTime<Utc>)>,
    /// Progress callback, called with the bytes stored so far as parts complete.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadOptions")
            .field("storage_class", &self.storage_class)
            .field("object_lock", &self.object_lock)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UploadStats {
    /// Bytes stored (the object's size).
    pub bytes: u64,
    /// Multipart parts; 0 for a single PutObject (or a local write).
    pub parts: u32,
    /// Wall time of the upload in seconds.
    pub seconds: f64,
}

/// Per-key outcome of a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Keys the store confirmed deleted (S3 also confirms keys that did not exist).
    pub deleted: Vec<String>,
    /// Keys not deleted, each with the store's error.
    pub failed: Vec<(String, String)>,
}

/// An unfinished multipart upload (or, in a local store, a leftover temp file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// The key the upload would create.
    pub key: String,
    /// The store's id of the upload, for [`ObjectStore::abort_multipart`].
    pub upload_id: String,
    /// When it was started (a local temp file's modification time), if known.
    pub initiated: Option<DateTime<Utc>>,
}

/// The objects under a prefix, sorted into backups and the rest.
#[derive(Debug, Clone, Default)]
pub struct BackupListing {
    /// Objects whose key parses as a backup key.
    pub backups: Vec<Backup>,
    /// Keys that do not (never touched).
    pub ignored: Vec<String>,
}

/// A streaming object body.
pub type Body = Box<dyn AsyncRead + Unpin + Send>;

/// An object store holding backup objects under a prefix.
pub trait ObjectStore: Send + Sync {
    /// Where this store points, for messages: `s3://bucket/prefix`, `local:/dir`.
    /// Never contains credentials.
    fn describe(&self) -> String;

    /// The key prefix this store's backups live under (may be empty).
    fn prefix(&self) -> &str;

    /// Every object under the prefix (all pages), with full keys.
    fn list(&self) -> impl Future<Output = Result<Vec<ObjectInfo>, RemoteError>> + Send;

    /// Streams `body` into a new object at `key`. The object appears under `key`
    /// only once complete; on any failure (including the body's reader failing)
    /// nothing is left behind.
    fn upload(
        &self,
        key: &str,
        body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> impl Future<Output = Result<UploadStats, RemoteError>> + Send;

    /// Streams an object (or the byte range `range` of it) down.
    fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> impl Future<Output = Result<Body, RemoteError>> + Send;

    /// How many ranged GETs of one object a download should keep in flight.
    /// One request per object is the bottleneck on S3 stores (a single stream
    /// from garage on 127.0.0.1 delivers about 270 MB/s, four ranges in
    /// parallel twice that); a local file gains nothing from it.
    fn parallel_gets(&self) -> usize {
        1
    }

    /// Size, storage class and restore status of one object.
    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectInfo, RemoteError>> + Send;

    /// Deletes `keys`, reporting the outcome per key. Errors only when the store
    /// could not be asked at all.
    fn delete(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<DeleteReport, RemoteError>> + Send;

    /// Unfinished multipart uploads under the prefix.
    fn list_multipart_uploads(
        &self,
    ) -> impl Future<Output = Result<Vec<MultipartUpload>, RemoteError>> + Send;

    /// Aborts one unfinished multipart upload.
    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;
}

/// Any configured store; lets callers hold one concrete type.
pub enum AnyStore {
    /// An S3-compatible bucket.
    S3(S3Store),
    /// A local directory.
    Local(LocalStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::S3($s) => $e,
            AnyStore::Local($s) => $e,
        }
    };
}

impl ObjectStore for AnyStore {
    fn describe(&self) -> String {
        delegate!(self, s => s.describe())
    }
    fn prefix(&self) -> &str {
        delegate!(self, s => s.prefix())
    }
    async fn list(&self) -> Result<Vec<ObjectInfo>, RemoteError> {
        delegate!(self, s => s.list().await)
    }
    async fn upload(
        &self,
        key: &str,
        body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> Result<UploadStats, RemoteError> {
        delegate!(self, s => s.upload(key, body, opts).await)
    }
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Body, RemoteError> {
        delegate!(self, s => s.get(key, range).await)
    }
    fn parallel_gets(&self) -> usize {
        delegate!(self, s => s.parallel_gets())
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, RemoteError> {
        delegate!(self, s => s.head(key).await)
    }
    async fn delete(&self, keys: &[String]) -> Result<DeleteReport, RemoteError> {
        delegate!(self, s => s.delete(keys).await)
    }
    async fn list_multipart_uploads(&self) -> Result<Vec<MultipartUpload>, RemoteError> {
        delegate!(self, s => s.list_multipart_uploads().await)
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), RemoteError> {
        delegate!(self, s => s.abort_multipart(key, upload_id).await)
    }
}

/// Opens the store a `remotes[]` entry of the config describes. For S3 this
/// resolves settings only; credentials are fetched on the first request.
pub async fn open(remote: &RemoteConfig) -> Result<AnyStore, RemoteError> {
    match &remote.kind {
        RemoteKind::Local(l) => {
            // Never created: a backup disk that is not mounted must not turn
            // into a directory on the root filesystem that fills it.
            if !l.path.is_dir() {
                return Err(RemoteError::new(
                    format!("local:{}", l.path.display()),
                    "open",
                    None,
                    RemoteErrorKind::Config(format!(
                        "remote {:?}: {} is not a directory (is the backup disk mounted?); \
                         subvault never creates a local remote's root: create it once by hand",
                        remote.id,
                        l.path.display()
                    )),
                ));
            }
            Ok(AnyStore::Local(LocalStore::new(&l.path)))
        }
        RemoteKind::S3(c) => {
            let e = &c.endpoint;
            let mut s = S3Settings::new(&c.bucket, &c.prefix);
            s.endpoint_url = e.endpoint_url.clone();
            s.region = e.region_name.clone();
            s.profile = e.profile_name.clone();
            s.access_key_id = e.access_key_id.clone();
            s.secret_access_key = e.secret_access_key.as_ref().map(|k| k.expose().to_string());
            s.force_path_style = e.force_path_style;
            match &e.verify {
                Verify::Default => {}
                Verify::Disabled => s.verify = false,
                Verify::CaBundle(path) => {
                    let pem = std::fs::read(path).map_err(|err| {
                        RemoteError::new(
                            format!("s3://{}/{}", c.bucket, c.prefix),
                            "connect",
                            None,
                            RemoteErrorKind::Config(format!(
                                "remote {:?}: cannot read the `verify` CA bundle {}: {err}",
                                remote.id,
                                path.display()
                            )),
                        )
                    })?;
                    s.ca_bundle = Some(pem);
                }
            }
            Ok(AnyStore::S3(S3Store::new(s).await?))
        }
    }
}

/// Lists the backups under `prefix`: every key that parses as a backup key,
/// plus the keys that do not (which callers must ignore and never touch).
pub async fn list_backups(
    store: &impl ObjectStore,
    prefix: &str,
) -> Result<BackupListing, RemoteError> {
    let objects = store.list().await?;
    Ok(split_backups(prefix, objects))
}

fn split_backups(prefix: &str, objects: Vec<ObjectInfo>) -> BackupListing {
    let mut out = BackupListing::default();
    for o in objects {
        match object_key::parse_key(prefix, &o.key) {
            Ok(info) => out.backups.push(object_key::to_backup(
                &o.key,
                &info,
                Some(o.size),
                o.storage_class,
            )),
            Err(e) => {
                tracing::debug!("ignoring object: {e}");
                out.ignored.push(o.key);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, class: Option<&str>, restore: Option<&str>) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 7,
            storage_class: class.map(str::to_string),
            last_modified: None,
            restore: restore.map(str::to_string),
        }
    }

    #[test]
    fn split_keeps_backups_and_names_the_rest() {
        let good = "p/home.ctim2024-06-01T00:00:00+02:00.ctid1234.uuid3fd11d8e-8110-4cd0-b85c-bae3dda86a3d.sndp00000000-0000-0000-0000-000000000000.prnt9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e.mdvn1.seqn0.gz";
        let objects = vec![
            obj(good, Some("GLACIER"), None),
            obj("p/notes.txt", None, None),
            obj(&format!("p/sub/{}", &good[2..]), None, None),
        ];
        let BackupListing { backups, ignored } = split_backups("p/", objects);
        assert_eq!(backups.len(), 1);
        assert_eq!(backups[0].key, good);
        assert_eq!(backups[0].size, Some(7));
        assert_eq!(backups[0].storage_class.as_deref(), Some("GLACIER"));
        assert_eq!(ignored.len(), 2);
    }

    fn s3_remote(verify: Verify) -> RemoteConfig {
        use crate::config::{S3Config, S3Endpoint, Secret};
        RemoteConfig {
            id: "r1".into(),
            kind: RemoteKind::S3(S3Config {
                bucket: "b".into(),
                prefix: "p/".into(),
                endpoint: S3Endpoint {
                    endpoint_url: Some("https://user:pw@s3.example.org".into()),
                    region_name: Some("eu-west-1".into()),
                    access_key_id: Some("AKIDEXAMPLE".into()),
                    secret_access_key: Some(Secret::new("very-secret")),
                    verify,
                    ..Default::default()
                },
            }),
            encryption: None,
            rate_limit: None,
        }
    }

    #[tokio::test]
    async fn open_builds_each_kind_and_never_shows_secrets() {
        let store = open(&s3_remote(Verify::Default)).await.unwrap();
        let d = store.describe();
        assert_eq!(d, "s3://b/p/ at https://s3.example.org");
        assert_eq!(store.prefix(), "p/");

        let dir = tempfile::tempdir().unwrap();
        let local = RemoteConfig {
            id: "disk".into(),
            kind: RemoteKind::Local(crate::config::LocalConfig {
                path: dir.path().to_path_buf(),
            }),
            encryption: None,
            rate_limit: None,
        };
        let store = open(&local).await.unwrap();
        assert!(matches!(store, AnyStore::Local(_)));
        assert!(store.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_reports_unusable_tls_settings() {
        let e = open(&s3_remote(Verify::Disabled)).await.err().unwrap();
        assert!(e.to_string().contains("verify: false"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let e = open(&s3_remote(Verify::CaBundle(missing.clone())))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
        assert!(e.to_string().contains("\"r1\""), "names the remote: {e}");

        std::fs::write(&missing, "not a certificate").unwrap();
        let e = open(&s3_remote(Verify::CaBundle(missing)))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("PEM"), "{e}");
        assert!(!e.to_string().contains("very-secret"));
    }

    #[test]
    fn archive_objects_need_restore_until_restored() {
        assert!(obj("k", Some("DEEP_ARCHIVE"), None).needs_restore());
        assert!(obj("k", Some("GLACIER"), Some("ongoing-request=\"true\"")).needs_restore());
        assert!(!obj(
            "k",
            Some("GLACIER"),
            Some("ongoing-request=\"false\", expiry-date=\"Fri, 23 Dec 2012 00:00:00 GMT\"")
        )
        .needs_restore());
        assert!(!obj("k", Some("GLACIER_IR"), None).needs_restore());
        assert!(!obj("k", None, None).needs_restore());
    }
}
