//! Talking to the store: the SDK client a bucket's settings describe, and how
//! the SDK's errors become ours (what is retried, what the user is told).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::DateTime as SdkDateTime;
use aws_sdk_s3::Client;
use chrono::{DateTime, Utc};

use super::S3Settings;
use crate::remote::requests::{classify as classify_request, RequestCounter};
use crate::remote::retry::Transient;
use crate::remote::RemoteErrorKind;

/// The SDK client for `settings` (credentials resolve lazily, on the first
/// request); the error is a config problem in words.
pub(super) async fn connect(
    settings: &S3Settings,
    counter: Arc<RequestCounter>,
) -> Result<Client, String> {
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
        loader = loader.http_client(https_client_trusting(pem)?);
    }
    if let Some(p) = &settings.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &settings.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        // S3 signs requests with the keys and the SDK does not send a URL's
        // `user:password@` anyway; dropping it here means the SDK never holds
        // it, so none of its messages or logs can show it.
        loader = loader.endpoint_url(redact_url(url));
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
            return Err(
                "set both access_key_id and secret_access_key, or neither (to use the \
                 environment, profile or instance role)"
                    .into(),
            )
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
    builder = builder.interceptor(CountRequests(counter));
    Ok(Client::from_conf(builder.build()))
}

/// Counts each request as it goes on the wire (every attempt: our retry
/// policy sends again, and each attempt is billed).
#[derive(Debug)]
struct CountRequests(Arc<RequestCounter>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "subvault::CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let req = context.request();
        self.0.add(classify_request(req.method(), req.uri()));
        Ok(())
    }
}

/// One failed attempt, classified for the retry policy.
#[derive(Debug)]
pub(super) struct Failure {
    pub kind: RemoteErrorKind,
    pub transient: bool,
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

pub(super) fn classify<E>(err: SdkError<E>) -> Failure
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
            kind: RemoteErrorKind::Transport(super::transport::in_words(&err)),
        },
        SdkError::TimeoutError(_) => Failure {
            transient: true,
            kind: RemoteErrorKind::Transport("no answer within the timeout".into()),
        },
        SdkError::ResponseError(_) => Failure {
            transient: true,
            kind: RemoteErrorKind::Transport(format!(
                "unreadable response: {}",
                super::transport::in_words(&err)
            )),
        },
        _ => Failure {
            transient: false,
            kind: RemoteErrorKind::Transport(super::transport::in_words(&err)),
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

pub(super) fn to_chrono(t: &SdkDateTime) -> Option<DateTime<Utc>> {
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
pub(super) fn sign_payload(endpoint_url: Option<&str>) -> bool {
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

/// Removes `user:password@` from a URL so messages never show credentials.
pub(super) fn redact_url(url: &str) -> String {
    crate::errors::redact_url(url)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
