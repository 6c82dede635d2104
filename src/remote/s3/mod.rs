//! An S3-compatible bucket (AWS, garage, MinIO, moto, ...) as an object store.
//!
//! Uploads stream: the body is cut into parts (sizes from `parts.rs`), several
//! parts are in flight at once, each part is retried on its own, and any failure
//! (a part that keeps failing, the body's reader failing, the upload future being
//! dropped) aborts the multipart upload, so an object exists under its key only
//! when complete and no unfinished upload is left to bill storage.
//!
//! Memory: at most `in_flight` part buffers are being uploaded while one more is
//! being filled, so an upload holds at most `(in_flight + 1) × part size` bytes;
//! once parts grow past the buffer budget fewer parts fly at once (at least one),
//! keeping it near `max(buffer_budget, 2 × part size)`. With the defaults (4 in
//! flight, 8 MiB parts) that is 40 MiB for any stream up to 7.8 GiB. Before
//! that, the first `single_put_max` bytes (64 MiB by default) are read into
//! one buffer: a stream that ends there is one PutObject (two requests with
//! the read-back instead of ten for 50 MiB); a longer one holds that buffer
//! until its parts are sent, so its peak is about 64 + 40 MiB.

mod client;
mod listing;
mod multipart;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use aws_sdk_s3::Client;
use tokio::io::AsyncRead;

use super::requests::RequestCounter;
use super::retry::{with_retries, RetryPolicy};
use super::{
    Body, DeleteReport, ListingSink, MultipartUpload, ObjectInfo, ObjectStore, PrefixListing,
    RemoteError, RemoteErrorKind, UploadOptions, UploadStats,
};
use client::{classify, redact_url, sign_payload, to_chrono, Failure};

/// Ranged GETs in flight per downloaded object (see
/// [`ObjectStore::parallel_gets`]). Four doubled the download speed from
/// garage on two cores (curl: one GET of 870 MB 3.2 s, four ranges 1.6 s).
const PARALLEL_GETS: usize = 4;

/// How to reach a bucket. Build with [`S3Settings::new`] and adjust fields.
#[derive(Clone)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix backups live under (e.g. `host1/`); may be empty.
    pub prefix: String,
    /// Endpoint of a non-AWS store (e.g. `http://127.0.0.1:3900`); `None` = AWS.
    pub endpoint_url: Option<String>,
    /// Region; `None` = the default chain's, else `us-east-1`.
    pub region: Option<String>,
    /// Profile in `~/.aws/config` / `~/.aws/credentials`.
    pub profile: Option<String>,
    /// Static access key id; with `secret_access_key`, overrides the default chain.
    pub access_key_id: Option<String>,
    /// Static secret key. Never printed.
    pub secret_access_key: Option<String>,
    /// Verify TLS certificates. `false` is refused for HTTPS endpoints (see `new`).
    pub verify: bool,
    /// PEM certificates to trust instead of the system's roots (a private CA).
    pub ca_bundle: Option<Vec<u8>>,
    /// Path-style addressing; `None` = on when `endpoint_url` is set.
    pub force_path_style: Option<bool>,
    /// Parts uploaded concurrently (at least 1).
    pub in_flight: usize,
    /// Part buffer bytes allowed before fewer parts fly at once.
    pub buffer_budget: u64,
    /// Streams up to this size (rounded down to whole parts) are one
    /// PutObject; see [`crate::remote::parts::DEFAULT_SINGLE_PUT_MAX`].
    pub single_put_max: u64,
    /// Retry policy for every request.
    pub retry: RetryPolicy,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field(
                "endpoint_url",
                &self.endpoint_url.as_deref().map(redact_url),
            )
            .field("region", &self.region)
            .field("profile", &self.profile)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("verify", &self.verify)
            .field("ca_bundle", &self.ca_bundle.is_some())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// Settings for `bucket`/`prefix` with defaults: AWS, default credential
    /// chain, 4 parts in flight, 160 MiB part buffer budget.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        S3Settings {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint_url: None,
            region: None,
            profile: None,
            access_key_id: None,
            secret_access_key: None,
            verify: true,
            ca_bundle: None,
            force_path_style: None,
            in_flight: 4,
            buffer_budget: 160 << 20,
            single_put_max: super::parts::DEFAULT_SINGLE_PUT_MAX,
            retry: RetryPolicy::default(),
        }
    }
}

/// An S3 bucket (under a prefix) as an object store.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    describe: String,
    in_flight: usize,
    buffer_budget: u64,
    single_put_max: u64,
    retry: RetryPolicy,
    /// See [`client::sign_payload`].
    sign_payload: bool,
    /// Requests sent, per kind (shared by clones of this store).
    requests: Arc<RequestCounter>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe)
    }
}

impl S3Store {
    /// Connects (resolves credentials lazily) per `settings`.
    pub async fn new(settings: S3Settings) -> Result<Self, RemoteError> {
        let describe = match &settings.endpoint_url {
            Some(url) => format!(
                "s3://{}/{} at {}",
                settings.bucket,
                settings.prefix,
                redact_url(url)
            ),
            None => format!("s3://{}/{}", settings.bucket, settings.prefix),
        };
        let config_err = |msg: String| {
            RemoteError::new(
                describe.clone(),
                "connect",
                None,
                RemoteErrorKind::Config(msg),
            )
        };
        if !settings.verify
            && !settings
                .endpoint_url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://"))
        {
            return Err(config_err(
                "`verify: false` is not supported: the AWS SDK's HTTPS client always verifies \
                 certificates. Add the server's CA certificate to the system trust store \
                 (update-ca-certificates) and remove `verify: false`, or use an http:// \
                 endpoint on a trusted network"
                    .into(),
            ));
        }
        let requests = Arc::new(RequestCounter::default());
        let client = client::connect(&settings, requests.clone())
            .await
            .map_err(config_err)?;
        Ok(S3Store {
            requests,
            sign_payload: sign_payload(settings.endpoint_url.as_deref()),
            client,
            bucket: settings.bucket,
            prefix: settings.prefix,
            describe,
            in_flight: settings.in_flight.max(1),
            buffer_budget: settings.buffer_budget,
            single_put_max: settings.single_put_max,
            retry: settings.retry,
        })
    }

    /// The SDK client, for tests and tools that need a call this layer lacks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn err(&self, op: impl fmt::Display, key: Option<&str>, f: Failure) -> RemoteError {
        RemoteError::new(self.describe.clone(), op, key, f.kind)
    }

    /// An error that is not a failed request (so never retried).
    fn fatal(
        &self,
        op: impl fmt::Display,
        key: Option<&str>,
        kind: RemoteErrorKind,
    ) -> RemoteError {
        RemoteError::new(self.describe.clone(), op, key, kind)
    }
}

impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn upload(
        &self,
        key: &str,
        body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> Result<UploadStats, RemoteError> {
        self.upload_impl(key, body, opts).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Body, RemoteError> {
        if let Some(r) = &range {
            if r.start >= r.end {
                return Ok(Box::new(tokio::io::empty()));
            }
        }
        let what = format!("{}: GetObject {key}", self.describe);
        let out = with_retries(&self.retry, &what, || {
            let req = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .set_range(
                    range
                        .as_ref()
                        .map(|r| format!("bytes={}-{}", r.start, r.end - 1)),
                );
            async move { req.send().await.map_err(classify) }
        })
        .await
        .map_err(|f| self.err("GetObject", Some(key), f))?;
        Ok(Box::new(Box::pin(out.body.into_async_read())))
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, RemoteError> {
        self.list_objects().await
    }

    async fn list_into<S: ListingSink>(&self, sink: S) -> Result<S, RemoteError> {
        self.list_objects_into(sink).await
    }

    async fn list_prefixes(&self) -> Result<PrefixListing, RemoteError> {
        self.list_level().await
    }

    async fn list_under(&self, sub_prefix: &str) -> Result<Vec<ObjectInfo>, RemoteError> {
        if !sub_prefix.starts_with(&self.prefix) {
            return Err(self.fatal(
                "ListObjectsV2",
                None,
                RemoteErrorKind::InvalidKey(format!(
                    "{sub_prefix:?} is not under the remote's prefix {:?}",
                    self.prefix
                )),
            ));
        }
        self.list_objects_under(sub_prefix).await
    }

    fn parallel_gets(&self) -> usize {
        PARALLEL_GETS
    }

    fn requests(&self) -> BTreeMap<String, u64> {
        self.requests.snapshot()
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, RemoteError> {
        let what = format!("{}: HeadObject {key}", self.describe);
        let out = with_retries(&self.retry, &what, || {
            let req = self.client.head_object().bucket(&self.bucket).key(key);
            async move { req.send().await.map_err(classify) }
        })
        .await
        .map_err(|f| self.err("HeadObject", Some(key), f))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            storage_class: out.storage_class().map(|c| c.as_str().to_string()),
            last_modified: out.last_modified().and_then(to_chrono),
            restore: out.restore().map(str::to_string),
        })
    }

    async fn delete(&self, keys: &[String]) -> Result<DeleteReport, RemoteError> {
        self.delete_keys(keys).await
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<MultipartUpload>, RemoteError> {
        self.list_uploads().await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), RemoteError> {
        let what = format!("{}: AbortMultipartUpload {key}", self.describe);
        let r = with_retries(&self.retry, &what, || {
            let req = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id);
            async move { req.send().await.map(|_| ()).map_err(classify) }
        })
        .await;
        match r {
            Ok(()) => Ok(()),
            // Already gone (aborted or completed elsewhere): nothing is left open.
            Err(Failure {
                kind: RemoteErrorKind::Service { code, .. },
                ..
            }) if code == "NoSuchUpload" => Ok(()),
            Err(f) => Err(self.err("AbortMultipartUpload", Some(key), f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_hides_the_secret() {
        let mut s = S3Settings::new("b", "p/");
        s.secret_access_key = Some("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn verify_false_is_refused_for_https() {
        let mut s = S3Settings::new("b", "p/");
        s.verify = false;
        s.endpoint_url = Some("https://s3.example.org".into());
        let e = S3Store::new(s).await.unwrap_err();
        assert!(matches!(*e.kind, RemoteErrorKind::Config(_)), "{e}");
        assert!(e.to_string().contains("verify"), "{e}");
    }
}
