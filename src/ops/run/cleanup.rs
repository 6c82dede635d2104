//! Unfinished uploads left behind by a run that was killed (SIGKILL, power
//! loss): S3 bills their parts until someone aborts them, and a local remote
//! keeps their temp files. Each run aborts those older than a limit (a day by
//! default, `safety.abort_incomplete_uploads_after`), long enough that no
//! upload still under way is touched.

use std::time::Duration;

use chrono::Utc;

use crate::ops::remotes::OpenRemotes;
use crate::remote::ObjectStore;

/// Aborts every unfinished upload under each opened remote's prefix that
/// started more than `older_than` ago (by this host's clock). Failures are
/// logged, never fatal: the uploads are only clutter.
pub(super) async fn abort_stale_uploads(remotes: &OpenRemotes, older_than: Duration) {
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
        for u in uploads
            .into_iter()
            .filter(|u| u.initiated.is_some_and(|t| t < cutoff))
        {
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
