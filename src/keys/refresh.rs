//! The loop that keeps one issuer's key set fresh; [`crate::App`] runs it as a named
//! task, which shutdown ends.

use std::{sync::Arc, time::Duration};

use super::Issuer;

/// First retry delay after a failed fetch; doubles up to the issuer's minimum interval.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Loads the issuer's keys now, then on the interval its source asks for (bounded by
/// config), and at once whenever `rereads` changes (SIGHUP), retrying with backoff while
/// the source is down and keeping the last good set. Static sources (inline JWKS, shared
/// secret) load once, and the loop ends.
pub async fn keep_fresh(issuer: Arc<Issuer>, mut rereads: tokio::sync::watch::Receiver<()>) {
    let iss = issuer.policy.issuer.as_str();
    let policy = issuer.refresh;
    let mut retry = FIRST_RETRY;
    loop {
        let delay = match issuer.load().await {
            Ok(max_age) => {
                retry = FIRST_RETRY;
                let keys = issuer.keys().map_or(0, |set| set.len());
                tracing::debug!(%iss, keys, "key set loaded");
                if issuer.is_static() {
                    return;
                }
                policy.interval_for(max_age)
            }
            Err(error) => {
                let delay = retry;
                retry = (retry * 2).min(policy.min_interval);
                let had_keys = issuer.keys().is_some();
                tracing::warn!(%iss, %error, had_keys, retry_in = ?delay, "key fetch failed");
                delay
            }
        };
        let next = tokio::time::sleep(delay);
        tokio::pin!(next);
        loop {
            tokio::select! {
                () = &mut next => break,
                // Rate-limited and shared with the unknown-kid refetch: a storm of
                // signals is one fetch, not one each.
                Ok(()) = rereads.changed() => issuer.refetch_now().await,
            }
        }
    }
}
