use super::*;
use crate::revocation::Record;
use crate::tasks::Tasks;

fn revoke(jti: &str, forget_after: i64) -> Change {
    Change::Revoke(Revocation {
        record: Record::Jti {
            iss: "i".into(),
            jti: jti.into(),
        },
        forget_after,
        revoked_at: 0,
        reason: String::new(),
    })
}

fn applier() -> Arc<Applier> {
    Applier::new(
        Arc::new(RevocationSet::new()),
        Arc::new(SubjectClaims::new()),
    )
}

#[test]
fn entries_this_version_cannot_read_are_skipped() {
    assert_eq!(
        decode(br#"{"change":"set_subject_claims","sub":"a"}"#),
        Change::Unknown
    );
    assert_eq!(decode(b"not json"), Change::Unknown);
    let applier = applier();
    applier.apply(LogEntry {
        position: 7,
        change: Change::Unknown,
    });
    assert_eq!(applier.applied(), 7, "the log moves past it");
}

#[test]
fn applier_skips_replays_and_old_positions() {
    let applier = applier();
    applier.apply(LogEntry {
        position: 2,
        change: revoke("a", 100),
    });
    applier.apply(LogEntry {
        position: 1,
        change: revoke("b", 100),
    });
    applier.apply(LogEntry {
        position: 2,
        change: revoke("c", 100),
    });
    assert_eq!(applier.revocations.size().total(), 1);
    assert_eq!(applier.applied(), 2);
}

#[tokio::test]
async fn embedded_positions_are_never_reused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = StoreSpec::Embedded {
        path: dir.path().join("state.redb"),
    };
    {
        let log = StateLog::open(&config, applier(), &Tasks::new()).await?;
        assert_eq!(log.append(revoke("kept", i64::MAX)).await?, 1);
        assert_eq!(log.append(revoke("old", 10)).await?, 2);
        assert_eq!(log.append(revoke("old2", 10)).await?, 3);
        assert_eq!(
            log.compact(100).await?,
            2,
            "the newest entries are forgotten"
        );
    }
    let replayed = applier();
    let log = StateLog::open(&config, replayed.clone(), &Tasks::new()).await?;
    assert_eq!(
        replayed.revocations.size().total(),
        1,
        "only the live record comes back"
    );
    assert_eq!(
        log.append(revoke("new", i64::MAX)).await?,
        4,
        "after the high-water mark"
    );
    let after = log.read_after(1, 10).await?;
    assert_eq!(
        after.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![4]
    );
    Ok(())
}

#[test]
fn redis_url_password_is_never_shown() {
    for url in [
        "redis://user:s3cret@redis.internal:6379/0",
        "redis+sentinel://user:s3cret@redis.internal:6379,other:26379/mymaster",
        "unix:///run/redis.internal:6379.sock?user=u&pass=s3cret",
    ] {
        let config = StoreSpec::Redis(RedisSpec {
            url: url.into(),
            stream: "s".into(),
            timeout: Duration::from_secs(1),
            retention: Duration::from_secs(1),
            wait_replicas: 0,
            ca_file: None,
        });
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis.internal:6379"), "{shown}");
    }
}

#[test]
fn subject_claims_ride_the_log() {
    let applier = applier();
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"role": "admin"}"#).unwrap_or_default();
    applier.apply(LogEntry {
        position: 1,
        change: Change::SetSubjectClaims {
            iss: "i".into(),
            sub: "alice".into(),
            claims,
        },
    });
    let key = crate::enrich::SubjectKey::new("i", "alice");
    assert_eq!(
        applier
            .subjects
            .get(&key)
            .and_then(|c| c.all.get("role").cloned()),
        Some(serde_json::json!("admin"))
    );
    let encoded = encode(&Change::DeleteSubjectClaims {
        iss: "i".into(),
        sub: "alice".into(),
    })
    .unwrap_or_default();
    applier.apply(LogEntry {
        position: 2,
        change: decode(&encoded),
    });
    assert!(applier.subjects.get(&key).is_none());
}

#[tokio::test]
async fn superseded_subject_claims_leave_the_embedded_log() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let config = StoreSpec::Embedded {
        path: dir.path().join("state.redb"),
    };
    let set = |plan: &str| Change::SetSubjectClaims {
        iss: "i".into(),
        sub: "alice".into(),
        claims: serde_json::from_value(serde_json::json!({ "plan": plan })).unwrap_or_default(),
    };
    {
        let log = StateLog::open(&config, applier(), &Tasks::new()).await?;
        for plan in ["free", "pro", "enterprise"] {
            log.append(set(plan)).await?;
        }
        log.append(revoke("kept", i64::MAX)).await?;
        log.append(Change::SetSubjectClaims {
            iss: "i".into(),
            sub: "bob".into(),
            claims: Default::default(),
        })
        .await?;
        log.append(Change::DeleteSubjectClaims {
            iss: "i".into(),
            sub: "bob".into(),
        })
        .await?;
        let left: Vec<Position> = log
            .read_after(0, 100)
            .await?
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(
            left,
            vec![3, 4],
            "only alice's latest claims and the revocation remain"
        );
    }
    let replayed = applier();
    let _log = StateLog::open(&config, replayed.clone(), &Tasks::new()).await?;
    let alice = replayed
        .subjects
        .get(&crate::enrich::SubjectKey::new("i", "alice"));
    assert_eq!(
        alice.and_then(|s| s.all.get("plan").cloned()),
        Some(serde_json::json!("enterprise"))
    );
    assert!(
        replayed
            .subjects
            .get(&crate::enrich::SubjectKey::new("i", "bob"))
            .is_none()
    );
    Ok(())
}
