//! The supervised task that keeps one issuer's key set fresh.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Issuer;

/// First retry delay after a failed fetch; doubles up to the issuer's minimum interval.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Loads the issuer's keys now, then on the interval its source asks for (bounded by
/// config), retrying with backoff while the source is down and keeping the last good set.
/// Static sources (inline JWKS, shared secret) load once.
pub fn spawn_refresh(issuer: Arc<Issuer>, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let iss = issuer.config.issuer.clone();
        let policy = issuer.config.refresh;
        let mut retry = FIRST_RETRY;
        loop {
            let loaded = tokio::select! {
                loaded = issuer.load() => loaded,
                () = shutdown.cancelled() => break,
            };
            let delay = match loaded {
                Ok(max_age) => {
                    retry = FIRST_RETRY;
                    let keys = issuer.keys().map_or(0, |set| set.len());
                    tracing::debug!(%iss, keys, "key set loaded");
                    if issuer.is_static() {
                        break;
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
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        tracing::debug!(%iss, "key refresh stopped");
    })
}
