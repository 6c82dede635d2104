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
//! flight, 8 MiB parts) that is 40 MiB for any stream up to 7.8 GiB.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime as SdkDateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
    ObjectLockMode, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::parts::{size_for_part, FIRST_PART_SIZE, MAX_PARTS};
use super::retry::{with_retries, RetryPolicy, Transient};
use super::{
    Body, DeleteReport, ObjectInfo, ObjectStore, RemoteError, RemoteErrorKind, UploadOptions,
    UploadStats,
};

/// DeleteObjects accepts at most this many keys per request.
const DELETE_BATCH: usize = 1000;
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
    /// Retry policy for every request.
    pub retry: RetryPolicy,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint_url", &self.endpoint_url)
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
    retry: RetryPolicy,
    /// See [`sign_payload`].
    sign_payload: bool,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe)
    }
}

/// One failed attempt, classified for the retry policy.
#[derive(Debug)]
struct Failure {
    kind: RemoteErrorKind,
    transient: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl Transient for Failure {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// Error codes S3-compatible stores use for "slow down" and passing faults.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
];

fn classify<E>(err: SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::DispatchFailure(_) = &err {
        if let Some(message) = credentials_failure(&err) {
            // The SDK's credential providers retry on their own (IMDS, STS),
            // so what reaches us is final: no credentials, or a source that
            // keeps failing.
            return Failure {
                transient: false,
                kind: RemoteErrorKind::Config(message),
            };
        }
    }
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or_default().to_string();
            let mut message = ctx.err().message().unwrap_or_default().to_string();
            let transient =
                status >= 500 || status == 429 || TRANSIENT_CODES.contains(&code.as_str());
            if status == 404 && !matches!(code.as_str(), "NoSuchBucket" | "NoSuchUpload") {
                return Failure {
                    kind: RemoteErrorKind::NotFound,
                    transient: false,
                };
            }
            if code == "InvalidObjectState" {
                message.push_str(
                    " (the object is archived: request a restore with `aws s3api restore-object \
                     --bucket BUCKET --key KEY --restore-request Days=7` and retry once it is done)",
                );
            }
            Failure {
                kind: RemoteErrorKind::Service {
                    code: if code.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        code
                    },
                    message,
                    status: Some(status),
                },
                transient,
            }
        }
        SdkError::DispatchFailure(d) => Failure {
            transient: !d.is_user(),
            kind: RemoteErrorKind::Transport(DisplayErrorContext(&err).to_string()),
        },
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Failure {
            transient: true,
            kind: RemoteErrorKind::Transport(DisplayErrorContext(&err).to_string()),
        },
        _ => Failure {
            transient: false,
            kind: RemoteErrorKind::Transport(DisplayErrorContext(&err).to_string()),
        },
    }
}

/// What to tell the user when the request failed because no credentials could
/// be loaded; `None` for any other failure.
fn credentials_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let found = std::iter::successors(Some(err), |e| e.source())
        .find_map(|e| e.downcast_ref::<CredentialsError>())?;
    const HINT: &str = "set aws_access_key_id and aws_secret_access_key (or \
        profile_name) under the remote's endpoint, or AWS_ACCESS_KEY_ID and \
        AWS_SECRET_ACCESS_KEY in the environment";
    Some(match found {
        CredentialsError::CredentialsNotLoaded(_) => format!("no S3 credentials found: {HINT}"),
        other => format!(
            "cannot load S3 credentials ({HINT}): {}",
            crate::errors::std_one_line(other)
        ),
    })
}

fn to_chrono(t: &SdkDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Whether uploads to `endpoint_url` (`None`: AWS itself) must sign their body.
///
/// A SigV4 payload signature is a SHA-256 of the body: it protects the body on its
/// way to the store and costs a SHA-256 pass over every uploaded byte on both ends
/// (about 1 CPU-s per GiB between client and store on the benchmark machine).
/// Where the transport already protects the body we send `UNSIGNED-PAYLOAD`
/// instead, as the AWS SDKs for Java, Go and Python do by default: over TLS, and
/// over a loopback connection, which never leaves this host's kernel. Plain http to
/// any other host keeps the signature. The object's own trailer (SHA-256 of the raw
/// stream, CRC-32C of the data) is checked end to end by `restore` and `verify`
/// either way.
fn sign_payload(endpoint_url: Option<&str>) -> bool {
    let Some(url) = endpoint_url else {
        return false;
    };
    let Some(rest) = url.strip_prefix("http://") else {
        // https:// (the only other scheme the SDK accepts).
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// Sends a PutObject or UploadPart request, with `UNSIGNED-PAYLOAD` when
/// `$unsigned`. A macro because the SDK offers the switch per operation type, not
/// on a trait a function could name.
macro_rules! send_upload {
    ($req:expr, $unsigned:expr) => {{
        let op = $req.customize();
        if $unsigned {
            op.disable_payload_signing().send().await
        } else {
            op.send().await
        }
    }};
}

/// Removes `user:password@` from a URL so messages never show credentials.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Sorts each requested key into deleted or failed. A key the store did not
/// mention either way counts as failed: never assume a delete happened.
fn judge_deletes(
    batch: &[String],
    confirmed: &HashSet<&str>,
    failed: &HashMap<&str, String>,
    report: &mut DeleteReport,
) {
    for k in batch {
        if let Some(msg) = failed.get(k.as_str()) {
            report.failed.push((k.clone(), msg.clone()));
        } else if confirmed.contains(k.as_str()) {
            report.deleted.push(k.clone());
        } else {
            report
                .failed
                .push((k.clone(), "the store did not confirm the delete".into()));
        }
    }
}

/// An HTTPS client that trusts only the CA certificates in `pem`.
fn https_client_trusting(pem: &[u8]) -> Result<aws_sdk_s3::config::SharedHttpClient, String> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(
            "the `verify` CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        );
    }
    let ctx = TlsContext::builder()
        .with_trust_store(
            TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(pem.to_vec()),
        )
        .build()
        .map_err(|e| format!("the `verify` CA bundle is not usable: {e}"))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(ctx)
        .build_https())
}

/// Fills a buffer of up to `size` bytes from `body`; shorter only at the end.
async fn read_part(body: &mut (impl AsyncRead + Unpin), size: u64) -> io::Result<Bytes> {
    let size = size as usize;
    let mut buf = Vec::with_capacity(size);
    while buf.len() < size {
        // `read_buf` writes into the spare capacity, so the buffer never grows
        // past `size` and is handed to the SDK without a copy.
        if body.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(Bytes::from(buf))
}

/// The settings an object gets when it is created (PutObject or
/// CreateMultipartUpload), in the SDK's types.
struct CreateParams {
    class: Option<StorageClass>,
    lock_mode: Option<ObjectLockMode>,
    retain_until: Option<SdkDateTime>,
    checksum: Option<ChecksumAlgorithm>,
}

impl CreateParams {
    fn of(opts: &UploadOptions) -> Self {
        let lock = opts.object_lock.as_ref();
        CreateParams {
            class: opts.storage_class.as_deref().map(StorageClass::from),
            lock_mode: lock.map(|(mode, _)| ObjectLockMode::from(mode.as_str())),
            retain_until: lock.map(|(_, until)| SdkDateTime::from_secs(until.timestamp())),
            // S3 demands a checksum on writes with a retention period.
            checksum: lock.map(|_| ChecksumAlgorithm::Crc32),
        }
    }
}

/// Aborts the multipart upload if dropped while armed: covers the upload future
/// being dropped (cancelled) midway, when no code of ours runs any more.
struct AbortOnDrop {
    store: Option<S3Store>,
    key: String,
    upload_id: String,
}

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.store = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (key, id) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = store.abort_multipart(&key, &id).await {
                        tracing::error!("could not abort the cancelled upload: {e}");
                    }
                });
            }
            Err(_) => tracing::error!(
                "{}: upload of {key} cancelled outside a runtime; multipart upload {id} left \
                 open (abort it with `aws s3api abort-multipart-upload`)",
                store.describe
            ),
        }
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
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Our retry policy (retry.rs) governs; the SDK's would multiply it.
            .retry_config(RetryConfig::disabled())
            // Only a connect timeout: a read timeout would count the upload of
            // a whole (possibly 4 GiB) part; stalled streams are caught by the
            // SDK's stalled-stream protection instead.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(pem) = &settings.ca_bundle {
            loader = loader.http_client(https_client_trusting(pem).map_err(config_err)?);
        }
        if let Some(p) = &settings.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &settings.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        match (&settings.access_key_id, &settings.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id,
                    secret,
                    None,
                    None,
                    "subvault-config",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(config_err(
                    "set both access_key_id and secret_access_key, or neither (to use the \
                     environment, profile or instance role)"
                        .into(),
                ))
            }
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            // Garage and other stores reject per-part CRCs echoed into
            // CompleteMultipartUpload; only send checksums S3 demands.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(
                settings
                    .force_path_style
                    .unwrap_or(settings.endpoint_url.is_some()),
            );
        if sdk.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Ok(S3Store {
            sign_payload: sign_payload(settings.endpoint_url.as_deref()),
            client: Client::from_conf(builder.build()),
            bucket: settings.bucket,
            prefix: settings.prefix,
            describe,
            in_flight: settings.in_flight.max(1),
            buffer_budget: settings.buffer_budget,
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

    /// Whether an upload goes out as `UNSIGNED-PAYLOAD` (see [`sign_payload`]).
    /// A checksummed upload keeps the signature: unsigned, the SDK would switch
    /// to an aws-chunked body with a trailer, which not every store accepts.
    fn unsigned_upload(&self, checksummed: bool) -> bool {
        !self.sign_payload && !checksummed
    }

    /// How many parts of `size` bytes may be in flight within the budget.
    fn parts_in_flight(&self, size: u64) -> usize {
        let fit = (self.buffer_budget / size.max(1)).saturating_sub(1) as usize;
        fit.clamp(1, self.in_flight)
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        opts: &UploadOptions,
    ) -> Result<(), RemoteError> {
        let what = format!("{}: PutObject {key}", self.describe);
        with_retries(&self.retry, &what, || {
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()));
            let p = CreateParams::of(opts);
            let unsigned = self.unsigned_upload(p.checksum.is_some());
            let req = req
                .set_storage_class(p.class)
                .set_object_lock_mode(p.lock_mode)
                .set_object_lock_retain_until_date(p.retain_until)
                .set_checksum_algorithm(p.checksum);
            async move { send_upload!(req, unsigned).map(|_| ()).map_err(classify) }
        })
        .await
        .map_err(|f| self.err("PutObject", Some(key), f))
    }

    async fn create_multipart(
        &self,
        key: &str,
        opts: &UploadOptions,
    ) -> Result<String, RemoteError> {
        let what = format!("{}: CreateMultipartUpload {key}", self.describe);
        let out = with_retries(&self.retry, &what, || {
            let p = CreateParams::of(opts);
            let req = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .set_storage_class(p.class)
                .set_object_lock_mode(p.lock_mode)
                .set_object_lock_retain_until_date(p.retain_until)
                .set_checksum_algorithm(p.checksum);
            async move { req.send().await.map_err(classify) }
        })
        .await
        .map_err(|f| self.err("CreateMultipartUpload", Some(key), f))?;
        out.upload_id.ok_or_else(|| {
            self.fatal(
                "CreateMultipartUpload",
                Some(key),
                RemoteErrorKind::Transport("the store returned no upload id".into()),
            )
        })
    }

    /// Uploads one part (with retries); returns its entry for the completion.
    async fn upload_part(
        self,
        key: String,
        upload_id: String,
        number: i32,
        data: Bytes,
        checksum: bool,
    ) -> Result<(CompletedPart, u64), RemoteError> {
        let what = format!("{}: UploadPart {number} of {key}", self.describe);
        let len = data.len() as u64;
        let out = with_retries(&self.retry, &what, || {
            let mut req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(ByteStream::from(data.clone()));
            if checksum {
                req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
            }
            let unsigned = self.unsigned_upload(checksum);
            async move { send_upload!(req, unsigned).map_err(classify) }
        })
        .await
        .map_err(|f| self.err(format!("UploadPart {number}"), Some(&key), f))?;
        let part = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag)
            .set_checksum_crc32(if checksum { out.checksum_crc32 } else { None })
            .build();
        Ok((part, len))
    }

    /// Streams `body` into the open multipart upload, starting with the two
    /// parts already read. Returns the completed parts, sorted.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: [Bytes; 2],
        mut body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> Result<(Vec<CompletedPart>, u64), RemoteError> {
        let checksum = opts.object_lock.is_some();
        let mut tasks: JoinSet<Result<(CompletedPart, u64), RemoteError>> = JoinSet::new();
        let mut done = Vec::new();
        let mut uploaded = 0u64;
        let mut record = |r: Result<
            Result<(CompletedPart, u64), RemoteError>,
            tokio::task::JoinError,
        >|
         -> Result<(), RemoteError> {
            let (part, len) = r.map_err(|e| {
                self.fatal(
                    "UploadPart",
                    Some(key),
                    RemoteErrorKind::Transport(format!("part task failed: {e}")),
                )
            })??;
            done.push(part);
            uploaded += len;
            if let Some(p) = &opts.progress {
                p(uploaded);
            }
            Ok(())
        };
        let mut ready = first.into_iter();
        let mut number: u32 = 1;
        loop {
            let size = size_for_part(number);
            let data = match ready.next() {
                Some(d) => d,
                None => read_part(&mut body, size)
                    .await
                    .map_err(|e| self.fatal("upload", Some(key), RemoteErrorKind::Body(e)))?,
            };
            if data.is_empty() {
                break;
            }
            if number > MAX_PARTS {
                return Err(self.fatal(
                    "upload",
                    Some(key),
                    RemoteErrorKind::Config(format!(
                        "the stream is larger than {MAX_PARTS} parts hold (over 5 TiB)"
                    )),
                ));
            }
            // Collect finished parts early so a failed part stops the upload
            // without waiting for the whole body.
            while let Some(r) = tasks.try_join_next() {
                record(r)?;
            }
            while tasks.len() >= self.parts_in_flight(size) {
                if let Some(r) = tasks.join_next().await {
                    record(r)?;
                }
            }
            tasks.spawn(self.clone().upload_part(
                key.to_string(),
                upload_id.to_string(),
                number as i32,
                data,
                checksum,
            ));
            number += 1;
        }
        while let Some(r) = tasks.join_next().await {
            record(r)?;
        }
        done.sort_by_key(|p| p.part_number);
        Ok((done, uploaded))
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), RemoteError> {
        let what = format!("{}: CompleteMultipartUpload {key}", self.describe);
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        with_retries(&self.retry, &what, || {
            let req = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(parts.clone());
            async move { req.send().await.map(|_| ()).map_err(classify) }
        })
        .await
        .map_err(|f| self.err("CompleteMultipartUpload", Some(key), f))
    }

    async fn upload_impl(
        &self,
        key: &str,
        mut body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> Result<UploadStats, RemoteError> {
        let start = Instant::now();
        let body_err = |e| self.fatal("upload", Some(key), RemoteErrorKind::Body(e));
        let stats = |bytes, parts| UploadStats {
            bytes,
            parts,
            seconds: start.elapsed().as_secs_f64(),
        };
        let first = read_part(&mut body, FIRST_PART_SIZE)
            .await
            .map_err(body_err)?;
        // A body that fits in one part is one PutObject: no multipart state to
        // clean up, one request.
        let second = if (first.len() as u64) < FIRST_PART_SIZE {
            Bytes::new()
        } else {
            read_part(&mut body, size_for_part(2))
                .await
                .map_err(body_err)?
        };
        if second.is_empty() {
            let len = first.len() as u64;
            self.put_single(key, first, opts).await?;
            if let Some(p) = &opts.progress {
                p(len);
            }
            return Ok(stats(len, 0));
        }

        let upload_id = self.create_multipart(key, opts).await?;
        let mut guard = AbortOnDrop {
            store: Some(self.clone()),
            key: key.to_string(),
            upload_id: upload_id.clone(),
        };
        let result = match self
            .upload_parts(key, &upload_id, [first, second], body, opts)
            .await
        {
            Ok((parts, bytes)) => {
                let n = parts.len() as u32;
                self.complete(key, &upload_id, parts)
                    .await
                    .map(|_| (bytes, n))
            }
            Err(e) => Err(e),
        };
        guard.disarm();
        match result {
            Ok((bytes, n)) => Ok(stats(bytes, n)),
            Err(e) => {
                if let Err(abort) = self.abort_multipart(key, &upload_id).await {
                    tracing::error!("after a failed upload: {abort}");
                }
                Err(e)
            }
        }
    }
}

impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, RemoteError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let what = format!("{}: ListObjectsV2", self.describe);
            let page = with_retries(&self.retry, &what, || {
                let mut req = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .set_continuation_token(token.clone());
                if !self.prefix.is_empty() {
                    req = req.prefix(&self.prefix);
                }
                async move { req.send().await.map_err(classify) }
            })
            .await
            .map_err(|f| self.err("ListObjectsV2", None, f))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    storage_class: o.storage_class().map(|c| c.as_str().to_string()),
                    last_modified: o.last_modified().and_then(to_chrono),
                    restore: None,
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
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

    fn parallel_gets(&self) -> usize {
        PARALLEL_GETS
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
        let mut report = DeleteReport::default();
        for batch in keys.chunks(DELETE_BATCH) {
            // Builders fail only on a missing required field: a bug, not the store.
            let build_err = |e: aws_sdk_s3::error::BuildError| {
                self.fatal(
                    "DeleteObjects",
                    None,
                    RemoteErrorKind::Config(e.to_string()),
                )
            };
            let ids: Vec<ObjectIdentifier> = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<_, _>>()
                .map_err(build_err)?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(false)
                .build()
                .map_err(build_err)?;
            let what = format!("{}: DeleteObjects", self.describe);
            let out = with_retries(&self.retry, &what, || {
                let req = self
                    .client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete.clone());
                async move { req.send().await.map_err(classify) }
            })
            .await
            .map_err(|f| self.err("DeleteObjects", None, f))?;
            let confirmed: HashSet<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
            let failed: HashMap<&str, String> = out
                .errors()
                .iter()
                .filter_map(|e| {
                    let msg = format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or_default()
                    );
                    Some((e.key()?, msg))
                })
                .collect();
            judge_deletes(batch, &confirmed, &failed, &mut report);
        }
        Ok(report)
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<(String, String)>, RemoteError> {
        let mut out = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let what = format!("{}: ListMultipartUploads", self.describe);
            let page = with_retries(&self.retry, &what, || {
                let mut req = self
                    .client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .set_key_marker(markers.0.clone())
                    .set_upload_id_marker(markers.1.clone());
                if !self.prefix.is_empty() {
                    req = req.prefix(&self.prefix);
                }
                async move { req.send().await.map_err(classify) }
            })
            .await
            .map_err(|f| self.err("ListMultipartUploads", None, f))?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push((k.to_string(), id.to_string()));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            let next = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
            if next == markers || next.0.is_none() {
                break;
            }
            markers = next;
        }
        Ok(out)
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
    fn deletes_are_judged_per_key() {
        let batch: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let confirmed: HashSet<&str> = ["a", "b"].into_iter().collect();
        let failed: HashMap<&str, String> = [("b", "AccessDenied: locked".to_string())].into();
        let mut report = DeleteReport::default();
        judge_deletes(&batch, &confirmed, &failed, &mut report);
        assert_eq!(report.deleted, ["a"]);
        assert_eq!(
            report.failed[0],
            ("b".into(), "AccessDenied: locked".into())
        );
        assert_eq!(report.failed[1].0, "c");
    }

    #[test]
    fn payloads_are_signed_only_over_plain_http_to_another_host() {
        for unsigned in [
            None,
            Some("https://s3.example.com"),
            Some("https://10.0.0.5:9000/"),
            Some("http://127.0.0.1:3900"),
            Some("http://127.8.0.1"),
            Some("http://localhost:9000/path"),
            Some("http://LocalHost"),
            Some("http://[::1]:9000"),
            Some("http://user:pw@127.0.0.1:9000"),
        ] {
            assert!(!sign_payload(unsigned), "{unsigned:?}");
        }
        for signed in [
            "http://10.0.0.5:9000",
            "http://minio.lan",
            "http://[fe80::1]:9000",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://u:127.0.0.1@minio.lan",
            "http://minio.lan/127.0.0.1",
        ] {
            assert!(sign_payload(Some(signed)), "{signed}");
        }
    }

    #[test]
    fn urls_lose_their_userinfo() {
        assert_eq!(redact_url("https://u:p@h:9/x"), "https://h:9/x");
        assert_eq!(redact_url("http://h:9"), "http://h:9");
    }

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

    #[tokio::test]
    async fn in_flight_shrinks_as_parts_grow() {
        let mut s = S3Settings::new("b", "");
        s.endpoint_url = Some("http://127.0.0.1:1".into());
        s.access_key_id = Some("a".into());
        s.secret_access_key = Some("b".into());
        let store = S3Store::new(s).await.unwrap();
        assert_eq!(store.parts_in_flight(8 << 20), 4);
        assert_eq!(store.parts_in_flight(64 << 20), 1);
        assert_eq!(store.parts_in_flight(4 << 30), 1);
    }

    #[tokio::test]
    async fn read_part_fills_exactly_and_stops_at_eof() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut r = &data[..];
        assert_eq!(read_part(&mut r, 40).await.unwrap().len(), 40);
        assert_eq!(read_part(&mut r, 40).await.unwrap().len(), 40);
        assert_eq!(read_part(&mut r, 40).await.unwrap()[..], data[80..]);
        assert!(read_part(&mut r, 40).await.unwrap().is_empty());
    }
}
