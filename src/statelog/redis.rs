//! The `redis` backend: a Redis Stream is the log.
//!
//! Appends are `XADD` (trimmed by age with `MINID`); the stream's entry IDs
//! (`<ms>-<seq>`) are the positions, packed into a u64 as `ms << 20 | seq`. Every replica
//! runs a tailer that catches up with `XRANGE` and then follows with blocking `XREAD`,
//! resuming from its last applied position after a lost connection. Every command has a
//! timeout. A write Redis confirmed is applied here at once (and again, harmlessly, when
//! the tailer reaches it); a write Redis did not confirm is an error whose outcome is
//! unknown. With `wait_replicas`, a write is confirmed only once that many Redis
//! replicas have it (`WAIT`). The master is found directly (`redis://`) or through
//! Sentinel (`redis+sentinel://`), again after every lost connection.

use std::{sync::Arc, time::Duration};

use redis::{
    AsyncConnectionConfig, ConnectionAddr, Value,
    aio::MultiplexedConnection,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio::sync::Mutex;

use super::{
    Applier, Change, LogEntry, LogError, Position, PositionError, RedisSpec, decode, encode,
};
use crate::tasks::Tasks;

/// Field of each stream entry that holds the encoded change.
const FIELD: &str = "c";
const SEQ_BITS: u32 = 20;
/// Entries read per XRANGE/XREAD.
const BATCH: usize = 1000;
/// How long one blocking XREAD waits for new entries before it is reissued.
const BLOCK: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct RedisLog {
    inner: Arc<Inner>,
}

/// Where the master is.
enum Endpoint {
    Direct(redis::Client),
    /// Asked of the sentinels at every (re)connect, so a failover is followed.
    Sentinel(Mutex<SentinelClient>),
}

/// `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// Whether `url` is a Redis URL this store can use (read as the store reads it when it
/// starts, without connecting), and why not. Names no part of the URL, which may hold a
/// password.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.contains("#insecure") {
        return Err("asks for TLS without a certificate check (#insecure), which introspectd does not do: give the CA in store.redis_ca_file".into());
    }
    Endpoint::open(url, None)
        .map(drop)
        .map_err(|error| match error {
            LogError::Redis(error) => format!(
                "is not a Redis URL introspectd can use ({:?})",
                error.kind()
            ),
            LogError::Reply(why) => why.to_owned(),
            other => other.to_string(),
        })
}

impl Endpoint {
    /// The master's address from `url`, with `ca_pem` as the only root for `rediss://`.
    fn open(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, LogError> {
        let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) else {
            let client = match ca_pem {
                Some(root_cert) => redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )?,
                None => redis::Client::open(url)?,
            };
            return Ok(Self::Direct(client));
        };
        let invalid =
            || LogError::Reply("a redis+sentinel URL is host:port[,host:port]/service[/db]");
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(invalid)?;
        let (service, db) = match path.split_once('/') {
            Some((service, db)) => (service, Some(db.parse::<i64>().map_err(|_| invalid())?)),
            None => (path, None),
        };
        let sentinels = hosts
            .split(',')
            .map(|host| {
                let (name, port) = host.rsplit_once(':')?;
                Some(ConnectionAddr::Tcp(name.to_owned(), port.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .filter(|sentinels| !sentinels.is_empty() && !service.is_empty())
            .ok_or_else(invalid)?;
        let mut builder =
            SentinelClientBuilder::new(sentinels, service, SentinelServerType::Master)?;
        if let Some(credentials) = credentials {
            // Percent-decoded, as redis:// URLs are, so one password is written the same
            // way in both.
            let decoded = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8()
                    .map(std::borrow::Cow::into_owned)
                    .map_err(|_| invalid())
            };
            let (user, password) = credentials.split_once(':').unwrap_or(("", credentials));
            if !user.is_empty() {
                builder = builder.set_client_to_redis_username(decoded(user)?);
            }
            builder = builder.set_client_to_redis_password(decoded(password)?);
        }
        if let Some(db) = db {
            builder = builder.set_client_to_redis_db(db);
        }
        Ok(Self::Sentinel(Mutex::new(builder.build()?)))
    }

    async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, LogError> {
        Ok(match self {
            Self::Direct(client) => {
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?
            }
            Self::Sentinel(sentinel) => {
                sentinel
                    .lock()
                    .await
                    .get_async_connection_with_config(config)
                    .await?
            }
        })
    }
}

struct Inner {
    endpoint: Endpoint,
    /// Redis replicas that must have a write before it is acknowledged (0: the master).
    wait_replicas: u32,
    stream: String,
    timeout: Duration,
    retention: Duration,
    applier: Arc<Applier>,
    /// The connection appends and reads share; replaced after a failure.
    connection: Mutex<Option<MultiplexedConnection>>,
    /// Appends that `WAIT` for Redis replicas get a connection of their own: Redis
    /// blocks the whole connection during `WAIT`, which would stall reads behind it.
    waiting: Mutex<Option<MultiplexedConnection>>,
}

impl RedisLog {
    pub fn open(spec: &RedisSpec, applier: Arc<Applier>, tasks: &Tasks) -> Result<Self, LogError> {
        let RedisSpec {
            url,
            stream,
            timeout,
            retention,
            wait_replicas,
            ca_file,
        } = spec;
        let (timeout, retention, wait_replicas) = (*timeout, *retention, *wait_replicas);
        let ca_pem = ca_file.as_deref().map(read_ca).transpose()?;
        let inner = Arc::new(Inner {
            endpoint: Endpoint::open(url, ca_pem)?,
            wait_replicas,
            stream: stream.to_owned(),
            timeout,
            retention,
            applier,
            connection: Mutex::new(None),
            waiting: Mutex::new(None),
        });
        tasks.spawn("redis tailer", tail(inner.clone()));
        Ok(Self { inner })
    }

    pub fn applier(&self) -> &Arc<Applier> {
        &self.inner.applier
    }

    pub async fn append(&self, change: Change) -> Result<Position, LogError> {
        let payload = encode(&change)?;
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.inner.stream)
            .arg("MINID")
            .arg("~")
            .arg(self.inner.min_id())
            .arg("*")
            .arg(FIELD)
            .arg(payload);
        // Subject claims never expire, but the stream is trimmed by age: the snapshot
        // hash keeps their latest state, written in the same transaction.
        let snapshot = match &change {
            Change::SetSubjectClaims { iss, sub, claims } => {
                let mut hset = redis::cmd("HSET");
                hset.arg(self.inner.snapshot_key())
                    .arg(snapshot_field(iss, sub))
                    .arg(serde_json::to_vec(claims)?);
                Some(hset)
            }
            Change::DeleteSubjectClaims { iss, sub } => {
                let mut hdel = redis::cmd("HDEL");
                hdel.arg(self.inner.snapshot_key())
                    .arg(snapshot_field(iss, sub));
                Some(hdel)
            }
            Change::Revoke(_) | Change::Unknown => None,
        };
        // One round trip: [MULTI] XADD [snapshot EXEC] [WAIT]. WAIT must follow the
        // write on the same connection, which a pipeline guarantees.
        let mut pipe = redis::pipe();
        let transaction = snapshot.is_some();
        if transaction {
            pipe.cmd("MULTI");
        }
        pipe.add_command(xadd);
        if let Some(snapshot) = snapshot {
            pipe.add_command(snapshot).cmd("EXEC");
        }
        let wait = self.inner.wait_replicas;
        if wait > 0 {
            let wait_ms = u64::try_from(self.inner.timeout.as_millis() / 2).unwrap_or(1000);
            pipe.cmd("WAIT").arg(wait).arg(wait_ms.max(1));
        }
        let slot = if wait > 0 {
            &self.inner.waiting
        } else {
            &self.inner.connection
        };
        let Value::Array(mut replies) = self.inner.query_on(slot, Request::Pipe(&pipe)).await?
        else {
            return Err(LogError::Reply("a pipeline answer that is not an array"));
        };
        let replicated = match wait {
            0 => None,
            _ => Some(redis::from_redis_value::<u32>(
                replies.pop().unwrap_or(Value::Nil),
            )?),
        };
        let written = match (transaction, replies.pop()) {
            (true, Some(Value::Array(mut exec))) if !exec.is_empty() => exec.swap_remove(0),
            (false, Some(reply)) => reply,
            _ => return Err(LogError::Reply("a transaction answer without the entry id")),
        };
        let id: String = redis::from_redis_value(written)?;
        let position =
            parse_id(&id).ok_or(LogError::Reply("a stream id that is not <ms>-<seq>"))?;
        // Confirmed by the master: a revocation is answered with from now on, here; a
        // subject-claims change once the tailer has applied it in order.
        if !self.inner.applier.apply_confirmed(&change)
            && !self
                .inner
                .applier
                .wait_applied(position, self.inner.timeout)
                .await
        {
            return Err(LogError::Timeout(self.inner.timeout));
        }
        match replicated {
            Some(got) if got < wait => Err(LogError::NotReplicated { wanted: wait, got }),
            _ => Ok(position),
        }
    }

    /// Whether a watcher may resume after `after`: a position this log handed out, with
    /// nothing after it trimmed away.
    pub async fn check_position(
        &self,
        after: Position,
    ) -> Result<Result<(), PositionError>, LogError> {
        self.inner.check_position(after).await
    }

    pub async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        Ok(self.inner.range(&format_id(after), limit).await?.entries)
    }

    pub async fn compact(&self) -> Result<usize, LogError> {
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(&self.inner.stream)
            .arg("MINID")
            .arg("~")
            .arg(self.inner.min_id());
        let reply = self.inner.query(Request::Cmd(&cmd)).await?;
        let removed: i64 = redis::from_redis_value(reply).map_err(LogError::from)?;
        Ok(usize::try_from(removed).unwrap_or(0))
    }
}

impl Inner {
    async fn connect(&self) -> Result<MultiplexedConnection, LogError> {
        // Our own timeouts wrap every command; the client's would cut blocking reads short.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        self.endpoint.connect(&config).await
    }

    /// Whether the log can be followed on from `after`. Trimming removes the oldest
    /// entries, so if `after` itself is still there nothing after it is gone; if it is
    /// not, it was trimmed (and perhaps entries after it) or never was in this log.
    async fn check_position(&self, after: Position) -> Result<Result<(), PositionError>, LogError> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("STREAM").arg(&self.stream);
        let fields: std::collections::HashMap<String, Value> =
            match self.query(Request::Cmd(&cmd)).await {
                Ok(reply) => redis::from_redis_value(reply)?,
                Err(LogError::Redis(error)) if error.to_string().contains("no such key") => {
                    std::collections::HashMap::new()
                }
                Err(error) => return Err(error),
            };
        let number = |name: &str| {
            fields
                .get(name)
                .and_then(|value| redis::from_redis_value::<u64>(value.clone()).ok())
                .unwrap_or(0)
        };
        let last = fields
            .get("last-generated-id")
            .and_then(|value| redis::from_redis_value::<String>(value.clone()).ok())
            .and_then(|id| parse_id(&id))
            .unwrap_or(0);
        if after > last {
            return Ok(Err(PositionError::Unknown));
        }
        if after == 0 {
            let trimmed = number("entries-added") > number("length");
            return Ok(if trimmed {
                Err(PositionError::Trimmed)
            } else {
                Ok(())
            });
        }
        let mut cmd = redis::cmd("XRANGE");
        let id = format_id(after);
        cmd.arg(&self.stream).arg(&id).arg(&id);
        if parse_entries(self.query(Request::Cmd(&cmd)).await?)?.read > 0 {
            return Ok(Ok(()));
        }
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.stream).arg("-").arg("+").arg("COUNT").arg(1);
        let first = parse_entries(self.query(Request::Cmd(&cmd)).await?)?.entries;
        Ok(match first.first() {
            Some(first) if first.position < after => Err(PositionError::Unknown),
            _ => Err(PositionError::Trimmed),
        })
    }

    /// Runs one request on the shared connection, with the configured timeout.
    async fn query(&self, request: Request<'_>) -> Result<Value, LogError> {
        self.query_on(&self.connection, request).await
    }

    /// Runs one request on the connection in `slot`, with the configured timeout. A
    /// failed request drops the connection so the next one reconnects.
    async fn query_on(
        &self,
        slot: &Mutex<Option<MultiplexedConnection>>,
        request: Request<'_>,
    ) -> Result<Value, LogError> {
        let result = tokio::time::timeout(self.timeout, async {
            // The multiplexed connection pipelines concurrent requests: hold the lock only
            // to get (or make) it, never for a round trip.
            let mut connection = {
                let mut slot = slot.lock().await;
                match slot.as_ref() {
                    Some(connection) => connection.clone(),
                    None => {
                        let connection = self.connect().await?;
                        *slot = Some(connection.clone());
                        connection
                    }
                }
            };
            match request {
                Request::Cmd(cmd) => cmd.query_async::<Value>(&mut connection).await,
                Request::Pipe(pipe) => pipe.query_async::<Value>(&mut connection).await,
            }
            .map_err(LogError::from)
        })
        .await
        .unwrap_or(Err(LogError::Timeout(self.timeout)));
        if result.is_err() {
            self.applier.note_error();
            *slot.lock().await = None;
        } else {
            self.applier.note_contact();
        }
        result
    }

    /// Up to `limit` entries after the stream ID `after` (`-`: from the start).
    async fn range(&self, after: &str, limit: usize) -> Result<Batch, LogError> {
        let start = if after == format_id(0) {
            "-".to_owned()
        } else {
            format!("({after}")
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        parse_entries(self.query(Request::Cmd(&cmd)).await?)
    }

    /// Applies what `batch` read, and moves `cursor` past all of it, entries whose ID
    /// has no position here included (counted as skipped).
    fn absorb(&self, batch: Batch, cursor: &mut String) {
        for entry in batch.entries {
            self.applier.apply(entry);
        }
        if batch.unplaced > 0 {
            self.applier.note_skipped(batch.unplaced);
        }
        if let Some(last) = batch.last_id {
            *cursor = last;
        }
    }

    fn snapshot_key(&self) -> String {
        format!("{}:subject-claims", self.stream)
    }

    /// Loads every subject's latest claims from the snapshot hash, in pages. Replaying
    /// the stream afterwards (any suffix of it) ends in the same state, so trimmed
    /// entries are not missed.
    async fn load_snapshot(&self) -> Result<(), LogError> {
        let mut subjects = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let mut cmd = redis::cmd("HSCAN");
            cmd.arg(self.snapshot_key())
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000);
            let reply = self.query(Request::Cmd(&cmd)).await?;
            let (next, entries): HashScanPage =
                redis::from_redis_value(reply).map_err(LogError::from)?;
            for (field, claims) in entries {
                match (
                    serde_json::from_slice::<(String, String)>(&field),
                    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&claims),
                ) {
                    (Ok((iss, sub)), Ok(claims)) => subjects.push((iss, sub, claims)),
                    _ => tracing::warn!("skipped an unreadable subject-claims snapshot entry"),
                }
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        self.applier.subjects.replace_all(subjects);
        Ok(())
    }

    /// Whether entries after `applied` may have been trimmed away.
    async fn trimmed_past(&self, applied: Position) -> Result<bool, LogError> {
        Ok(self.check_position(applied).await?.is_err())
    }

    /// The oldest ID kept: entries older than the retention may be trimmed.
    fn min_id(&self) -> String {
        let now_ms = u64::try_from(crate::unix_now()).unwrap_or(0) * 1000;
        let retention_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        format!("{}-0", now_ms.saturating_sub(retention_ms))
    }
}

/// Follows the stream until the task is stopped: catch up with XRANGE, then block on
/// XREAD; on any error back off, reconnect and resume from the last applied position.
async fn tail(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Err(error) = follow(&inner).await {
            inner.applier.note_error();
            tracing::warn!(%error, applied = inner.applier.applied(), retry_in = ?backoff, "state log tail interrupted");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn follow(inner: &Inner) -> Result<(), LogError> {
    // A connection of its own: a blocking XREAD would stall appends sharing it.
    let mut connection = tokio::time::timeout(inner.timeout, inner.connect())
        .await
        .unwrap_or(Err(LogError::Timeout(inner.timeout)))?;
    // First start, or back after so long that the stream was trimmed past us: the
    // subject-claims snapshot covers what the stream no longer has.
    let applied = inner.applier.applied();
    if applied == 0 || inner.trimmed_past(applied).await? {
        inner.load_snapshot().await?;
    }
    // The stream ID read up to: an entry written with an ID that has no position here
    // is passed over, never read again and again.
    let mut cursor = format_id(inner.applier.applied());
    loop {
        let batch = inner.range(&cursor, BATCH).await?;
        let full = batch.read == BATCH;
        inner.absorb(batch, &mut cursor);
        if !full {
            break;
        }
    }
    if !inner.applier.revocations.is_complete() {
        tracing::info!(
            applied = inner.applier.applied(),
            "state log caught up with Redis"
        );
        inner.applier.mark_caught_up();
    }
    loop {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(2000))
            .arg("STREAMS")
            .arg(&inner.stream)
            .arg(&cursor);
        let reply = tokio::time::timeout(
            BLOCK + inner.timeout,
            cmd.query_async::<Value>(&mut connection),
        )
        .await
        .map_err(|_| LogError::Timeout(inner.timeout + BLOCK))?
        .map_err(LogError::from)?;
        inner.applier.note_contact();
        let Value::Array(streams) = reply else {
            continue; // Nil: nothing new within BLOCK.
        };
        for stream in streams {
            if let Value::Array(mut pair) = stream
                && pair.len() == 2
            {
                inner.absorb(parse_entries(pair.remove(1))?, &mut cursor);
            }
        }
    }
}

/// The CA certificate Redis's is checked against (`store.redis_ca_file`).
pub fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, LogError> {
    crate::tls::read_trust_anchors(path).map_err(|source| LogError::CaFile {
        path: path.to_owned(),
        source,
    })
}

/// One HSCAN answer: the next cursor, and (field, value) pairs.
type HashScanPage = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// One command, or several in a MULTI/EXEC transaction.
#[derive(Clone, Copy)]
enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

fn snapshot_field(iss: &str, sub: &str) -> Vec<u8> {
    serde_json::to_vec(&(iss, sub)).unwrap_or_default()
}

fn parse_id(id: &str) -> Option<Position> {
    let (ms, seq) = id.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    (seq < (1 << SEQ_BITS) && ms < (1 << (64 - SEQ_BITS))).then_some((ms << SEQ_BITS) | seq)
}

fn format_id(position: Position) -> String {
    format!(
        "{}-{}",
        position >> SEQ_BITS,
        position & ((1 << SEQ_BITS) - 1)
    )
}

/// What one read of the stream gave.
#[derive(Debug, Default)]
struct Batch {
    entries: Vec<LogEntry>,
    /// Entries read, placed or not.
    read: usize,
    /// Entries whose ID has no position here (written by something else, with an
    /// explicit ID past what a position holds): skipped.
    unplaced: u64,
    /// The ID of the last entry read.
    last_id: Option<String>,
}

/// `[[id, [field, value, ...]], ...]` into entries.
fn parse_entries(reply: Value) -> Result<Batch, LogError> {
    let corrupt = LogError::Reply;
    let Value::Array(items) = reply else {
        return Ok(Batch::default());
    };
    let mut batch = Batch {
        entries: Vec::with_capacity(items.len()),
        ..Batch::default()
    };
    for item in items {
        let Value::Array(mut parts) = item else {
            return Err(corrupt("entry is not an array"));
        };
        if parts.len() != 2 {
            return Err(corrupt("entry is not [id, fields]"));
        }
        let fields = parts.remove(1);
        let id: String = redis::from_redis_value(parts.remove(0)).map_err(|_| corrupt("id"))?;
        batch.read += 1;
        let position = parse_id(&id);
        batch.last_id = Some(id);
        let Some(position) = position else {
            batch.unplaced += 1;
            continue;
        };
        let Value::Array(fields) = fields else {
            return Err(corrupt("fields are not an array"));
        };
        let mut payload = None;
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            let name: String = redis::from_redis_value(name).map_err(|_| corrupt("field name"))?;
            if name == FIELD {
                payload = Some(
                    redis::from_redis_value::<Vec<u8>>(value)
                        .map_err(|_| corrupt("field value"))?,
                );
            }
        }
        // An entry without a change (written by something else) is skipped, and counted,
        // rather than stopping every entry after it.
        let change = payload.map_or(Change::Unknown, |payload| decode(&payload));
        batch.entries.push(LogEntry { position, change });
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip_in_order() {
        let a = parse_id("1700000000000-0");
        let b = parse_id("1700000000000-1");
        let c = parse_id("1700000000001-0");
        assert!(a < b && b < c);
        assert_eq!(b.map(format_id).as_deref(), Some("1700000000000-1"));
        assert_eq!(parse_id("nonsense"), None);
        assert_eq!(parse_id("1-99999999"), None);
    }
}
