//! The one error type of the object store layer.
//!
//! Every error names the remote (its `describe()` string, never credentials), the
//! operation and the object key, so a failed run's single stderr line says which
//! object in which bucket went wrong.

use std::fmt;

/// An object store operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{remote}: {op}{}: {kind}", key_part(.key))]
pub struct RemoteError {
    /// Which remote, as `ObjectStore::describe` prints it.
    pub remote: String,
    /// The operation, e.g. `upload`, `list`, `UploadPart 3`.
    pub op: String,
    /// The object key concerned, when there is one.
    pub key: Option<String>,
    /// What went wrong (boxed to keep `Result<_, RemoteError>` small).
    #[source]
    pub kind: Box<RemoteErrorKind>,
}

fn key_part(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" {k}"),
        None => String::new(),
    }
}

/// The cause of a [`RemoteError`].
#[derive(Debug, thiserror::Error)]
pub enum RemoteErrorKind {
    /// The store answered with an error.
    #[error("{code}: {message}{}", status_part(*.status))]
    Service {
        /// S3 error code (e.g. `NoSuchBucket`, `AccessDenied`).
        code: String,
        /// The store's message.
        message: String,
        /// HTTP status, when known.
        status: Option<u16>,
    },
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// The request never got a valid answer (connection refused or reset,
    /// timeout, malformed response), after all retries.
    #[error("{0}")]
    Transport(String),
    /// Reading the data to upload failed (the producer of the stream failed).
    #[error("reading the data to upload failed: {0}")]
    Body(#[source] std::io::Error),
    /// A local file system operation failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The remote's settings cannot work; the message says what to change.
    #[error("{0}")]
    Config(String),
    /// The key cannot be used with this store (e.g. `..` in a local key).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A listing that cannot be trusted to be complete (truncated without a
    /// way on, a continuation token that repeats, an object without a size):
    /// nothing may be pruned on it.
    #[error("the listing cannot be trusted: {0}; nothing is pruned on an incomplete listing")]
    BadListing(String),
}

fn status_part(status: Option<u16>) -> String {
    match status {
        Some(s) => format!(" (HTTP {s})"),
        None => String::new(),
    }
}

impl RemoteError {
    /// Builds an error for `remote`, operation `op` on `key`.
    pub fn new(
        remote: impl Into<String>,
        op: impl fmt::Display,
        key: Option<&str>,
        kind: RemoteErrorKind,
    ) -> Self {
        RemoteError {
            remote: remote.into(),
            op: op.to_string(),
            key: key.map(str::to_string),
            kind: Box::new(kind),
        }
    }

    /// True when the object does not exist (a missing chain object on restore).
    pub fn is_not_found(&self) -> bool {
        matches!(*self.kind, RemoteErrorKind::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_remote_op_key_and_code() {
        let e = RemoteError::new(
            "s3://b/p/",
            "upload",
            Some("p/k"),
            RemoteErrorKind::Service {
                code: "AccessDenied".into(),
                message: "nope".into(),
                status: Some(403),
            },
        );
        assert_eq!(
            e.to_string(),
            "s3://b/p/: upload p/k: AccessDenied: nope (HTTP 403)"
        );
        let e = RemoteError::new("local:/x", "list", None, RemoteErrorKind::NotFound);
        assert_eq!(e.to_string(), "local:/x: list: no such object");
        assert!(e.is_not_found());
    }
}
