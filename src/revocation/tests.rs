use super::*;

fn revocation(record: Record, forget_after: i64) -> Revocation {
    Revocation {
        record,
        forget_after,
        revoked_at: 0,
        reason: String::new(),
    }
}

fn keys(sub: &str, iat: Option<i64>) -> TokenKeys {
    TokenKeys::of(&TokenIdentity {
        token_hash: Some(TokenHash::of("the-token")),
        iss: "https://iss.test/",
        jti: Some("jti-1"),
        sub: Some(sub),
        client_id: Some("client-1"),
        sid: Some("session-1"),
        iat,
    })
}

#[test]
fn token_and_jti_records_match_exactly() {
    let set = RevocationSet::new();
    assert_eq!(set.check(&keys("alice", Some(100))), None);
    set.apply(&revocation(
        Record::Token {
            sha256: token_hex(&TokenHash::of("the-token")),
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("alice", Some(100))).map(|m| m.kind),
        Some(RecordKind::Token)
    );

    let set = RevocationSet::new();
    set.apply(&revocation(
        Record::Jti {
            iss: "https://iss.test/".into(),
            jti: "jti-1".into(),
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("alice", Some(100))).map(|m| m.kind),
        Some(RecordKind::Jti)
    );
    // Same jti, other issuer: no match.
    let other = TokenKeys::of(&TokenIdentity {
        iss: "https://other.test/",
        jti: Some("jti-1"),
        ..TokenIdentity::default()
    });
    assert_eq!(set.check(&other), None);
}

#[test]
fn cutoffs_revoke_tokens_issued_before() {
    let set = RevocationSet::new();
    set.apply(&revocation(
        Record::Subject {
            iss: "https://iss.test/".into(),
            sub: "alice".into(),
            before: 500,
        },
        10_000,
    ));
    let matched = set.check(&keys("alice", Some(499)));
    assert_eq!(
        matched,
        Some(Matched {
            kind: RecordKind::Subject,
            before: Some(500)
        })
    );
    assert_eq!(
        set.check(&keys("alice", Some(500))),
        None,
        "issued at T: not before T"
    );
    assert_eq!(set.check(&keys("bob", Some(1))), None);
    assert!(set.check(&keys("alice", None)).is_some(), "no iat: revoked");

    // A later cut-off for the same subject moves it forward, an earlier one does not back.
    set.apply(&revocation(
        Record::Subject {
            iss: "https://iss.test/".into(),
            sub: "alice".into(),
            before: 900,
        },
        10_000,
    ));
    set.apply(&revocation(
        Record::Subject {
            iss: "https://iss.test/".into(),
            sub: "alice".into(),
            before: 100,
        },
        10_000,
    ));
    assert!(set.check(&keys("alice", Some(899))).is_some());
    assert_eq!(set.size().subjects, 1);
}

#[test]
fn client_and_session_cutoffs() {
    let set = RevocationSet::new();
    set.apply(&revocation(
        Record::Client {
            iss: "https://iss.test/".into(),
            client_id: "client-1".into(),
            before: 50,
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("x", Some(10))).map(|m| m.kind),
        Some(RecordKind::Client)
    );
    let set = RevocationSet::new();
    set.apply(&revocation(
        Record::Session {
            iss: "https://iss.test/".into(),
            sid: "session-1".into(),
            before: 50,
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("x", Some(10))).map(|m| m.kind),
        Some(RecordKind::Session)
    );
}

#[test]
fn purge_forgets_records_past_forget_after() {
    let set = RevocationSet::new();
    for i in 0..100 {
        set.apply(&revocation(
            Record::Jti {
                iss: "i".into(),
                jti: format!("{i}"),
            },
            1000 + i,
        ));
    }
    assert_eq!(set.purge(1049), 50);
    assert_eq!(set.size().jtis, 50);
    assert_eq!(set.purge(5000), 50);
    assert_eq!(set.size(), SetSize::default());
}

#[test]
fn malformed_token_hex_is_ignored_not_panicking() {
    let set = RevocationSet::new();
    for sha256 in ["", "zz", &"é".repeat(32), &"0".repeat(63)] {
        set.apply(&revocation(
            Record::Token {
                sha256: sha256.to_owned(),
            },
            1,
        ));
    }
    assert_eq!(set.size().tokens, 0);
}
