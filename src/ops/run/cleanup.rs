//! Unfinished uploads left behind by a run that was killed (SIGKILL, power
//! loss): S3 bills their parts until someone aborts them, and a local remote
//! keeps their temp files. Each run aborts those older than a limit (a day by
//! default, `safety.abort_incomplete_uploads_after`), long enough that no
//! upload still under way is touched. An upload whose key this run's plan
//! still wants is spared whatever its age: the next upload of that key
//! resumes it (a change of snapshot or send parent changes the key, so such
//! state is never resumed and ages out here).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use uuid::Uuid;

use crate::core::object_key;
use crate::ops::remotes::{OpenRemote, OpenRemotes};
use crate::remote::{MultipartUpload, ObjectStore};

/// Aborts every unfinished upload under each opened remote's prefix that
/// started more than `older_than` ago (by this host's clock), except those of
/// the `wanted` keys. Failures are logged, never fatal: the uploads are only
/// clutter.
pub(super) async fn abort_stale_uploads(
    remotes: &OpenRemotes,
    older_than: Duration,
    wanted: &BTreeSet<String>,
) {
    let Ok(age) = chrono::Duration::from_std(older_than) else {
        return;
    };
    let cutoff = Utc::now() - age;
    for (id, open) in remotes {
        let Ok(open) = open else { continue };
        let uploads = match open.store.list_multipart_uploads().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("remote {id}: cannot list unfinished uploads: {e}");
                continue;
            }
        };
        for u in uploads.into_iter().filter(|u| stale(u, cutoff, wanted)) {
            match open.store.abort_multipart(&u.key, &u.upload_id).await {
                Ok(()) => tracing::info!(
                    "remote {id}: aborted an unfinished upload of {} started {}",
                    u.key,
                    u.initiated.map(|t| t.to_rfc3339()).unwrap_or_default()
                ),
                Err(e) => tracing::warn!("remote {id}: {e}"),
            }
        }
    }
}

/// Aborts the open uploads of the snapshot `uuid` under other keys than
/// `key` (sent relative to another parent, or with another codec): this
/// run stores the snapshot under `key`, so they can never be resumed and
/// would only bill their parts until the stale-upload rule caught them.
/// Failures are logged, never fatal.
pub(super) async fn abort_superseded(open: &OpenRemote, key: &str, uuid: Uuid) {
    let Ok(uploads) = open.store.list_multipart_uploads().await else {
        return;
    };
    for u in superseded(uploads, open.store.prefix(), key, uuid) {
        match open.store.abort_multipart(&u.key, &u.upload_id).await {
            Ok(()) => tracing::info!(
                "remote {}: aborted an unfinished upload of {} (the snapshot is now stored \
                 as {key})",
                open.config.id,
                u.key
            ),
            Err(e) => tracing::warn!("remote {}: {e}", open.config.id),
        }
    }
}

/// The uploads of snapshot `uuid` under a key other than `key`; keys that do
/// not parse are never touched.
fn superseded(
    uploads: Vec<MultipartUpload>,
    prefix: &str,
    key: &str,
    uuid: Uuid,
) -> Vec<MultipartUpload> {
    uploads
        .into_iter()
        .filter(|u| {
            u.key != key && object_key::parse_key(prefix, &u.key).is_ok_and(|k| k.uuid == uuid)
        })
        .collect()
}

/// Whether the stale-upload rule aborts `u`: started before `cutoff` and not
/// an upload the plan still wants (that one is resumed instead).
fn stale(u: &MultipartUpload, cutoff: DateTime<Utc>, wanted: &BTreeSet<String>) -> bool {
    u.initiated.is_some_and(|t| t < cutoff) && !wanted.contains(&u.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn old_uploads_are_stale_unless_still_wanted() {
        let at = |h| Some(Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap());
        let cutoff = at(12).unwrap();
        let up = |key: &str, initiated| MultipartUpload {
            key: key.into(),
            upload_id: "id".into(),
            initiated,
        };
        let wanted = BTreeSet::from(["resumable".to_string()]);
        assert!(stale(&up("gone", at(1)), cutoff, &wanted));
        assert!(!stale(&up("resumable", at(1)), cutoff, &wanted));
        assert!(!stale(&up("recent", at(13)), cutoff, &wanted));
        assert!(!stale(&up("undated", None), cutoff, &wanted));
    }

    #[test]
    fn only_other_keys_of_the_same_snapshot_are_superseded() {
        let key = |uuid: &str, parent: &str| {
            format!(
                "p/data.ctim2026-10-01T09:00:00+00:00.ctid7.uuid{uuid}.sndp{parent}\
                 .prnt64ce5647-05cc-144f-b9ad-25e2527c33bd.mdvn1.seqn0.cmprzstd"
            )
        };
        let (a, b) = (
            "6b9c9677-83ad-8048-9695-8a9d36a1b023",
            "5975a42f-cd0a-8043-b637-4edf57511689",
        );
        let nil = "00000000-0000-0000-0000-000000000000";
        let up = |key: String| MultipartUpload {
            key,
            upload_id: "id".into(),
            initiated: None,
        };
        let now = key(a, b);
        let uploads = vec![
            up(now.clone()),
            up(key(a, nil)),
            up(key(b, nil)),
            up("p/notes.txt".into()),
        ];
        let got = superseded(uploads, "p/", &now, a.parse().unwrap());
        let keys: Vec<_> = got.iter().map(|u| u.key.clone()).collect();
        assert_eq!(keys, [key(a, nil)]);
    }
}
