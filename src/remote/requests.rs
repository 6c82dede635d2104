//! Requests per kind, as object stores bill them (per 1,000 requests, by
//! kind). The S3 store counts every attempt it sends, retries included,
//! from the HTTP method and query of the request ([`classify`]), so nothing
//! that reaches the wire goes uncounted; `run --json` reports the counts per
//! remote. A local directory makes no requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of S3 requests subvault makes (docs/s3-permissions-and-costs.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    /// ListObjectsV2.
    ListObjectsV2,
    /// ListMultipartUploads.
    ListMultipartUploads,
    /// ListParts.
    ListParts,
    /// GetObject (whole or ranged).
    GetObject,
    /// HeadObject.
    HeadObject,
    /// PutObject (a whole small object).
    PutObject,
    /// CreateMultipartUpload.
    CreateMultipartUpload,
    /// UploadPart.
    UploadPart,
    /// CompleteMultipartUpload.
    CompleteMultipartUpload,
    /// AbortMultipartUpload.
    AbortMultipartUpload,
    /// DeleteObjects (up to 1,000 keys each).
    DeleteObjects,
    /// DeleteObject.
    DeleteObject,
    /// Anything else.
    Other,
}

const KINDS: [RequestKind; 13] = [
    RequestKind::ListObjectsV2,
    RequestKind::ListMultipartUploads,
    RequestKind::ListParts,
    RequestKind::GetObject,
    RequestKind::HeadObject,
    RequestKind::PutObject,
    RequestKind::CreateMultipartUpload,
    RequestKind::UploadPart,
    RequestKind::CompleteMultipartUpload,
    RequestKind::AbortMultipartUpload,
    RequestKind::DeleteObjects,
    RequestKind::DeleteObject,
    RequestKind::Other,
];

impl RequestKind {
    /// The S3 API name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::ListObjectsV2 => "ListObjectsV2",
            RequestKind::ListMultipartUploads => "ListMultipartUploads",
            RequestKind::ListParts => "ListParts",
            RequestKind::GetObject => "GetObject",
            RequestKind::HeadObject => "HeadObject",
            RequestKind::PutObject => "PutObject",
            RequestKind::CreateMultipartUpload => "CreateMultipartUpload",
            RequestKind::UploadPart => "UploadPart",
            RequestKind::CompleteMultipartUpload => "CompleteMultipartUpload",
            RequestKind::AbortMultipartUpload => "AbortMultipartUpload",
            RequestKind::DeleteObjects => "DeleteObjects",
            RequestKind::DeleteObject => "DeleteObject",
            RequestKind::Other => "Other",
        }
    }
}

/// The kind of an S3 REST request, from its method and URI (path-style or
/// virtual-hosted alike: only the query decides).
pub fn classify(method: &str, uri: &str) -> RequestKind {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p.split_once('=').map_or(p, |(n, _)| n) == name)
    };
    match method.to_ascii_uppercase().as_str() {
        "HEAD" => RequestKind::HeadObject,
        "GET" if has("list-type") => RequestKind::ListObjectsV2,
        "GET" if has("uploads") => RequestKind::ListMultipartUploads,
        "GET" if has("uploadId") => RequestKind::ListParts,
        "GET" => RequestKind::GetObject,
        "PUT" if has("uploadId") => RequestKind::UploadPart,
        "PUT" => RequestKind::PutObject,
        "POST" if has("uploads") => RequestKind::CreateMultipartUpload,
        "POST" if has("uploadId") => RequestKind::CompleteMultipartUpload,
        "POST" if has("delete") => RequestKind::DeleteObjects,
        "DELETE" if has("uploadId") => RequestKind::AbortMultipartUpload,
        "DELETE" => RequestKind::DeleteObject,
        _ => RequestKind::Other,
    }
}

/// Requests sent, per kind; shared by a store's clones.
#[derive(Debug, Default)]
pub struct RequestCounter {
    counts: [AtomicU64; KINDS.len()],
}

impl RequestCounter {
    /// Counts one request.
    pub fn add(&self, kind: RequestKind) {
        let i = KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(KINDS.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far by S3 API name, kinds never sent left out.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        KINDS
            .iter()
            .zip(&self.counts)
            .map(|(k, c)| (k.as_str().to_string(), c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_by_method_and_query() {
        let cases = [
            ("GET", "http://h/b?list-type=2&prefix=p%2F", "ListObjectsV2"),
            ("GET", "http://h/b?uploads&prefix=p", "ListMultipartUploads"),
            (
                "GET",
                "http://h/b/k?uploadId=x&part-number-marker=3",
                "ListParts",
            ),
            ("GET", "http://h/b/k?x-id=GetObject", "GetObject"),
            ("HEAD", "http://b.h/k", "HeadObject"),
            ("PUT", "http://h/b/k?x-id=PutObject", "PutObject"),
            ("PUT", "http://h/b/k?partNumber=2&uploadId=x", "UploadPart"),
            (
                "POST",
                "http://h/b/k?uploads&x-id=CreateMultipartUpload",
                "CreateMultipartUpload",
            ),
            ("POST", "http://h/b/k?uploadId=x", "CompleteMultipartUpload"),
            ("POST", "http://h/b?delete", "DeleteObjects"),
            ("DELETE", "http://h/b/k?uploadId=x", "AbortMultipartUpload"),
            ("DELETE", "http://h/b/k", "DeleteObject"),
            ("OPTIONS", "http://h/b", "Other"),
        ];
        for (method, uri, want) in cases {
            assert_eq!(classify(method, uri).as_str(), want, "{method} {uri}");
        }
        // A key that merely contains a query-like word is not a query.
        assert_eq!(
            classify("GET", "http://h/b/uploads.txt").as_str(),
            "GetObject"
        );
    }

    #[test]
    fn counts_are_kept_per_kind_and_zeros_left_out() {
        let c = RequestCounter::default();
        c.add(RequestKind::PutObject);
        c.add(RequestKind::PutObject);
        c.add(RequestKind::ListObjectsV2);
        let s = c.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s["PutObject"], 2);
        assert_eq!(s["ListObjectsV2"], 1);
    }
}
