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
    set.mark_complete();
    assert_eq!(set.check(&keys("alice", Some(100))).ok().flatten(), None);
    set.apply(&revocation(
        Record::Token {
            sha256: token_hex(&TokenHash::of("the-token")),
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("alice", Some(100)))
            .ok()
            .flatten()
            .map(|m| m.kind),
        Some(RecordKind::Token)
    );

    let set = RevocationSet::new();
    set.mark_complete();
    set.apply(&revocation(
        Record::Jti {
            iss: "https://iss.test/".into(),
            jti: "jti-1".into(),
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("alice", Some(100)))
            .ok()
            .flatten()
            .map(|m| m.kind),
        Some(RecordKind::Jti)
    );
    // Same jti, other issuer: no match.
    let other = TokenKeys::of(&TokenIdentity {
        iss: "https://other.test/",
        jti: Some("jti-1"),
        ..TokenIdentity::default()
    });
    assert_eq!(set.check(&other), Ok(None));
}

#[test]
fn cutoffs_revoke_tokens_issued_before() {
    let set = RevocationSet::new();
    set.mark_complete();
    set.apply(&revocation(
        Record::Subject {
            iss: "https://iss.test/".into(),
            sub: "alice".into(),
            before: 500,
        },
        10_000,
    ));
    let matched = set.check(&keys("alice", Some(499))).ok().flatten();
    assert_eq!(
        matched,
        Some(Matched {
            kind: RecordKind::Subject,
            before: Some(500)
        })
    );
    assert_eq!(
        set.check(&keys("alice", Some(500))).ok().flatten(),
        None,
        "issued at T: not before T"
    );
    assert_eq!(set.check(&keys("bob", Some(1))).ok().flatten(), None);
    assert!(
        set.check(&keys("alice", None)).ok().flatten().is_some(),
        "no iat: revoked"
    );

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
    assert!(
        set.check(&keys("alice", Some(899)))
            .ok()
            .flatten()
            .is_some()
    );
    assert_eq!(set.size().subjects, 1);
}

#[test]
fn client_and_session_cutoffs() {
    let set = RevocationSet::new();
    set.mark_complete();
    set.apply(&revocation(
        Record::Client {
            iss: "https://iss.test/".into(),
            client_id: "client-1".into(),
            before: 50,
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("x", Some(10)))
            .ok()
            .flatten()
            .map(|m| m.kind),
        Some(RecordKind::Client)
    );
    let set = RevocationSet::new();
    set.mark_complete();
    set.apply(&revocation(
        Record::Session {
            iss: "https://iss.test/".into(),
            sid: "session-1".into(),
            before: 50,
        },
        1000,
    ));
    assert_eq!(
        set.check(&keys("x", Some(10)))
            .ok()
            .flatten()
            .map(|m| m.kind),
        Some(RecordKind::Session)
    );
}

#[test]
fn purge_forgets_records_past_forget_after() {
    let set = RevocationSet::new();
    set.mark_complete();
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
    set.mark_complete();
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

// === retention covers acceptance ===

mod retention_property {
    use std::sync::LazyLock;

    use jsonwebtoken::Algorithm;
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::retention;
    use crate::keys::KeySet;
    use crate::token::{self, Policy, sign::SigningKey};

    const ISS: &str = "https://iss.test/";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: i64 = 1_700_000_000;

    static SIGNER: LazyLock<Option<SigningKey>> =
        LazyLock::new(|| SigningKey::from_private(Algorithm::HS256, "hs", SECRET.to_vec()).ok());

    fn policy(leeway: i64, max: u64, require_iat: bool) -> Policy {
        Policy {
            algorithms: vec![Algorithm::HS256],
            leeway_secs: leeway,
            max_token_lifetime_secs: max,
            require_iat,
            ..Policy::new(ISS, vec!["api".into()])
        }
    }

    /// Whether a token with these times passes every rule at `now`, by the real
    /// validation.
    fn passes(policy: &Policy, iat: Option<i64>, exp: i64, now: i64) -> bool {
        let mut claims = json!({"iss": ISS, "aud": "api", "exp": exp, "scope": "read"});
        if let Some(iat) = iat {
            claims["iat"] = json!(iat);
        }
        let Some(signer) = SIGNER.as_ref() else {
            return false;
        };
        let Ok(jwt) = signer.mint("at+jwt", &claims) else {
            return false;
        };
        token::parse(&jwt, 16 * 1024)
            .and_then(|parsed| token::verify(parsed, policy, &KeySet::hmac(SECRET), now))
            .is_ok()
    }

    /// (leeway, max lifetime, iat, exp, check time): lifetimes and check times around
    /// the bounds where a wrong retention would show.
    fn times() -> impl Strategy<Value = (i64, u64, i64, i64, i64)> {
        (0..=600i64, 60..=7200u64).prop_flat_map(|(leeway, max)| {
            let max_i = i64::try_from(max).unwrap_or(i64::MAX);
            (
                Just(leeway),
                Just(max),
                -9000..9000i64,
                0..=max_i + 2 * leeway + 10,
                -leeway - 10..=max_i + 3 * leeway + 10,
            )
                .prop_map(|(leeway, max, iat, lifetime, offset)| {
                    (
                        leeway,
                        max,
                        T0 + iat,
                        T0 + iat + lifetime,
                        T0 + iat + offset,
                    )
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A token revoked by its hash at `revoked`: whenever it would pass, the record
        /// is there (it is purged once `forget_after <= now`).
        #[test]
        fn token_records_outlive_their_tokens(
            (leeway, max, iat, exp, now) in times(),
            require_iat in any::<bool>(),
            with_iat in any::<bool>(),
        ) {
            let policy = policy(leeway, max, require_iat);
            let iat = with_iat.then_some(iat);
            let forget_after = retention::token(Some(&policy), iat, Some(exp), i64::MIN);
            if passes(&policy, iat, exp, now) {
                prop_assert!(forget_after > now, "purged at {forget_after}, passes at {now}");
            }
        }

        /// A cut-off at `before`: every token with `iat < before` that would pass is
        /// still covered.
        #[test]
        fn cutoffs_outlive_the_tokens_they_cover(
            (leeway, max, iat, exp, now) in times(),
            after_iat in 1..9000i64,
        ) {
            let policy = policy(leeway, max, true);
            let before = iat + after_iat;
            let forget_after = retention::cutoff(&policy, before);
            if passes(&policy, Some(iat), exp, now) {
                prop_assert!(forget_after > now, "purged at {forget_after}, passes at {now}");
            }
        }

        /// A jti revoked at `revoked`, its token issued by then (clocks apart by at most
        /// the leeway), with or without the caller knowing its `exp`.
        #[test]
        fn jti_records_outlive_their_tokens(
            (leeway, max, iat, exp, now) in times(),
            pick in 0..i64::from(u16::MAX),
            exp_known in any::<bool>(),
        ) {
            let policy = policy(leeway, max, true);
            // Revoked after its token was issued and before the check.
            let earliest = iat - leeway;
            prop_assume!(now >= earliest);
            let revoked = earliest + pick % (now - earliest + 1);
            let forget_after = retention::jti(&policy, exp_known.then_some(exp), revoked);
            if passes(&policy, Some(iat), exp, now) {
                prop_assert!(forget_after > now, "purged at {forget_after}, passes at {now}");
            }
        }
    }
}

/// The README's retention bounds, exactly (the property tests check they are long
/// enough; this that they are no longer): with `M` the maximum lifetime and `L` the
/// leeway, a token record until `exp` + `L`, a cut-off until `before` + `M` + 2`L`, a
/// `jti` until `exp` + `L`, or the revocation time + `M` + 3`L` without `exp`.
#[test]
fn records_are_kept_no_longer_than_the_readme_says() {
    let (max, leeway) = (3600, 30);
    let policy = crate::token::Policy {
        max_token_lifetime_secs: max,
        leeway_secs: leeway,
        ..crate::token::Policy::new("https://iss.test/", vec!["api".into()])
    };
    let max = i64::try_from(max).unwrap_or_default();
    let (iat, exp, at) = (1_000_000, 1_000_600, 1_000_100);
    assert_eq!(
        retention::token(Some(&policy), Some(iat), Some(exp), 0),
        exp + leeway
    );
    assert_eq!(retention::cutoff(&policy, at), at + max + 2 * leeway);
    assert_eq!(retention::jti(&policy, Some(exp), at), exp + leeway);
    assert_eq!(retention::jti(&policy, None, at), at + max + 3 * leeway);
}

#[test]
fn a_set_still_loading_never_says_not_revoked() {
    let set = RevocationSet::new();
    assert_eq!(set.check(&keys("alice", Some(1))), Err(Incomplete));
    set.mark_complete();
    assert_eq!(set.check(&keys("alice", Some(1))), Ok(None));
}
