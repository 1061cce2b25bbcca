//! The state log: an ordered stream of changes (revocations now, per-subject claims
//! later) that every replica applies in order. Durability and replication live here,
//! behind one interface with three backends:
//!
//! - `memory`: nothing persisted (tests, throwaway runs);
//! - `embedded` (default): a redb file; an append returns after its commit (appends that
//!   arrive together share one commit); a restart replays the file;
//! - `redis`: a Redis Stream is the log; every replica tails it and applies each entry
//!   once, in order, resuming from its last applied position after a restart or a lost
//!   connection.
//!
//! Entries reach the in-memory state only through [`Applier::apply`], which skips
//! anything at or below the last applied position: no change is applied twice or out of
//! order.

mod embedded;
mod memory;
pub(crate) mod redis;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::enrich::SubjectClaims;
use crate::revocation::{Revocation, RevocationSet};
use crate::tasks::Tasks;

/// Ordered position of an entry in the log; 0 means "before the first entry".
pub type Position = u64;

/// One change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Revoke(Revocation),
    /// Replaces a subject's custom claims.
    SetSubjectClaims {
        iss: String,
        sub: String,
        claims: serde_json::Map<String, serde_json::Value>,
    },
    DeleteSubjectClaims {
        iss: String,
        sub: String,
    },
    /// A change this version does not know (written by a newer one during a rolling
    /// upgrade) or cannot decode: skipped, so it never stops the log.
    #[serde(other)]
    Unknown,
}

impl Change {
    /// The (issuer, subject) whose claims this change sets or deletes.
    pub fn subject(&self) -> Option<(&str, &str)> {
        match self {
            Change::SetSubjectClaims { iss, sub, .. }
            | Change::DeleteSubjectClaims { iss, sub } => Some((iss.as_str(), sub.as_str())),
            Change::Revoke(_) | Change::Unknown => None,
        }
    }

    /// Unix seconds after which the change no longer matters and may leave the log.
    pub fn forget_after(&self) -> i64 {
        match self {
            Change::Revoke(revocation) => revocation.forget_after,
            // Subject claims stay until replaced or deleted.
            Change::SetSubjectClaims { .. }
            | Change::DeleteSubjectClaims { .. }
            | Change::Unknown => i64::MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub position: Position,
    pub change: Change,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Redis did not confirm the write (or read): nothing was applied.
    #[error("the state store is unavailable: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("the state store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply from the state store: {0}")]
    Reply(&'static str),
    #[error("unexpected reply from the state store: {0}")]
    Parse(#[from] ::redis::ParsingError),
    #[error("cannot open the embedded store {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("the embedded store failed: {0}")]
    Embedded(#[source] redb::Error),
    /// A group commit failed; every append in it gets this.
    #[error("the commit failed: {0}")]
    Commit(#[source] Arc<LogError>),
    #[error("the embedded store is closed")]
    Closed,
    #[error("cannot create the store's directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read the Redis CA file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a change does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("a store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Redis has the write, but fewer of its replicas than asked for confirmed it.
    #[error("{got} of {wanted} Redis replicas confirmed the write in time")]
    NotReplicated { wanted: u32, got: u32 },
}

/// Why a watcher cannot resume after a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("the position is not one this log handed out")]
    Unknown,
    #[error("entries after the position have been trimmed from the log")]
    Trimmed,
}

impl LogError {
    /// Whether the store did not answer (retrying may help), rather than failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Redis(_) | Self::Timeout(_) | Self::Parse(_) | Self::NotReplicated { .. }
        )
    }
}

/// Which store holds the log, validated.
#[derive(Clone)]
pub enum StoreSpec {
    Memory,
    Embedded { path: std::path::PathBuf },
    Redis(RedisSpec),
}

/// The Redis backend's settings.
#[derive(Clone)]
pub struct RedisSpec {
    /// `redis://`, `rediss://`, `unix://` or `redis+sentinel://`.
    pub url: String,
    pub stream: String,
    pub timeout: Duration,
    /// Entries older than this are trimmed from the stream.
    pub retention: Duration,
    /// Redis replicas that must confirm a write before it is acknowledged.
    pub wait_replicas: u32,
    /// The CA that signed Redis's certificate (`rediss://`), instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for StoreSpec {
    // The Redis URL may carry a password: only its host part is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Embedded { path } => write!(f, "embedded({})", path.display()),
            Self::Redis(RedisSpec { url, stream, .. }) => {
                // Only where it is: no userinfo, and no query (unix:// URLs carry the
                // password there).
                let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                let rest = rest.split('?').next().unwrap_or_default();
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                write!(f, "redis({host}, stream {stream})")
            }
        }
    }
}

/// Receives entries in log order and applies them to the in-memory state; publishes
/// each applied entry to watchers and the applied position to waiters.
pub struct Applier {
    pub revocations: Arc<RevocationSet>,
    pub subjects: Arc<SubjectClaims>,
    applied: watch::Sender<Position>,
    /// Whether the log has been applied up to the head it had at start.
    caught_up: watch::Sender<bool>,
    /// Whether the local store can commit (an embedded store after a failed commit
    /// cannot until it reopens); a replica is not ready while it cannot.
    store_healthy: watch::Sender<bool>,
    feed: broadcast::Sender<Arc<LogEntry>>,
    /// Store errors since start.
    errors: AtomicU64,
    /// Entries that could not be read, skipped.
    skipped: AtomicU64,
    /// Unix seconds of the last successful exchange with the store.
    last_contact: AtomicI64,
}

/// Entries buffered for slow watchers before they must re-read from the log.
const FEED_CAPACITY: usize = 4096;

impl Applier {
    pub fn new(revocations: Arc<RevocationSet>, subjects: Arc<SubjectClaims>) -> Arc<Self> {
        Arc::new(Self {
            revocations,
            subjects,
            applied: watch::Sender::new(0),
            caught_up: watch::Sender::new(false),
            store_healthy: watch::Sender::new(true),
            feed: broadcast::Sender::new(FEED_CAPACITY),
            errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            last_contact: AtomicI64::new(crate::unix_now()),
        })
    }

    /// Everything up to the head at start is applied: the revocation set may now answer
    /// "not revoked", and the replica may become ready.
    pub fn mark_caught_up(&self) {
        self.revocations.mark_complete();
        self.caught_up.send_replace(true);
    }

    /// Resolves once [`Self::mark_caught_up`] has been called.
    pub async fn wait_caught_up(&self) {
        let mut caught_up = self.caught_up.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = caught_up.wait_for(|caught_up| *caught_up).await;
    }

    /// Whether the store can commit changed.
    pub fn note_store_healthy(&self, healthy: bool) {
        self.store_healthy.send_if_modified(|current| {
            let changed = *current != healthy;
            *current = healthy;
            changed
        });
    }

    /// Follows whether the store can commit.
    pub fn store_health(&self) -> watch::Receiver<bool> {
        self.store_healthy.subscribe()
    }

    /// The store answered.
    pub fn note_contact(&self) {
        self.last_contact
            .store(crate::unix_now(), Ordering::Relaxed);
    }

    /// The store failed or did not answer.
    pub fn note_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Seconds since the store last answered (0 for local stores while they work).
    pub fn lag_secs(&self, now: i64) -> i64 {
        now.saturating_sub(self.last_contact.load(Ordering::Relaxed))
            .max(0)
    }

    /// Applies `entry` unless it is at or below the last applied position.
    pub fn apply(&self, entry: LogEntry) {
        if entry.position <= *self.applied.borrow() {
            return;
        }
        if let Change::Unknown = entry.change {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                position = entry.position,
                "skipped a state log entry this version cannot read"
            );
        }
        self.apply_change(&entry.change);
        self.applied.send_replace(entry.position);
        // No watcher is fine: the entry is in the log for anyone who asks later.
        let _ = self.feed.send(Arc::new(entry));
    }

    /// Applies a revocation the store has confirmed, ahead of its turn in the log: the
    /// writer's own replica answers with it at once, and applying it again in order
    /// changes nothing (revocations only add). Subject claims are last-writer-wins, so
    /// they are never applied out of order: `false` for them. Watchers get every change
    /// in log order.
    pub fn apply_confirmed(&self, change: &Change) -> bool {
        match change {
            Change::Revoke(revocation) => {
                self.revocations.apply(revocation);
                true
            }
            _ => false,
        }
    }

    /// Waits until `position` has been applied here, for at most `timeout`.
    pub async fn wait_applied(&self, position: Position, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|at| *at >= position))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    fn apply_change(&self, change: &Change) {
        match change {
            Change::Revoke(revocation) => self.revocations.apply(revocation),
            Change::SetSubjectClaims { iss, sub, claims } => {
                self.subjects.set(iss, sub, claims.clone())
            }
            Change::DeleteSubjectClaims { iss, sub } => self.subjects.delete(iss, sub),
            Change::Unknown => {}
        }
    }

    pub fn applied(&self) -> Position {
        *self.applied.borrow()
    }

    /// Counts entries the store passed over without a position to apply them at.
    pub fn note_skipped(&self, entries: u64) {
        self.skipped.fetch_add(entries, Ordering::Relaxed);
        tracing::warn!(
            entries,
            "skipped state log entries whose ID has no position here"
        );
    }

    /// Log entries skipped because they could not be read.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Applied entries from now on, for watchers.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.feed.subscribe()
    }
}

/// The log, whichever backend holds it.
pub enum StateLog {
    Memory(memory::MemoryLog),
    Embedded(embedded::EmbeddedLog),
    Redis(redis::RedisLog),
}

impl StateLog {
    /// Opens the log and brings `applier` up to date: the embedded store replays its
    /// file here; Redis starts its tailer in `tasks`, which marks the applier caught up
    /// once it has read the stream to the head (see [`Applier::wait_caught_up`]).
    pub async fn open(
        config: &StoreSpec,
        applier: Arc<Applier>,
        tasks: &Tasks,
    ) -> Result<Self, LogError> {
        match config {
            StoreSpec::Memory => {
                applier.mark_caught_up();
                Ok(Self::Memory(memory::MemoryLog::new(applier)))
            }
            StoreSpec::Embedded { path } => {
                let log = embedded::EmbeddedLog::open(path.clone(), applier.clone()).await?;
                applier.mark_caught_up();
                Ok(Self::Embedded(log))
            }
            StoreSpec::Redis(spec) => Ok(Self::Redis(redis::RedisLog::open(spec, applier, tasks)?)),
        }
    }

    /// Appends a change. Returns once it is durable and applied here. An error means
    /// the outcome is unknown (the store may have kept it): appending again is safe.
    pub async fn append(&self, change: Change) -> Result<Position, LogError> {
        match self {
            Self::Memory(log) => Ok(log.append(change)),
            Self::Embedded(log) => {
                let appended = log.append(change).await;
                match &appended {
                    Ok(_) => log.applier().note_contact(),
                    Err(_) => log.applier().note_error(),
                }
                appended
            }
            // Applied here as soon as Redis confirmed it (see `RedisLog::append`).
            Self::Redis(log) => log.append(change).await,
        }
    }

    /// Releases what the log holds open (the embedded store's file), even while other
    /// owners still hold the log: later calls fail instead of reopening it.
    pub async fn close(&self) {
        if let Self::Embedded(log) = self {
            log.close().await;
        }
    }

    /// Seconds since the store last answered: how stale this replica may be. Local stores
    /// are never behind.
    pub fn lag_secs(&self, now: i64) -> i64 {
        match self {
            Self::Redis(log) => log.applier().lag_secs(now),
            Self::Memory(_) | Self::Embedded(_) => 0,
        }
    }

    /// Whether a watcher may resume after `after`. Local stores remove only entries that
    /// no longer matter (forgotten revocations, replaced subject claims), so only a
    /// position beyond their last is refused.
    pub async fn check_position(
        &self,
        after: Position,
    ) -> Result<Result<(), PositionError>, LogError> {
        let last = match self {
            Self::Redis(log) => return log.check_position(after).await,
            Self::Memory(log) => log.last_position(),
            Self::Embedded(log) => log.last_position(),
        };
        Ok(if after > last {
            Err(PositionError::Unknown)
        } else {
            Ok(())
        })
    }

    /// Entries after `after`, oldest first, at most `limit`.
    pub async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        match self {
            Self::Memory(log) => Ok(log.read_after(after, limit)),
            Self::Embedded(log) => log.read_after(after, limit).await,
            Self::Redis(log) => log.read_after(after, limit).await,
        }
    }

    /// Removes entries that no longer matter: forgotten ones (memory, embedded) or ones
    /// older than the retention (Redis trims by age).
    pub async fn compact(&self, now: i64) -> Result<usize, LogError> {
        match self {
            Self::Memory(log) => Ok(log.compact(now)),
            Self::Embedded(log) => log.compact(now).await,
            Self::Redis(log) => log.compact().await,
        }
    }
}

fn encode(change: &Change) -> Result<Vec<u8>, LogError> {
    Ok(serde_json::to_vec(change)?)
}

/// Decodes an entry; one that does not decode becomes `Unknown` (and is skipped) rather
/// than an error that would stop every later entry from being applied.
pub fn decode(bytes: &[u8]) -> Change {
    serde_json::from_slice(bytes).unwrap_or_else(|error| {
        tracing::error!(%error, "a state log entry does not decode; skipping it");
        Change::Unknown
    })
}

#[cfg(test)]
mod tests;
