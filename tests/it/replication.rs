//! Several replicas sharing revocations through a real Redis; no acknowledged revocation
//! lost when a replica is killed with SIGKILL (embedded and Redis backends).

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use introspectd::{
    config::{IssuerSection, StoreBackend, StoreSection},
    grpc::pb::{
        self, InactiveReason, check_revocation_request::Subject, revoke_request::Target,
        token_revocation_client::TokenRevocationClient,
    },
    token::sign::SigningKey,
};
use jsonwebtoken::Algorithm;
use tonic::Code;

use crate::redis_server::{RedisServer, Sentinel, redis_available};
use crate::support::*;

const ISS: &str = "https://replicated.test/";

fn issuer(signer: &SigningKey) -> IssuerSection {
    IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[signer]).to_string()),
        ..issuer_section(ISS, "http://unused", &["ES256"])
    }
}

fn redis_store(redis: &RedisServer, stream: &str) -> StoreSection {
    StoreSection {
        backend: StoreBackend::Redis,
        redis_url: Some(redis.url()),
        redis_stream: stream.into(),
        redis_timeout_ms: 500,
        ..StoreSection::default()
    }
}

async fn replica(signer: &SigningKey, store: StoreSection) -> Introspectd {
    let mut file = file_config(vec![issuer(signer)]);
    file.store = store;
    Introspectd::start_ready(file).await
}

fn jti(n: usize) -> Target {
    Target::Jti(pb::JtiTarget {
        iss: ISS.into(),
        jti: format!("jti-{n}"),
        exp: None,
    })
}

async fn is_revoked(
    client: &mut TokenRevocationClient<tonic::transport::Channel>,
    n: usize,
) -> bool {
    let identity = pb::TokenIdentity {
        iss: ISS.into(),
        jti: Some(format!("jti-{n}")),
        ..Default::default()
    };
    let request = with_key(
        READER_KEY,
        pb::CheckRevocationRequest {
            subject: Some(Subject::Identity(identity)),
        },
    );
    client
        .check_revocation(request)
        .await
        .is_ok_and(|r| r.into_inner().revoked)
}

#[tokio::test]
async fn revoke_on_one_replica_is_refused_on_the_others() -> TestResult {
    if !redis_available("revoke_on_one_replica_is_refused_on_the_others") {
        return Ok(());
    }
    let redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, redis_store(&redis, "fanout")).await;
    let b = replica(&signer, redis_store(&redis, "fanout")).await;
    let c = replica(&signer, redis_store(&redis, "fanout")).await;

    let token = mint(&signer, &claims(ISS));
    for r in [&a, &b, &c] {
        assert!(r.introspect(&token).await.active, "cached everywhere first");
    }
    a.revoke(Target::Token(pb::TokenTarget {
        token: token.clone(),
        token_type_hint: None,
    }))
    .await;
    assert_eq!(
        reason(&a.introspect(&token).await),
        InactiveReason::Revoked,
        "read your own write"
    );
    for r in [&b, &c] {
        eventually("the revocation to reach every replica", || async {
            reason(&r.introspect(&token).await) == InactiveReason::Revoked
        })
        .await;
    }

    // Cut-offs replicate too, and spare tokens issued after them.
    let t = now();
    let mut old = claims(ISS);
    old["sub"] = serde_json::json!("carol");
    old["iat"] = serde_json::json!(t - 60);
    let mut new = old.clone();
    new["iat"] = serde_json::json!(t + 1);
    b.revoke(Target::Subject(pb::CutoffTarget {
        iss: ISS.into(),
        value: "carol".into(),
        before: Some(t),
    }))
    .await;
    eventually("the cut-off on C", || async {
        reason(&c.introspect(&mint(&signer, &old)).await) == InactiveReason::Revoked
    })
    .await;
    assert!(c.introspect(&mint(&signer, &new)).await.active);

    // A replica started later catches up before it reports ready.
    let late = replica(&signer, redis_store(&redis, "fanout")).await;
    assert_eq!(
        reason(&late.introspect(&token).await),
        InactiveReason::Revoked
    );
    Ok(())
}

#[tokio::test]
async fn redis_down_fails_writes_keeps_answers_and_recovers() -> TestResult {
    if !redis_available("redis_down_fails_writes_keeps_answers_and_recovers") {
        return Ok(());
    }
    let mut redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, redis_store(&redis, "outage")).await;
    let b = replica(&signer, redis_store(&redis, "outage")).await;
    let revoked = mint(&signer, &claims(ISS));
    let good = mint(&signer, &claims(ISS));
    a.revoke(Target::Token(pb::TokenTarget {
        token: revoked.clone(),
        token_type_hint: None,
    }))
    .await;
    eventually("B to apply", || async {
        reason(&b.introspect(&revoked).await) == InactiveReason::Revoked
    })
    .await;

    assert!(a.metric("introspectd_statelog_lag_seconds").await <= 1.0);
    let errors_before = a.metric("introspectd_statelog_errors_total").await;
    redis.kill();
    let mut client = a.revocation().await;
    let refused = client
        .revoke(with_key(
            ADMIN_KEY,
            pb::RevokeRequest {
                target: Some(jti(1)),
                reason: String::new(),
            },
        ))
        .await;
    assert_eq!(refused.err().map(|e| e.code()), Some(Code::Unavailable));
    // Nothing half-applied: the refused revocation is nowhere.
    assert!(!is_revoked(&mut client, 1).await);
    // Introspection keeps answering from memory.
    for r in [&a, &b] {
        assert_eq!(
            reason(&r.introspect(&revoked).await),
            InactiveReason::Revoked
        );
        assert!(r.introspect(&good).await.active);
    }
    // What the alerts watch: errors counted, and the lag growing while Redis is away.
    a.wait_for_metric_above("introspectd_statelog_errors_total", errors_before)
        .await;
    a.wait_for_metric_above("introspectd_statelog_lag_seconds", 1.0)
        .await;

    redis.restart();
    eventually("writes to work again", || async {
        let mut client = a.revocation().await;
        client
            .revoke(with_key(
                ADMIN_KEY,
                pb::RevokeRequest {
                    target: Some(jti(2)),
                    reason: String::new(),
                },
            ))
            .await
            .is_ok()
    })
    .await;
    eventually("the lag to fall back once Redis answers", || async {
        a.metric("introspectd_statelog_lag_seconds").await <= 1.0
    })
    .await;
    let mut on_b = b.revocation().await;
    eventually("B to catch up without a restart", || {
        let mut on_b = on_b.clone();
        async move { is_revoked(&mut on_b, 2).await }
    })
    .await;
    // What Redis persisted before the outage is still there for a new replica.
    let late = replica(&signer, redis_store(&redis, "outage")).await;
    assert_eq!(
        reason(&late.introspect(&revoked).await),
        InactiveReason::Revoked
    );
    assert!(is_revoked(&mut on_b, 2).await);
    Ok(())
}

// === kill -9 ===

async fn revocation_client(process: &Process) -> TokenRevocationClient<tonic::transport::Channel> {
    match TokenRevocationClient::connect(format!("http://{}", process.grpc)).await {
        Ok(client) => client,
        Err(e) => unreachable!("connect: {e}"),
    }
}

/// Streams revocations at a process, SIGKILLs it mid-stream, restarts it, and checks
/// that every acknowledged revocation is there.
async fn no_acknowledged_revocation_lost(store: StoreSection) -> TestResult {
    let dir = tempfile::tempdir()?;
    let signer = key(Algorithm::ES256, "es");
    let config = write_config(dir.path(), vec![issuer(&signer)], |file| {
        file.store = store.clone()
    });
    let mut process = spawn_serve(&config, Stdio::null).await;

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let acknowledged = acknowledged.clone();
        let mut client = revocation_client(&process).await;
        tokio::spawn(async move {
            for n in 0.. {
                let request = with_key(
                    ADMIN_KEY,
                    pb::RevokeRequest {
                        target: Some(jti(n)),
                        reason: String::new(),
                    },
                );
                if client.revoke(request).await.is_err() {
                    break;
                }
                acknowledged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(n);
            }
        })
    };
    eventually("some revocations acknowledged", || async {
        acknowledged.lock().unwrap_or_else(|e| e.into_inner()).len() >= 40
    })
    .await;
    process.child.kill()?; // SIGKILL
    process.child.wait()?;
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    drop(process);

    let restarted = spawn_serve(&config, Stdio::null).await;
    let mut client = revocation_client(&restarted).await;
    for n in &acknowledged {
        assert!(
            is_revoked(&mut client, *n).await,
            "acknowledged revocation jti-{n} lost ({} acknowledged)",
            acknowledged.len()
        );
    }
    let _ = restarted.http;
    Ok(())
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_revocation_embedded() -> TestResult {
    let dir = tempfile::tempdir()?;
    no_acknowledged_revocation_lost(StoreSection {
        backend: StoreBackend::Embedded,
        path: dir.path().join("state.redb"),
        ..StoreSection::default()
    })
    .await
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_revocation_redis() -> TestResult {
    if !redis_available("kill_9_loses_no_acknowledged_revocation_redis") {
        return Ok(());
    }
    let redis = RedisServer::start();
    no_acknowledged_revocation_lost(redis_store(&redis, "kill9")).await
}

/// Introspect's gRPC code and whether the answer was active.
async fn introspect_code(server: &Introspectd, token: &str) -> (Code, bool) {
    let answer = server
        .client()
        .await
        .introspect(pb::IntrospectRequest {
            token: token.into(),
            ..Default::default()
        })
        .await;
    match answer {
        Ok(response) => (Code::Ok, response.into_inner().active),
        Err(status) => (status.code(), false),
    }
}

#[tokio::test]
async fn a_fresh_replica_answers_nothing_while_redis_is_down() -> TestResult {
    if !redis_available("a_fresh_replica_answers_nothing_while_redis_is_down") {
        return Ok(());
    }
    let mut redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, redis_store(&redis, "fresh")).await;
    let mut revoked = claims(ISS);
    revoked["jti"] = serde_json::json!("jti-0");
    let token = mint(&signer, &revoked);
    a.revoke(jti(0)).await;
    redis.kill();

    // B starts while Redis is down: it must not call the revoked token active.
    let mut file = file_config(vec![issuer(&signer)]);
    file.store = redis_store(&redis, "fresh");
    let b = Introspectd::start(file).await;
    let mut check = b.revocation().await;
    for _ in 0..10 {
        assert_eq!(
            introspect_code(&b, &token).await,
            (Code::Unavailable, false)
        );
        let asked = check
            .check_revocation(with_key(
                READER_KEY,
                pb::CheckRevocationRequest {
                    subject: Some(Subject::Token(token.clone())),
                },
            ))
            .await;
        assert_eq!(asked.err().map(|s| s.code()), Some(Code::Unavailable));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.restart();
    b.wait_for_health(
        "",
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
    let answer = b.introspect(&token).await;
    assert_eq!(reason(&answer), InactiveReason::Revoked, "{answer:?}");
    Ok(())
}

#[tokio::test]
async fn a_replica_replaying_a_long_stream_never_calls_a_revoked_token_active() -> TestResult {
    if !redis_available("a_replica_replaying_a_long_stream_never_calls_a_revoked_token_active") {
        return Ok(());
    }
    let redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    // 300,000 older revocations, then the one that matters, at the end of the stream.
    let client = redis::Client::open(redis.url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let forget_after = now() + 3600;
    for batch in 0..300 {
        let mut pipe = redis::pipe();
        for n in 0..1000 {
            let change = serde_json::json!({"change": "revoke", "record": {"kind": "jti",
                "iss": ISS, "jti": format!("old-{batch}-{n}")}, "forget_after": forget_after,
                "revoked_at": now()});
            pipe.cmd("XADD")
                .arg("long")
                .arg("*")
                .arg("c")
                .arg(change.to_string())
                .ignore();
        }
        pipe.query_async::<()>(&mut connection).await?;
    }
    let a = replica(&signer, redis_store(&redis, "long")).await;
    let mut revoked = claims(ISS);
    revoked["jti"] = serde_json::json!("jti-1");
    let token = mint(&signer, &revoked);
    a.revoke(jti(1)).await;

    let mut file = file_config(vec![issuer(&signer)]);
    file.store = redis_store(&redis, "long");
    let b = Introspectd::start(file).await;
    let mut unavailable = 0;
    loop {
        match introspect_code(&b, &token).await {
            (Code::Unavailable, _) => unavailable += 1,
            (Code::Ok, active) => {
                assert!(!active, "a revoked token was active during replay");
                break;
            }
            (other, _) => unreachable!("unexpected {other:?}"),
        }
    }
    assert!(unavailable > 0, "the replay was over before the first call");
    assert_eq!(reason(&b.introspect(&token).await), InactiveReason::Revoked);
    Ok(())
}

async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap_or_else(|e| unreachable!("{e}"));
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| unreachable!("{e}"))
}

#[tokio::test]
async fn an_unreadable_entry_is_skipped_and_a_write_is_applied_before_its_answer() -> TestResult {
    if !redis_available("an_unreadable_entry_is_skipped_and_a_write_is_applied_before_its_answer") {
        return Ok(());
    }
    let redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, redis_store(&redis, "junk")).await;
    let b = replica(&signer, redis_store(&redis, "junk")).await;
    // Something else writes an entry without our field into the stream.
    let mut connection = redis_connection(&redis).await;
    let id = redis::cmd("XADD")
        .arg("junk")
        .arg("*")
        .arg("other")
        .arg("field")
        .query_async::<String>(&mut connection)
        .await?;
    // And one with an explicit ID whose sequence is past what a position holds.
    let ms = id.split('-').next().unwrap_or_default();
    redis::cmd("XADD")
        .arg("junk")
        .arg(format!("{ms}-1048576"))
        .arg("c")
        .arg("x")
        .query_async::<String>(&mut connection)
        .await?;
    let mut revoked = claims(ISS);
    revoked["jti"] = serde_json::json!("jti-7");
    let token = mint(&signer, &revoked);
    a.revoke(jti(7)).await;
    // The writer answers with it at once...
    assert_eq!(reason(&a.introspect(&token).await), InactiveReason::Revoked);
    // ...and the other replica's tailer gets past the junk to it.
    eventually("B to apply the revocation", || async {
        is_revoked(&mut b.revocation().await, 7).await
    })
    .await;
    b.wait_for_metric_above("introspectd_statelog_skipped_total", 1.0)
        .await;
    // A replica that starts now reads past both as well.
    let c = replica(&signer, redis_store(&redis, "junk")).await;
    assert!(is_revoked(&mut c.revocation().await, 7).await);
    Ok(())
}

#[tokio::test]
async fn a_write_no_redis_replica_confirms_is_unavailable_and_safe_to_retry() -> TestResult {
    if !redis_available("a_write_no_redis_replica_confirms_is_unavailable_and_safe_to_retry") {
        return Ok(());
    }
    let redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let store = StoreSection {
        redis_wait_replicas: 1,
        ..redis_store(&redis, "wait")
    };
    let server = replica(&signer, store).await;
    let mut client = server.revocation().await;
    for _ in 0..2 {
        let request = with_key(
            ADMIN_KEY,
            pb::RevokeRequest {
                target: Some(jti(3)),
                reason: String::new(),
            },
        );
        let answer = client.revoke(request).await;
        assert_eq!(answer.err().map(|s| s.code()), Some(Code::Unavailable));
    }
    // The outcome was unknown, not nothing: the master kept it, once per try, and the
    // record is the same record.
    assert!(is_revoked(&mut client, 3).await);
    let mut connection = redis_connection(&redis).await;
    let length: u64 = redis::cmd("XLEN")
        .arg("wait")
        .query_async(&mut connection)
        .await?;
    assert_eq!(length, 2);
    Ok(())
}

#[tokio::test]
async fn watching_from_a_trimmed_or_foreign_position_is_out_of_range() -> TestResult {
    if !redis_available("watching_from_a_trimmed_or_foreign_position_is_out_of_range") {
        return Ok(());
    }
    let redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let server = replica(&signer, redis_store(&redis, "trimmed")).await;
    server.revoke(jti(1)).await;
    let mut client = server.revocation().await;
    let watch = |after: Option<String>| with_key(ADMIN_KEY, pb::WatchRevocationsRequest { after });
    let mut stream = client.watch_revocations(watch(None)).await?.into_inner();
    let mut position = String::new();
    while let Some(event) = stream.message().await? {
        position = event.position;
        if event.caught_up {
            break;
        }
    }
    drop(stream);
    assert!(
        client
            .watch_revocations(watch(Some(position.clone())))
            .await
            .is_ok()
    );

    let foreign = (u64::MAX >> 1).to_string();
    let refused = client.watch_revocations(watch(Some(foreign))).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::OutOfRange));

    server.revoke(jti(2)).await;
    let mut connection = redis_connection(&redis).await;
    redis::cmd("XTRIM")
        .arg("trimmed")
        .arg("MAXLEN")
        .arg(0)
        .query_async::<u64>(&mut connection)
        .await?;
    let refused = client.watch_revocations(watch(Some(position))).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::OutOfRange));
    // Starting over from the live set still works.
    assert!(client.watch_revocations(watch(None)).await.is_ok());
    Ok(())
}

/// Three sentinels watching `master`, once they see its `replicas` replicas and each
/// other, and a Redis store that finds the master through them.
async fn sentinels_of(master: &RedisServer, replicas: usize) -> (Vec<Sentinel>, StoreSection) {
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(master)).collect();
    eventually(
        "the sentinels to see the replicas and each other",
        || async {
            sentinels
                .iter()
                .all(|sentinel| sentinel.knows_replicas(replicas))
        },
    )
    .await;
    let url = format!(
        "redis+sentinel://{}/mymaster",
        sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let store = StoreSection {
        backend: StoreBackend::Redis,
        redis_url: Some(url),
        ..StoreSection::default()
    };
    (sentinels, store)
}

#[tokio::test]
async fn a_sentinel_failover_loses_no_revocation_acknowledged_with_wait() -> TestResult {
    if !redis_available("a_sentinel_failover_loses_no_revocation_acknowledged_with_wait") {
        return Ok(());
    }
    let mut master = RedisServer::start();
    let redis_replica = RedisServer::start_replica_of(&master);
    let (sentinels, store) = sentinels_of(&master, 1).await;
    let store = StoreSection {
        redis_stream: "failover".into(),
        redis_timeout_ms: 500,
        redis_wait_replicas: 1,
        ..store
    };
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, store.clone()).await;

    // A writer that records what was acknowledged; the master dies under it.
    let writer = Writer::start(&a).await;
    writer.wait_for(20).await;
    master.kill();
    let promoted = redis_replica.port;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sentinels[0].master_port() != Some(promoted) {
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acknowledged = writer.stop().await?;

    // A replica that starts now reads everything from the promoted master.
    assert!(acknowledged.len() >= 20);
    a_fresh_replica_has_every(&signer, store, acknowledged).await;
    Ok(())
}

/// A replica started now on `store` has every `acknowledged` revocation.
async fn a_fresh_replica_has_every(
    signer: &SigningKey,
    store: StoreSection,
    acknowledged: Vec<usize>,
) {
    let fresh = replica(signer, store).await;
    let mut client = fresh.revocation().await;
    for n in acknowledged {
        assert!(
            is_revoked(&mut client, n).await,
            "acknowledged jti-{n} was lost"
        );
    }
}

/// Revokes jti-0, jti-1, ... one after another until stopped, remembering which
/// revocations were acknowledged.
struct Writer {
    acknowledged: Arc<Mutex<Vec<usize>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(server: &Introspectd) -> Self {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut client = server.revocation().await;
        let (written, stopped) = (acknowledged.clone(), stop.clone());
        let task = tokio::spawn(async move {
            for n in 0..10_000 {
                if stopped.is_cancelled() {
                    break;
                }
                let request = with_key(
                    ADMIN_KEY,
                    pb::RevokeRequest {
                        target: Some(jti(n)),
                        reason: String::new(),
                    },
                );
                if client.revoke(request).await.is_ok() {
                    written.lock().unwrap_or_else(|e| e.into_inner()).push(n);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            acknowledged,
            stop,
            task,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    async fn wait_for(&self, count: usize) {
        eventually(&format!("{count} acknowledged writes"), || async {
            self.count() >= count
        })
        .await;
    }

    /// Stops writing; what was acknowledged.
    async fn stop(self) -> Result<Vec<usize>, tokio::task::JoinError> {
        self.stop.cancel();
        self.task.await?;
        Ok(self
            .acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}

#[tokio::test]
async fn redis_killed_under_writes_keeps_every_acknowledged_revocation() -> TestResult {
    if !redis_available("redis_killed_under_writes_keeps_every_acknowledged_revocation") {
        return Ok(());
    }
    let mut redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, redis_store(&redis, "killed")).await;
    let writer = Writer::start(&a).await;
    writer.wait_for(30).await;
    redis.kill();
    let before_restart = writer.count();
    redis.restart();
    writer.wait_for(before_restart + 10).await;
    let acknowledged = writer.stop().await?;
    a_fresh_replica_has_every(&signer, redis_store(&redis, "killed"), acknowledged).await;
    Ok(())
}

/// `rediss://`: the store speaks TLS to a real redis-server, whose certificate is
/// checked against `store.redis_ca_file`; with the system's roots instead (which do not
/// have that CA) the replica never connects, so it never becomes ready.
#[tokio::test]
async fn the_store_speaks_tls_to_redis() -> TestResult {
    if !redis_available("the_store_speaks_tls_to_redis") {
        return Ok(());
    }
    let pki = crate::tls::Pki::new("redis CA");
    let leaf = pki.leaf(&["localhost"], &[]);
    let dir = tempfile::tempdir()?;
    let file = |name: &str, text: &str| -> std::io::Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let (cert, private_key, ca) = (
        file("redis.crt", &leaf.cert_pem)?,
        file("redis.key", &leaf.key_pem)?,
        file("ca.pem", &pki.ca_pem())?,
    );
    let tls_port = crate::redis_server::free_port();
    let redis = RedisServer::start_with(
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &private_key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    let store = StoreSection {
        backend: StoreBackend::Redis,
        redis_url: Some(format!("rediss://127.0.0.1:{tls_port}")),
        redis_stream: "over-tls".into(),
        redis_timeout_ms: 500,
        redis_ca_file: Some(ca.clone().into()),
        ..StoreSection::default()
    };
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, store.clone()).await;
    a.revoke(jti(1)).await;
    assert!(is_revoked(&mut a.revocation().await, 1).await);
    // It went over TLS into this Redis (read back on its plain port).
    assert!(
        crate::redis_server::command(redis.port, "XLEN over-tls").starts_with(":1"),
        "the stream has the revocation"
    );

    let mut untrusting = file_config(vec![issuer(&signer)]);
    untrusting.store = StoreSection {
        redis_ca_file: None,
        ..store
    };
    let b = Introspectd::start(untrusting).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        b.health("").await,
        tonic_health::pb::health_check_response::ServingStatus::NotServing,
        "a certificate the roots do not vouch for is refused"
    );
    Ok(())
}

/// The README's Redis ACL: a user allowed the stream and its subject-claims key, and
/// the stream, hash and transaction commands, is all a replica needs.
#[tokio::test]
async fn the_readme_redis_acl_is_enough() -> TestResult {
    if !redis_available("the_readme_redis_acl_is_enough") {
        return Ok(());
    }
    let redis = RedisServer::start();
    let set = crate::redis_server::command(
        redis.port,
        "ACL SETUSER introspectd on >secret ~introspectd:state ~introspectd:state:subject-claims +@stream +@hash +multi +exec +wait +ping",
    );
    assert!(set.starts_with("+OK"), "{set}");
    let store = StoreSection {
        redis_url: Some(format!(
            "redis://introspectd:secret@127.0.0.1:{}",
            redis.port
        )),
        // The default stream, the key the ACL names.
        ..redis_store(&redis, &StoreSection::default().redis_stream)
    };
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, store.clone()).await;
    a.revoke(jti(1)).await;
    let b = replica(&signer, store).await;
    assert!(is_revoked(&mut b.revocation().await, 1).await);
    Ok(())
}

/// The README's Sentinel advice: with `redis_wait_replicas` at the number of Redis
/// replicas, a planned failover (`SENTINEL FAILOVER`, during which the old master still
/// takes writes) loses no acknowledged revocation; with fewer, an outside test lost
/// some, as Redis's `WAIT` documentation warns.
#[tokio::test]
async fn a_planned_sentinel_failover_loses_nothing_every_replica_acknowledged() -> TestResult {
    if !redis_available("a_planned_sentinel_failover_loses_nothing_every_replica_acknowledged") {
        return Ok(());
    }
    let master = RedisServer::start();
    let replicas = [
        RedisServer::start_replica_of(&master),
        RedisServer::start_replica_of(&master),
    ];
    let (sentinels, store) = sentinels_of(&master, 2).await;
    let store = StoreSection {
        redis_stream: "planned".into(),
        redis_timeout_ms: 1000,
        redis_wait_replicas: 2,
        ..store
    };
    let signer = key(Algorithm::ES256, "es");
    let a = replica(&signer, store.clone()).await;
    let writer = Writer::start(&a).await;
    writer.wait_for(20).await;
    let reply = crate::redis_server::command(sentinels[0].port, "SENTINEL FAILOVER mymaster");
    assert!(reply.starts_with("+OK"), "{reply}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sentinels[0].master_port() == Some(master.port) {
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes go on once both replicas follow the new master.
    let promoted = sentinels[0].master_port();
    assert!(replicas.iter().any(|r| Some(r.port) == promoted));
    let before = writer.count();
    // Sentinel re-points the replicas one at a time: this took about 20 s here.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while writer.count() < before + 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write since the failover: {}",
            crate::redis_server::command(promoted.unwrap_or_default(), "INFO replication")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acknowledged = writer.stop().await?;
    a_fresh_replica_has_every(&signer, store, acknowledged).await;
    Ok(())
}
