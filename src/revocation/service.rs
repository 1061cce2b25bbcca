//! Revoke, check and watch: the revocation use cases, independent of any transport.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    Incomplete, MAX_REASON_BYTES, Matched, Record, Revocation, RevocationSet, TokenIdentity,
    TokenKeys, retention, token_hex,
};
use crate::keys::Issuers;
use crate::statelog::{Applier, Change, LogEntry, LogError, Position, PositionError, StateLog};
use crate::tasks::Tasks;
use crate::token::{self, TokenHash, unverified_claims};

/// Why a watch cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot resume there: {0}")]
    OutOfRange(#[from] PositionError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What to revoke.
#[derive(Debug, Clone)]
pub enum Target {
    Token(String),
    Jti {
        iss: String,
        jti: String,
        exp: Option<i64>,
    },
    Subject {
        iss: String,
        sub: String,
        before: Option<i64>,
    },
    Client {
        iss: String,
        client_id: String,
        before: Option<i64>,
    },
    Session {
        iss: String,
        sid: String,
        before: Option<i64>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("invalid revocation: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// One event of a revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Revoked {
        position: Position,
        revocation: Revocation,
    },
    /// The backlog has been sent; what follows is live.
    CaughtUp { position: Position },
}

/// How far ahead of now a cut-off may be set (clock skew between the caller and us).
const MAX_FUTURE_CUTOFF_SECS: i64 = 60;
/// Log entries read per page while sending a backlog.
const PAGE: usize = 1000;
/// Events buffered per watcher.
const WATCH_BUFFER: usize = 256;

pub struct Revocations {
    set: Arc<RevocationSet>,
    log: Arc<StateLog>,
    applier: Arc<Applier>,
    issuers: Arc<Issuers>,
    opaque_token_ttl_secs: i64,
}

impl Revocations {
    pub fn new(
        set: Arc<RevocationSet>,
        log: Arc<StateLog>,
        applier: Arc<Applier>,
        issuers: Arc<Issuers>,
        opaque_token_ttl_secs: i64,
    ) -> Self {
        Self {
            set,
            log,
            applier,
            issuers,
            opaque_token_ttl_secs,
        }
    }

    pub fn set(&self) -> &Arc<RevocationSet> {
        &self.set
    }

    pub fn log(&self) -> &Arc<StateLog> {
        &self.log
    }

    pub fn applier(&self) -> &Arc<Applier> {
        &self.applier
    }

    /// The rules of the issuer a record names; an unknown issuer cannot have tokens to
    /// revoke by identifier.
    fn policy(&self, iss: &str) -> Result<&crate::token::Policy, RevokeError> {
        self.issuers
            .get(iss)
            .map(|issuer| &issuer.policy)
            .ok_or(RevokeError::Invalid("iss names no configured issuer"))
    }

    /// Builds the record for `target`. RFC 7009: a token is recorded whatever it is
    /// (unknown, malformed, expired); only identifiers that cannot match anything
    /// (empty, or of an unknown issuer) are refused.
    pub fn record(
        &self,
        target: Target,
        reason: String,
        now: i64,
    ) -> Result<Revocation, RevokeError> {
        if reason.len() > MAX_REASON_BYTES {
            return Err(RevokeError::Invalid("reason is longer than 256 bytes"));
        }
        let require = |value: &str, what: &'static str| {
            if value.is_empty() {
                Err(RevokeError::Invalid(what))
            } else {
                Ok(())
            }
        };
        let cutoff =
            |iss: &str, value: &str, before: Option<i64>| -> Result<(i64, i64), RevokeError> {
                require(iss, "iss is required")?;
                require(value, "the subject, client or session is required")?;
                // "Until now" includes tokens issued earlier in this very second: `iat` has
                // one-second resolution and the comparison is strict.
                let before = before.unwrap_or(now.saturating_add(1));
                // A cut-off in the future would outlive the log's retention on Redis.
                if before > now.saturating_add(MAX_FUTURE_CUTOFF_SECS) {
                    return Err(RevokeError::Invalid("before is in the future"));
                }
                Ok((before, retention::cutoff(self.policy(iss)?, before)))
            };
        let (record, forget_after) = match target {
            Target::Token(token) => {
                require(&token, "token is required")?;
                let hash = TokenHash::identity(&token);
                let claims = unverified_claims(&token).unwrap_or_default();
                // Read as validation reads them (a fractional date is floored).
                let number = |name: &str| token::numeric_date(claims.get(name)).ok().flatten();
                let policy = claims
                    .get("iss")
                    .and_then(Value::as_str)
                    .and_then(|iss| self.issuers.get(iss))
                    .map(|issuer| &issuer.policy);
                let opaque_bound = now.saturating_add(self.opaque_token_ttl_secs);
                let forget_after =
                    retention::token(policy, number("iat"), number("exp"), opaque_bound);
                (
                    Record::Token {
                        sha256: token_hex(&hash),
                    },
                    forget_after,
                )
            }
            Target::Jti { iss, jti, exp } => {
                require(&iss, "iss is required")?;
                require(&jti, "jti is required")?;
                // No token of the issuer lives longer than its maximum lifetime, so a
                // larger `exp` (a typo in milliseconds, say) is bounded by it.
                let forget_after = retention::jti(self.policy(&iss)?, exp, now);
                (Record::Jti { iss, jti }, forget_after)
            }
            Target::Subject { iss, sub, before } => {
                let (before, forget_after) = cutoff(&iss, &sub, before)?;
                (Record::Subject { iss, sub, before }, forget_after)
            }
            Target::Client {
                iss,
                client_id,
                before,
            } => {
                let (before, forget_after) = cutoff(&iss, &client_id, before)?;
                (
                    Record::Client {
                        iss,
                        client_id,
                        before,
                    },
                    forget_after,
                )
            }
            Target::Session { iss, sid, before } => {
                let (before, forget_after) = cutoff(&iss, &sid, before)?;
                (Record::Session { iss, sid, before }, forget_after)
            }
        };
        Ok(Revocation {
            record,
            forget_after,
            revoked_at: now,
            reason,
        })
    }

    /// Records a revocation durably; returns its position once applied here.
    pub async fn revoke(
        &self,
        target: Target,
        reason: String,
        now: i64,
    ) -> Result<Position, RevokeError> {
        let revocation = self.record(target, reason, now)?;
        Ok(self.log.append(Change::Revoke(revocation)).await?)
    }

    pub fn check(&self, identity: &TokenIdentity<'_>) -> Result<Option<Matched>, Incomplete> {
        self.set.check(&TokenKeys::of(identity))
    }

    /// Checks a token by its hash and the identifiers its claims carry, read without
    /// verifying it (the caller did).
    pub fn check_token(&self, token: &str) -> Result<Option<Matched>, Incomplete> {
        let hash = TokenHash::identity(token);
        let claims = unverified_claims(token).unwrap_or_default();
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let iss = text("iss").unwrap_or_default();
        let client_id = match self.issuers.get(iss) {
            Some(issuer) => issuer
                .policy
                .client_claims
                .iter()
                .find_map(|name| text(name)),
            None => token::DEFAULT_CLIENT_CLAIMS
                .iter()
                .find_map(|name| text(name)),
        };
        self.check(&TokenIdentity {
            token_hash: Some(hash),
            iss,
            jti: text("jti"),
            sub: text("sub"),
            client_id,
            sid: text("sid"),
            iat: token::numeric_date(claims.get("iat")).ok().flatten(),
        })
    }

    /// A feed of revocations: the live set (or every change after `after`), a
    /// `CaughtUp` marker, then each change as it is applied. Fed by a task in `tasks`;
    /// ends when `stop` fires, `tasks` shut down, or the receiver is dropped. A position
    /// this log cannot resume from (trimmed past, or from another log) is refused, so
    /// the watcher starts over from the live set instead of missing changes.
    pub async fn watch(
        self: &Arc<Self>,
        after: Option<Position>,
        now: i64,
        tasks: &Tasks,
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<Result<WatchEvent, LogError>>, WatchError> {
        if let Some(after) = after {
            self.log.check_position(after).await??;
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let this = self.clone();
        tasks.spawn("watch stream", async move {
            // Subscribe before reading the backlog, so nothing falls between the two.
            let mut live = this.applier.subscribe();
            let snapshot = after.is_none();
            let mut last = after.unwrap_or(0);
            if this
                .send_backlog(&tx, &mut last, snapshot.then_some(now))
                .await
                .is_err()
            {
                return;
            }
            if tx
                .send(Ok(WatchEvent::CaughtUp { position: last }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let received = tokio::select! {
                    received = live.recv() => received,
                    () = stop.cancelled() => break,
                    () = tx.closed() => break,
                };
                let outcome = match received {
                    Ok(entry) => tokio::select! {
                        sent = send_entry(&tx, &entry, &mut last, None) => sent,
                        () = stop.cancelled() => break,
                    },
                    // Fell behind the feed: the log still has everything.
                    Err(RecvError::Lagged(_)) => this.send_backlog(&tx, &mut last, None).await,
                    Err(RecvError::Closed) => break,
                };
                if outcome.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    /// Sends log entries after `last`; with `live_at`, only records still live then.
    async fn send_backlog(
        &self,
        tx: &mpsc::Sender<Result<WatchEvent, LogError>>,
        last: &mut Position,
        live_at: Option<i64>,
    ) -> Result<(), ()> {
        loop {
            let page = match self.log.read_after(*last, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = tx.send(Err(error)).await;
                    return Err(());
                }
            };
            let full = page.len() == PAGE;
            for entry in &page {
                send_entry(tx, entry, last, live_at).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }
}

async fn send_entry(
    tx: &mpsc::Sender<Result<WatchEvent, LogError>>,
    entry: &LogEntry,
    last: &mut Position,
    live_at: Option<i64>,
) -> Result<(), ()> {
    if entry.position <= *last {
        return Ok(());
    }
    *last = entry.position;
    let Change::Revoke(revocation) = &entry.change else {
        return Ok(());
    };
    if live_at.is_some_and(|now| revocation.forget_after <= now) {
        return Ok(());
    }
    tx.send(Ok(WatchEvent::Revoked {
        position: entry.position,
        revocation: revocation.clone(),
    }))
    .await
    .map_err(|_| ())
}
