//! Reading the bucket: listing objects and unfinished multipart uploads under
//! the prefix, and deleting objects in batches.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::client::{classify, to_chrono};
use super::S3Store;
use crate::remote::resume::StoredPart;
use crate::remote::retry::with_retries;
use crate::remote::{
    DeleteReport, ListingSink, MultipartUpload, ObjectInfo, PrefixListing, RemoteError,
    RemoteErrorKind,
};

/// DeleteObjects accepts at most this many keys per request.
const DELETE_BATCH: usize = 1000;

impl S3Store {
    /// Every object under the prefix (ListObjectsV2, all pages). A listing
    /// that cannot be trusted to be whole is an error, never a short result:
    /// a page marked truncated without a continuation token, a token seen
    /// before (a loop), or an object without a size.
    pub(super) async fn list_objects(&self) -> Result<Vec<ObjectInfo>, RemoteError> {
        self.list_objects_under(&self.prefix).await
    }

    /// [`Self::list_objects`], each object handed to `sink` as its page
    /// arrives.
    pub(super) async fn list_objects_into<S: ListingSink>(
        &self,
        mut sink: S,
    ) -> Result<S, RemoteError> {
        self.list_pages(&self.prefix, false, &mut |o| sink.object(o))
            .await?;
        Ok(sink)
    }

    /// [`Self::list_objects`] under another full prefix (a host's, in a fleet).
    pub(super) async fn list_objects_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<ObjectInfo>, RemoteError> {
        let mut objects = Vec::new();
        self.list_pages(prefix, false, &mut |o| objects.push(o))
            .await?;
        Ok(objects)
    }

    /// One level under the prefix: ListObjectsV2 with delimiter `/`.
    pub(super) async fn list_level(&self) -> Result<PrefixListing, RemoteError> {
        let prefix = self.prefix.clone();
        let mut objects = Vec::new();
        let mut prefixes = self
            .list_pages(&prefix, true, &mut |o| objects.push(o))
            .await?;
        prefixes.sort();
        prefixes.dedup();
        Ok(PrefixListing { prefixes, objects })
    }

    /// Every page of ListObjectsV2 under `prefix`, optionally with delimiter
    /// `/`: each object goes to `each` as its page arrives; the common
    /// prefixes (sub-prefixes, with the delimiter) are returned.
    async fn list_pages(
        &self,
        prefix: &str,
        delimit: bool,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<Vec<String>, RemoteError> {
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        let mut seen_tokens: HashSet<String> = HashSet::new();
        let bad = |why: String| self.fatal("ListObjectsV2", None, RemoteErrorKind::BadListing(why));
        loop {
            let what = format!("{}: ListObjectsV2", self.describe);
            let page = with_retries(&self.retry, &what, || {
                let mut req = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .set_continuation_token(token.clone());
                if !prefix.is_empty() {
                    req = req.prefix(prefix);
                }
                if delimit {
                    req = req.delimiter("/");
                }
                async move { req.send().await.map_err(classify) }
            })
            .await
            .map_err(|f| self.err("ListObjectsV2", None, f))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let Some(size) = o.size().filter(|s| *s >= 0) else {
                    return Err(bad(format!("the store listed {key} without a size")));
                };
                each(ObjectInfo {
                    key: key.to_string(),
                    size: size as u64,
                    storage_class: o.storage_class().map(|c| c.as_str().to_string()),
                    last_modified: o.last_modified().and_then(to_chrono),
                    restore: None,
                });
            }
            prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            match page.next_continuation_token() {
                None | Some("") => {
                    return Err(bad(format!(
                        "page {} is marked truncated but has no continuation token",
                        seen_tokens.len() + 1
                    )))
                }
                Some(t) if !seen_tokens.insert(t.to_string()) => {
                    return Err(bad(format!(
                        "the continuation token {t:?} came back a second time (the listing loops)"
                    )))
                }
                Some(t) => token = Some(t.to_string()),
            }
        }
        Ok(prefixes)
    }

    /// Deletes `keys` in batches; the report says which deletes the store confirmed.
    pub(super) async fn delete_keys(&self, keys: &[String]) -> Result<DeleteReport, RemoteError> {
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

    /// The unfinished multipart uploads under the prefix (all pages).
    pub(super) async fn list_uploads(&self) -> Result<Vec<MultipartUpload>, RemoteError> {
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
                    out.push(MultipartUpload {
                        key: k.to_string(),
                        upload_id: id.to_string(),
                        initiated: u.initiated().and_then(to_chrono),
                    });
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
}

impl S3Store {
    /// The parts an open multipart upload holds (all pages of ListParts), by
    /// part number.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<BTreeMap<u32, StoredPart>, RemoteError> {
        let mut out = BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            let what = format!("{}: ListParts {key}", self.describe);
            let page = with_retries(&self.retry, &what, || {
                let req = self
                    .client
                    .list_parts()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .set_part_number_marker(marker.clone());
                async move {
                    match req.send().await {
                        Ok(out) => Ok(PartsPage::of(&out)),
                        // moto names the answer's root `ListPartsResponse`
                        // where S3 says `ListPartsResult`, which the SDK
                        // refuses; the body is otherwise S3's, so read it.
                        Err(e) => e
                            .raw_response()
                            .and_then(|r| r.body().bytes())
                            .and_then(|b| std::str::from_utf8(b).ok())
                            .and_then(PartsPage::from_xml)
                            .ok_or_else(|| classify(e)),
                    }
                }
            })
            .await
            .map_err(|f| self.err("ListParts", Some(key), f))?;
            out.extend(page.parts);
            let next = page.next_marker;
            // A page that does not move the marker would loop for ever.
            if !page.truncated || next.is_none() || next == marker {
                break;
            }
            marker = next;
        }
        Ok(out)
    }
}

/// One page of ListParts.
#[derive(Debug, Default, PartialEq)]
struct PartsPage {
    parts: Vec<(u32, StoredPart)>,
    truncated: bool,
    next_marker: Option<String>,
}

impl PartsPage {
    fn of(out: &aws_sdk_s3::operation::list_parts::ListPartsOutput) -> PartsPage {
        let parts = out
            .parts()
            .iter()
            .filter_map(|p| {
                let part = StoredPart {
                    size: p.size()? as u64,
                    etag: p.e_tag()?.to_string(),
                    checksum_crc32: p.checksum_crc32().map(str::to_string),
                };
                Some((p.part_number()? as u32, part))
            })
            .collect();
        PartsPage {
            parts,
            truncated: out.is_truncated() == Some(true),
            next_marker: out.next_part_number_marker().map(str::to_string),
        }
    }

    /// Reads a ListParts answer the SDK refused for its root element's
    /// name (`ListPartsResponse`); `None` for anything else.
    fn from_xml(xml: &str) -> Option<PartsPage> {
        if !xml.contains("<ListPartsResponse") {
            return None;
        }
        let mut page = PartsPage {
            truncated: element(xml, "IsTruncated") == Some("true".into()),
            next_marker: element(xml, "NextPartNumberMarker"),
            parts: Vec::new(),
        };
        for chunk in xml.split("<Part>").skip(1) {
            let body = chunk.split("</Part>").next()?;
            let part = StoredPart {
                size: element(body, "Size")?.parse().ok()?,
                etag: element(body, "ETag")?,
                checksum_crc32: element(body, "ChecksumCRC32"),
            };
            page.parts
                .push((element(body, "PartNumber")?.parse().ok()?, part));
        }
        Some(page)
    }
}

/// The text of the first `<name>` element in `xml`, entities decoded.
fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..start + len]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
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
    fn a_list_parts_answer_with_motos_root_element_is_read() {
        let xml = "<?xml version=\"1.0\"?>\n<ListPartsResponse xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
            <Bucket>b</Bucket><NextPartNumberMarker>2</NextPartNumberMarker>\
            <IsTruncated>true</IsTruncated>\
            <Part><PartNumber>1</PartNumber><ETag>\"aa\"</ETag><Size>8</Size></Part>\
            <Part><PartNumber>2</PartNumber><ETag>&quot;bb&quot;</ETag><Size>3</Size>\
            <ChecksumCRC32>x==</ChecksumCRC32></Part></ListPartsResponse>";
        let page = PartsPage::from_xml(xml).unwrap();
        assert!(page.truncated);
        assert_eq!(page.next_marker.as_deref(), Some("2"));
        assert_eq!(page.parts.len(), 2);
        assert_eq!(page.parts[0].0, 1);
        assert_eq!(page.parts[0].1.etag, "\"aa\"");
        assert_eq!(page.parts[1].1.etag, "\"bb\"");
        assert_eq!(page.parts[1].1.size, 3);
        assert_eq!(page.parts[1].1.checksum_crc32.as_deref(), Some("x=="));
        // Any other body is not ours to read.
        assert!(PartsPage::from_xml("<Error><Code>NoSuchUpload</Code></Error>").is_none());
    }
}
