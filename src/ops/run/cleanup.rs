//! Unfinished uploads left behind by a run that was killed (SIGKILL, power
//! loss): S3 bills their parts until someone aborts them, and a local remote
//! keeps their temp files. Each run aborts those older than a limit (a day by
//! default, `safety.abort_incomplete_uploads_after`), long enough that no
//! upload still under way is touched. An upload whose key this run's plan
//! still wants is spared whatever its age: the next upload of that key
//! resumes it. One of a snapshot the plan now stores under another key (a
//! change of send parent or codec) can never be resumed, so it goes at once,
//! whatever its age. One listing per remote and run does both, after the
//! uploads (a run used to list again before each upload).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use uuid::Uuid;

use crate::core::object_key;
use crate::ops::remotes::OpenRemotes;
use crate::remote::{MultipartUpload, ObjectStore};

/// Aborts every unfinished upload under each opened remote's prefix that
/// started more than `older_than` ago (by this host's clock), except those of
/// the `wanted` keys, and every one of a snapshot that a `wanted` key stores
/// under another key. Failures are logged, never fatal: the uploads are only
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
        let prefix = open.store.prefix();
        let superseded: BTreeSet<String> = superseded(&uploads, prefix, wanted)
            .map(|u| u.key.clone())
            .collect();
        for u in uploads {
            let why = if superseded.contains(&u.key) {
                "(the snapshot is stored under another key now)".to_string()
            } else if stale(&u, cutoff, wanted) {
                format!(
                    "started {}",
                    u.initiated.map(|t| t.to_rfc3339()).unwrap_or_default()
                )
            } else {
                continue;
            };
            match open.store.abort_multipart(&u.key, &u.upload_id).await {
                Ok(()) => tracing::info!(
                    "remote {id}: aborted an unfinished upload of {} {why}",
                    u.key
                ),
                Err(e) => tracing::warn!("remote {id}: {e}"),
            }
        }
    }
}

/// The uploads of a snapshot that a `wanted` key stores under another key:
/// they can never be resumed. Keys that do not parse (under `prefix`) are
/// never touched.
fn superseded<'a>(
    uploads: &'a [MultipartUpload],
    prefix: &'a str,
    wanted: &'a BTreeSet<String>,
) -> impl Iterator<Item = &'a MultipartUpload> + 'a {
    let snapshots: BTreeSet<Uuid> = wanted
        .iter()
        .filter_map(|k| object_key::parse_key(prefix, k).ok())
        .map(|k| k.uuid)
        .collect();
    uploads.iter().filter(move |u| {
        !wanted.contains(&u.key)
            && object_key::parse_key(prefix, &u.key).is_ok_and(|k| snapshots.contains(&k.uuid))
    })
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
        let wanted = BTreeSet::from([now.clone(), "q/other-remote-key".to_string()]);
        let got: Vec<_> = superseded(&uploads, "p/", &wanted).collect();
        let keys: Vec<_> = got.iter().map(|u| u.key.clone()).collect();
        assert_eq!(keys, [key(a, nil)]);
    }
}
