//! Revocation figures: lookup cost and memory per record with 10 million records,
//! sustained Revoke throughput and restart time of the embedded store with 1 million
//! records, and Revoke→refusal propagation between two replicas through Redis.
//!
//! `cargo bench --bench revocation` (release build; needs redis-server on PATH for the
//! propagation figures, which are skipped without it). Sizes can be lowered with
//! `REVOCATION_BENCH_RECORDS` and `REVOCATION_BENCH_LOG_RECORDS`.

use std::{
    hint::black_box,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use introspectd::tasks::Tasks;
use introspectd::{
    enrich::SubjectClaims,
    revocation::{Record, Revocation, RevocationSet, TokenIdentity, TokenKeys},
    statelog::{Applier, Change, RedisSpec, StateLog, StoreSpec},
};

mod common;

use common::rss_bytes;

const ISS: &str = "https://bench.test/";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn jti_revocation(n: usize, forget_after: i64) -> Revocation {
    Revocation {
        record: Record::Jti {
            iss: ISS.into(),
            jti: format!("jti-{n:012}"),
        },
        forget_after,
        revoked_at: 0,
        reason: String::new(),
    }
}

fn keys_for(n: usize) -> TokenKeys {
    let jti = format!("jti-{n:012}");
    TokenKeys::of(&TokenIdentity {
        iss: ISS,
        jti: Some(&jti),
        sub: Some("user"),
        client_id: Some("client"),
        ..TokenIdentity::default()
    })
}

fn set_lookup(records: usize) {
    let before = rss_bytes();
    let set = RevocationSet::new();
    set.mark_complete();
    for n in 0..records {
        set.apply(&jti_revocation(n, i64::MAX));
    }
    let per_record = (rss_bytes().saturating_sub(before)) as f64 / records as f64;
    // Keys computed beforehand: on the hot path they are cached with the token.
    let probes = 1_000_000.min(records);
    let hits: Vec<TokenKeys> = (0..probes)
        .map(|i| keys_for((i * 7919) % records))
        .collect();
    let misses: Vec<TokenKeys> = (0..probes).map(|i| keys_for(records + i)).collect();
    for (name, probes) in [
        ("hit (jti revoked)", &hits),
        ("miss (all five keys checked)", &misses),
    ] {
        let start = Instant::now();
        let mut found = 0usize;
        for keys in probes {
            found += usize::from(matches!(set.check(black_box(keys)), Ok(Some(_))));
        }
        let ns = start.elapsed().as_nanos() as f64 / probes.len() as f64;
        println!("set lookup, {records} records, {name}: {ns:.0} ns/lookup ({found} matched)");
    }
    println!("set memory: {per_record:.0} bytes/record (RSS growth / {records} records)");
}

async fn embedded_throughput_and_restart(records: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let config = StoreSpec::Embedded {
        path: dir.path().join("state.redb"),
    };
    let applier = Applier::new(
        Arc::new(RevocationSet::new()),
        Arc::new(SubjectClaims::new()),
    );
    let log = StateLog::open(&config, applier, &Tasks::new())
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    let log = Arc::new(log);
    let concurrency = 256;
    let start = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let log = log.clone();
        writers.spawn(async move {
            for n in (w..records).step_by(concurrency) {
                let change = Change::Revoke(jti_revocation(n, i64::MAX));
                log.append(change)
                    .await
                    .unwrap_or_else(|e| unreachable!("{e}"));
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    println!(
        "embedded store: {records} durable appends by {concurrency} concurrent writers in {:.1} s = {:.0} revocations/s",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64()
    );
    drop(log);

    let set = Arc::new(RevocationSet::new());
    let start = Instant::now();
    let _log = StateLog::open(
        &config,
        Applier::new(set.clone(), Arc::new(SubjectClaims::new())),
        &Tasks::new(),
    )
    .await
    .unwrap_or_else(|e| unreachable!("{e}"));
    println!(
        "embedded store: restart with {} records replayed in {:.2} s",
        set.size().total(),
        start.elapsed().as_secs_f64()
    );
}

async fn redis_propagation(samples: usize) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0);
    let Ok(mut redis) = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    else {
        println!("redis propagation: skipped (no redis-server on PATH)");
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = StoreSpec::Redis(RedisSpec {
        url: format!("redis://127.0.0.1:{port}"),
        stream: "bench".into(),
        timeout: Duration::from_secs(2),
        retention: Duration::from_secs(3600),
        wait_replicas: 0,
        ca_file: None,
    });
    let stop = Tasks::new();
    let a_set = Arc::new(RevocationSet::new());
    let b_set = Arc::new(RevocationSet::new());
    let a_applier = Applier::new(a_set, Arc::new(SubjectClaims::new()));
    let b_applier = Applier::new(b_set.clone(), Arc::new(SubjectClaims::new()));
    let a = StateLog::open(&config, a_applier.clone(), &stop)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    let _b = StateLog::open(&config, b_applier.clone(), &stop)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    a_applier.wait_caught_up().await;
    b_applier.wait_caught_up().await;
    let mut after_ack = Vec::with_capacity(samples);
    let mut end_to_end = Vec::with_capacity(samples);
    for n in 0..samples {
        let issued = Instant::now();
        a.append(Change::Revoke(jti_revocation(n, i64::MAX)))
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        let acknowledged = Instant::now();
        let keys = keys_for(n);
        while !matches!(b_set.check(&keys), Ok(Some(_))) {
            tokio::task::yield_now().await;
        }
        after_ack.push(acknowledged.elapsed());
        end_to_end.push(issued.elapsed());
    }
    stop.shutdown().await;
    let _ = redis.kill();
    for (what, mut latencies) in [
        ("acknowledged on A → refused on B", after_ack),
        ("issued on A → refused on B", end_to_end),
    ] {
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "redis propagation over {samples} revocations, {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: stay quick there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let records = env_usize(
        "REVOCATION_BENCH_RECORDS",
        if quick { 10_000 } else { 10_000_000 },
    );
    let log_records = env_usize(
        "REVOCATION_BENCH_LOG_RECORDS",
        if quick { 2_000 } else { 1_000_000 },
    );
    set_lookup(records);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
    runtime.block_on(async {
        embedded_throughput_and_restart(log_records).await;
        redis_propagation(if quick { 20 } else { 1000 }).await;
    });
}
