//! The `embedded` backend: the log in a redb file.
//!
//! One writer thread owns all writes. Appends that are waiting when it starts a
//! transaction share that transaction's commit (group commit), so throughput grows with
//! concurrency while every append still returns only after its own commit.

use std::{path::PathBuf, sync::Arc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{Applier, Change, LogEntry, LogError, Position, decode, encode};

/// position → encoded change.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// (forget_after, position) → (): finds forgotten entries without scanning the log.
const EXPIRY: TableDefinition<(i64, u64), ()> = TableDefinition::new("expiry");

/// "last" → the highest position ever assigned, so positions are never reused even
/// after compaction removed the newest entries.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_POSITION: &str = "last";
/// When a commit last worked: what a replica that cannot commit writes to learn that it
/// can again.
const PROBED_AT: &str = "probed-at";
/// How often a store that cannot commit tries again, with no write to try it.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// JSON `[iss, sub]` → position of that subject's latest claims entry.
const SUBJECTS: TableDefinition<&[u8], u64> = TableDefinition::new("subjects");

/// Most appends committed together.
const MAX_BATCH: usize = 1024;

type Pending = (Change, oneshot::Sender<Result<Position, LogError>>);

/// The open database, shared by the writer and readers. `None` once closed, and while
/// the writer reopens it after a failed commit. Readers clone the handle for one read at
/// a time, so the file is released as soon as those in flight finish.
#[derive(Default)]
struct Handle {
    db: std::sync::RwLock<Option<Arc<Database>>>,
    /// Set by `close`: the writer never reopens a closed log.
    closed: std::sync::atomic::AtomicBool,
}

type Shared = Arc<Handle>;

/// How long [`EmbeddedLog::close`] waits for reads in flight to let go of the file.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct EmbeddedLog {
    db: Shared,
    applier: Arc<Applier>,
    /// `None` once closed: closing the channel ends the writer.
    writer: std::sync::Mutex<Option<mpsc::Sender<Pending>>>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The highest position ever assigned, when the file was opened.
    last_at_open: Position,
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.release();
    }
}

fn embedded(error: impl Into<redb::Error>) -> LogError {
    LogError::Embedded(error.into())
}

impl EmbeddedLog {
    /// Opens (or creates) the file, replays it into `applier`, and starts the writer.
    pub async fn open(path: PathBuf, applier: Arc<Applier>) -> Result<Self, LogError> {
        let replay_applier = applier.clone();
        let path_for_writer = path.clone();
        let (db, last) = tokio::task::spawn_blocking(move || -> Result<_, LogError> {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            // redb takes an empty file for a new store. One that held revocations and
            // was emptied (a restore gone wrong) would be lost without a word: say it.
            if std::fs::metadata(&path).is_ok_and(|file| file.len() == 0) {
                tracing::warn!(path = %path.display(), "the state store file is empty: starting a new store; revocations it may have held are gone");
            }
            let db = open_database(&path)?;
            let txn = db.begin_read().map_err(embedded)?;
            let log = txn.open_table(LOG).map_err(embedded)?;
            let mut last = 0;
            for item in log.iter().map_err(embedded)? {
                let (position, bytes) = item.map_err(embedded)?;
                let position = position.value();
                replay_applier.apply(LogEntry {
                    position,
                    change: decode(bytes.value()),
                });
                last = position;
            }
            let meta = txn.open_table(META).map_err(embedded)?;
            let high_water = meta
                .get(LAST_POSITION)
                .map_err(embedded)?
                .map_or(0, |v| v.value());
            Ok((Arc::new(db), last.max(high_water)))
        })
        .await??;

        let (sender, requests) = mpsc::channel(MAX_BATCH * 4);
        let shared: Shared = Arc::new(Handle {
            db: std::sync::RwLock::new(Some(db)),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let writer = Writer {
            db: shared.clone(),
            path: path_for_writer,
            applier: applier.clone(),
            last,
        };
        let writer_thread = std::thread::Builder::new()
            .name("statelog-writer".into())
            .spawn(move || writer.run(requests))
            .map_err(embedded)?;
        Ok(Self {
            db: shared,
            applier,
            writer: std::sync::Mutex::new(Some(sender)),
            writer_thread: std::sync::Mutex::new(Some(writer_thread)),
            last_at_open: last,
        })
    }

    /// The last position handed out: every append since the start is applied here, and
    /// positions from before it reach up to the file's high-water mark.
    pub fn last_position(&self) -> Position {
        self.applier.applied().max(self.last_at_open)
    }

    /// Ends the writer (after the appends it has) and lets go of the file, so it can
    /// be opened again as soon as this returns.
    pub async fn close(&self) {
        let (thread, db) = self.detach();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // A read still running holds the file: one whose task was cancelled at shutdown
        // finishes its blocking part all the same. Reads are bounded, so this is short;
        // the deadline only keeps a stuck disk from holding up the stop for ever.
        let Some(mut db) = db else { return };
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        loop {
            match Arc::try_unwrap(db) {
                Ok(_last) => return,
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    db = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                Err(_) => {
                    tracing::warn!("a read of the embedded store outlived the stop");
                    return;
                }
            }
        }
    }

    /// What [`Self::close`] does, from a context that cannot await, except waiting for
    /// reads in flight.
    fn release(&self) {
        if let (Some(thread), _) = self.detach() {
            let _ = thread.join();
        }
    }

    /// Drops this log's handles; the writer thread, still finishing, is returned to join,
    /// and the database, which reads in flight may still share.
    fn detach(&self) -> (Option<std::thread::JoinHandle<()>>, Option<Arc<Database>>) {
        self.db
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.writer.lock().map(|mut writer| writer.take()).ok();
        let db = self.db.db.write().ok().and_then(|mut db| db.take());
        let thread = self
            .writer_thread
            .lock()
            .ok()
            .and_then(|mut thread| thread.take());
        (thread, db)
    }

    fn db(&self) -> Result<Arc<Database>, LogError> {
        self.db
            .db
            .read()
            .ok()
            .and_then(|db| db.clone())
            .ok_or(LogError::Closed)
    }

    pub fn applier(&self) -> &Arc<Applier> {
        &self.applier
    }

    pub async fn append(&self, change: Change) -> Result<Position, LogError> {
        let (done, result) = oneshot::channel();
        let writer = self
            .writer
            .lock()
            .ok()
            .and_then(|writer| writer.clone())
            .ok_or(LogError::Closed)?;
        writer
            .send((change, done))
            .await
            .map_err(|_| LogError::Closed)?;
        result.await.map_err(|_| LogError::Closed)?
    }

    pub async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(embedded)?;
            let log = txn.open_table(LOG).map_err(embedded)?;
            let mut entries = Vec::new();
            for item in log
                .range(after.saturating_add(1)..)
                .map_err(embedded)?
                .take(limit)
            {
                let (position, bytes) = item.map_err(embedded)?;
                entries.push(LogEntry {
                    position: position.value(),
                    change: decode(bytes.value()),
                });
            }
            Ok(entries)
        })
        .await?
    }

    /// Deletes entries whose `forget_after` has passed.
    pub async fn compact(&self, now: i64) -> Result<usize, LogError> {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(embedded)?;
            let removed = {
                let mut expiry = txn.open_table(EXPIRY).map_err(embedded)?;
                let mut log = txn.open_table(LOG).map_err(embedded)?;
                let expired: Vec<(i64, u64)> = expiry
                    .range(..=(now, u64::MAX))
                    .map_err(embedded)?
                    .map(|item| item.map(|(key, _)| key.value()))
                    .collect::<Result<_, _>>()
                    .map_err(embedded)?;
                for key in &expired {
                    expiry.remove(key).map_err(embedded)?;
                    log.remove(key.1).map_err(embedded)?;
                }
                expired.len()
            };
            txn.commit().map_err(embedded)?;
            Ok(removed)
        })
        .await?
    }
}

/// Opens (or creates) the file with every table in it.
fn open_database(path: &std::path::Path) -> Result<Database, LogError> {
    let db = Database::create(path).map_err(|e| LogError::Open {
        path: path.to_owned(),
        source: e.into(),
    })?;
    let txn = db.begin_write().map_err(embedded)?;
    txn.open_table(LOG).map_err(embedded)?;
    txn.open_table(EXPIRY).map_err(embedded)?;
    txn.open_table(META).map_err(embedded)?;
    txn.open_table(SUBJECTS).map_err(embedded)?;
    txn.commit().map_err(embedded)?;
    Ok(db)
}

/// The highest position ever assigned, as the file records it.
fn high_water(db: &Database) -> Result<Position, LogError> {
    let txn = db.begin_read().map_err(embedded)?;
    let meta = txn.open_table(META).map_err(embedded)?;
    Ok(meta
        .get(LAST_POSITION)
        .map_err(embedded)?
        .map_or(0, |v| v.value()))
}

/// The writer thread's state.
struct Writer {
    db: Shared,
    path: PathBuf,
    applier: Arc<Applier>,
    last: Position,
}

impl Writer {
    fn run(mut self, mut requests: mpsc::Receiver<Pending>) {
        let mut healthy = true;
        let mut probed = std::time::Instant::now();
        loop {
            let first = if healthy {
                requests.blocking_recv()
            } else {
                // Not ready means no traffic and so no write to find out that the disk
                // has room again: try a commit of our own now and then.
                match requests.try_recv() {
                    Ok(first) => Some(first),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Short naps, so that a write that comes meanwhile is not kept
                        // waiting for the next probe.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        if probed.elapsed() < PROBE_INTERVAL {
                            continue;
                        }
                        probed = std::time::Instant::now();
                        if self.probe() {
                            tracing::info!("the state log commits again");
                            healthy = true;
                            self.applier.note_store_healthy(true);
                        }
                        continue;
                    }
                }
            };
            let Some(first) = first else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            match self.commit(&batch) {
                Ok(entries) => {
                    healthy = true;
                    self.applier.note_store_healthy(true);
                    for ((_, done), entry) in batch.into_iter().zip(entries) {
                        let position = entry.position;
                        self.last = position;
                        self.applier.apply(entry);
                        let _ = done.send(Ok(position));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "state log commit failed; the appends are refused");
                    healthy = false;
                    self.applier.note_store_healthy(false);
                    let error = Arc::new(error);
                    for (_, done) in batch {
                        let _ = done.send(Err(LogError::Commit(error.clone())));
                    }
                }
            }
        }
        tracing::debug!("state log writer stopped");
    }

    /// Commits a batch. After a failed commit redb refuses every later one ("previous
    /// I/O error"), so the handle is dropped and the next batch reopens the file: a full
    /// disk that is freed, or a volume that comes back, needs no restart.
    fn commit(&mut self, batch: &[Pending]) -> Result<Vec<LogEntry>, LogError> {
        let db = self.database()?;
        let committed = commit(&db, batch, self.last);
        if committed.is_err() {
            self.drop_database(db);
        }
        committed
    }

    /// Whether a commit works now (a small one of its own).
    fn probe(&mut self) -> bool {
        let Ok(db) = self.database() else {
            return false;
        };
        let probed = (|| {
            let txn = db.begin_write().map_err(embedded)?;
            txn.open_table(META)
                .map_err(embedded)?
                .insert(PROBED_AT, crate::unix_now().unsigned_abs())
                .map_err(embedded)?;
            txn.commit().map_err(embedded)
        })();
        if probed.is_err() {
            self.drop_database(db);
        }
        probed.is_ok()
    }

    fn drop_database(&self, db: Arc<Database>) {
        drop(db);
        if let Ok(mut slot) = self.db.db.write() {
            slot.take();
        }
    }

    /// The open file, or the file opened again after a failed commit.
    fn database(&mut self) -> Result<Arc<Database>, LogError> {
        let current = self.db.db.read().ok().and_then(|db| db.clone());
        let db = match current {
            Some(db) => db,
            None if self.db.closed.load(std::sync::atomic::Ordering::Acquire) => {
                return Err(LogError::Closed);
            }
            None => {
                let reopened = Arc::new(open_database(&self.path)?);
                {
                    let mut slot = self.db.db.write().map_err(|_| LogError::Closed)?;
                    // `close` may have run meanwhile: then the file must stay closed.
                    if self.db.closed.load(std::sync::atomic::Ordering::Acquire) {
                        return Err(LogError::Closed);
                    }
                    *slot = Some(reopened.clone());
                }
                // A commit reported as failed may still have reached the disk: never
                // hand out its positions again.
                self.last = self.last.max(high_water(&reopened)?);
                tracing::info!("state log reopened after a failed commit");
                reopened
            }
        };
        Ok(db)
    }
}

fn commit(db: &Database, batch: &[Pending], last: Position) -> Result<Vec<LogEntry>, LogError> {
    let txn = db.begin_write().map_err(embedded)?;
    let mut entries = Vec::with_capacity(batch.len());
    {
        let mut log = txn.open_table(LOG).map_err(embedded)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(embedded)?;
        let mut subjects = txn.open_table(SUBJECTS).map_err(embedded)?;
        for (offset, (change, _)) in batch.iter().enumerate() {
            let position = last + 1 + offset as u64;
            log.insert(position, encode(change)?.as_slice())
                .map_err(embedded)?;
            if let Some(subject) = change.subject() {
                // Only a subject's latest claims matter: the entry it replaces goes, and a
                // deletion leaves nothing behind, so the file does not grow with updates.
                let field = serde_json::to_vec(&subject)?;
                if let Some(previous) = subjects.remove(field.as_slice()).map_err(embedded)? {
                    log.remove(previous.value()).map_err(embedded)?;
                }
                if matches!(change, Change::DeleteSubjectClaims { .. }) {
                    log.remove(position).map_err(embedded)?;
                } else {
                    subjects
                        .insert(field.as_slice(), position)
                        .map_err(embedded)?;
                }
            } else {
                expiry
                    .insert((change.forget_after(), position), ())
                    .map_err(embedded)?;
            }
            entries.push(LogEntry {
                position,
                change: change.clone(),
            });
        }
        let mut meta = txn.open_table(META).map_err(embedded)?;
        meta.insert(LAST_POSITION, last + batch.len() as u64)
            .map_err(embedded)?;
    }
    txn.commit().map_err(embedded)?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::SubjectClaims;
    use crate::revocation::RevocationSet;

    /// A read that was running when the service stopped (a task cancelled at shutdown
    /// still finishes its blocking part) holds the database: `close` returns only once
    /// it is done, so a restart in the same process can open the file again.
    #[tokio::test]
    async fn close_waits_for_a_read_in_flight_before_it_returns() -> Result<(), LogError> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.redb");
        let applier = || {
            Applier::new(
                Arc::new(RevocationSet::new()),
                Arc::new(SubjectClaims::new()),
            )
        };
        let log = EmbeddedLog::open(path.clone(), applier()).await?;
        let read_in_flight = log.db()?;
        let closing = tokio::spawn(async move { log.close().await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !closing.is_finished(),
            "close returned while a read still held the file"
        );
        drop(read_in_flight);
        tokio::time::timeout(std::time::Duration::from_secs(5), closing)
            .await
            .map_err(|_| LogError::Closed)??;
        EmbeddedLog::open(path, applier()).await?;
        Ok(())
    }
}
