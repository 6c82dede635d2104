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

use crate::ops::remotes::OpenRemotes;
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
}
