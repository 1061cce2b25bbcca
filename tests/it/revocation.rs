//! Revocation on one replica: every record kind, cached answers, RFC 7009 behaviour,
//! CheckRevocation, WatchRevocations, caller authentication, bad input, purge, and the
//! embedded store across a restart.

use std::time::Duration;

use introspectd::{
    config::{IssuerSection, StoreBackend, StoreSection},
    grpc::pb::{self, InactiveReason, RecordKind, revoke_request::Target},
};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tonic::Code;

use crate::support::*;

const ISS: &str = "https://revocation.test/";

struct Setup {
    server: Introspectd,
    signer: introspectd::token::sign::SigningKey,
}

async fn setup() -> Setup {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    Setup { server, signer }
}

fn token_with(s: &Setup, changes: serde_json::Value) -> String {
    let mut claims = claims(ISS);
    if let (Some(claims), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        claims.extend(changes.clone());
    }
    mint(&s.signer, &claims)
}

fn cutoff(value: &str, before: Option<i64>) -> pb::CutoffTarget {
    pb::CutoffTarget {
        iss: ISS.into(),
        value: value.into(),
        before,
    }
}

async fn check(
    server: &Introspectd,
    subject: pb::check_revocation_request::Subject,
) -> pb::CheckRevocationResponse {
    let request = with_key(
        READER_KEY,
        pb::CheckRevocationRequest {
            subject: Some(subject),
        },
    );
    match server.revocation().await.check_revocation(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => unreachable!("CheckRevocation failed: {status:?}"),
    }
}

#[tokio::test]
async fn revoked_token_is_refused_even_from_the_cache() -> TestResult {
    let s = setup().await;
    let token = token_with(&s, json!({}));
    assert!(
        s.server.introspect(&token).await.active,
        "verified and cached"
    );
    s.server
        .revoke(Target::Token(pb::TokenTarget {
            token: token.clone(),
            token_type_hint: None,
        }))
        .await;
    let answer = s.server.introspect(&token).await;
    assert!(!answer.active);
    assert_eq!(reason(&answer), InactiveReason::Revoked);
    // Another token of the same subject is untouched.
    assert!(
        s.server
            .introspect(&token_with(&s, json!({"jti": "other"})))
            .await
            .active
    );
    Ok(())
}

/// CheckRevocation reads a token's `iat` as validation does: a fraction is floored
/// (RFC 7519 NumericDate), not taken for a missing `iat`, which a cut-off revokes.
#[tokio::test]
async fn check_revocation_and_introspect_agree_on_a_fractional_iat() -> TestResult {
    use pb::check_revocation_request::Subject;
    let s = setup().await;
    let t = now();
    let token = token_with(&s, json!({"sub": "carol", "iat": (t - 100) as f64 + 0.5}));
    s.server
        .revoke(Target::Subject(cutoff("carol", Some(t - 100))))
        .await;
    assert!(
        s.server.introspect(&token).await.active,
        "issued at the cut-off, not before"
    );
    assert!(!check(&s.server, Subject::Token(token)).await.revoked);
    Ok(())
}

#[tokio::test]
async fn jti_and_cutoffs_revoke_what_they_name() -> TestResult {
    let s = setup().await;
    let t = now();
    let by_jti = token_with(&s, json!({"jti": "jti-42"}));
    let old_sub = token_with(&s, json!({"sub": "alice", "iat": t - 100}));
    let new_sub = token_with(&s, json!({"sub": "alice", "iat": t + 5}));
    let old_client = token_with(&s, json!({"client_id": "spa", "iat": t - 100}));
    let old_session = token_with(&s, json!({"sid": "sess-1", "iat": t - 100}));
    let bystander = token_with(
        &s,
        json!({"sub": "bob", "client_id": "cli", "sid": "s2", "iat": t - 100}),
    );
    for token in [
        &by_jti,
        &old_sub,
        &new_sub,
        &old_client,
        &old_session,
        &bystander,
    ] {
        assert!(s.server.introspect(token).await.active);
    }
    s.server
        .revoke(Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "jti-42".into(),
            exp: None,
        }))
        .await;
    s.server
        .revoke(Target::Subject(cutoff("alice", Some(t))))
        .await;
    s.server
        .revoke(Target::Client(cutoff("spa", Some(t))))
        .await;
    s.server
        .revoke(Target::Session(cutoff("sess-1", None)))
        .await;
    for (what, token) in [
        ("jti", &by_jti),
        ("subject", &old_sub),
        ("client", &old_client),
        ("session", &old_session),
    ] {
        let answer = s.server.introspect(token).await;
        assert_eq!(reason(&answer), InactiveReason::Revoked, "{what}");
    }
    assert!(
        s.server.introspect(&new_sub).await.active,
        "issued after the cut-off"
    );
    assert!(s.server.introspect(&bystander).await.active);

    use pb::check_revocation_request::Subject;
    let matched = check(&s.server, Subject::Token(old_sub.clone())).await;
    assert!(matched.revoked);
    assert_eq!(matched.matched, RecordKind::Subject as i32);
    assert_eq!(matched.cutoff_before, Some(t));
    let identity = |sub: &str, iat: i64| pb::TokenIdentity {
        iss: ISS.into(),
        sub: Some(sub.into()),
        iat: Some(iat),
        ..Default::default()
    };
    assert!(
        check(&s.server, Subject::Identity(identity("alice", t - 1)))
            .await
            .revoked
    );
    assert!(
        !check(&s.server, Subject::Identity(identity("alice", t)))
            .await
            .revoked
    );
    let by_jti_identity = pb::TokenIdentity {
        iss: ISS.into(),
        jti: Some("jti-42".into()),
        ..Default::default()
    };
    assert_eq!(
        check(&s.server, Subject::Identity(by_jti_identity))
            .await
            .matched,
        RecordKind::Jti as i32
    );
    assert!(!check(&s.server, Subject::Token(bystander)).await.revoked);
    Ok(())
}

#[tokio::test]
async fn rfc7009_anything_revokes_and_nothing_is_revealed() -> TestResult {
    let s = setup().await;
    let mut expired = claims(ISS);
    expired["exp"] = json!(now() - 3600);
    for token in [
        "not-a-token".to_owned(),
        "a.b.c".to_owned(),
        mint(&s.signer, &expired),
        "x".repeat(4000),
    ] {
        let request = with_key(
            ADMIN_KEY,
            pb::RevokeRequest {
                target: Some(Target::Token(pb::TokenTarget {
                    token: token.clone(),
                    token_type_hint: Some("refresh_token".into()),
                })),
                reason: String::new(),
            },
        );
        let response = s.server.revocation().await.revoke(request).await?;
        assert_eq!(response.into_inner(), pb::RevokeResponse {});
    }
    // An opaque refresh token is revoked by its hash.
    use pb::check_revocation_request::Subject;
    let matched = check(&s.server, Subject::Token("not-a-token".into())).await;
    assert_eq!(matched.matched, RecordKind::Token as i32);
    Ok(())
}

#[tokio::test]
async fn callers_need_the_right_key_and_role() -> TestResult {
    let s = setup().await;
    let revoke = |key: Option<&str>| {
        let message = pb::RevokeRequest {
            target: Some(Target::Jti(pb::JtiTarget {
                iss: ISS.into(),
                jti: "j".into(),
                exp: None,
            })),
            reason: String::new(),
        };
        match key {
            Some(key) => with_key(key, message),
            None => tonic::Request::new(message),
        }
    };
    let mut client = s.server.revocation().await;
    assert_eq!(
        client.revoke(revoke(None)).await.err().map(|e| e.code()),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        client
            .revoke(revoke(Some("wrong-key")))
            .await
            .err()
            .map(|e| e.code()),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        client
            .revoke(revoke(Some(READER_KEY)))
            .await
            .err()
            .map(|e| e.code()),
        Some(Code::PermissionDenied)
    );
    assert!(client.revoke(revoke(Some(ADMIN_KEY))).await.is_ok());
    // The key as HTTP Basic's password (client_secret_basic), the scheme in any case.
    for authorization in [
        format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("ops:{ADMIN_KEY}")
            )
        ),
        format!("BEARER {ADMIN_KEY}"),
    ] {
        let mut request = revoke(None);
        request
            .metadata_mut()
            .insert("authorization", authorization.parse()?);
        assert!(client.revoke(request).await.is_ok(), "{authorization}");
    }
    let mut malformed = revoke(Some(ADMIN_KEY));
    malformed
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse()?);
    assert_eq!(
        client.revoke(malformed).await.err().map(|e| e.code()),
        Some(Code::Unauthenticated)
    );
    // Watching the whole set needs a key even where introspection is anonymous.
    let watch = client
        .watch_revocations(pb::WatchRevocationsRequest { after: None })
        .await;
    assert_eq!(watch.err().map(|e| e.code()), Some(Code::Unauthenticated));
    // The introspect role is enough.
    let watch = client
        .watch_revocations(with_key(
            READER_KEY,
            pb::WatchRevocationsRequest { after: None },
        ))
        .await;
    assert!(watch.is_ok(), "a key with the introspect role watches");
    // CheckRevocation follows Introspect: anonymous here.
    let check = client
        .check_revocation(pb::CheckRevocationRequest {
            subject: Some(pb::check_revocation_request::Subject::Token("t".into())),
        })
        .await;
    assert!(check.is_ok());
    Ok(())
}

/// An `[[api_keys]]` entry of a keys file.
fn api_key_entry(name: &str, key: &str, role: &str) -> String {
    format!(
        "[[api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [\"{role}\"]\n",
        introspectd::auth::hash_key(key)
    )
}

/// A request to revoke `jti` "j" of the test issuer, with `key`.
fn revoke_jti_j(key: &str) -> tonic::Request<pb::RevokeRequest> {
    with_key(
        key,
        pb::RevokeRequest {
            target: Some(Target::Jti(pb::JtiTarget {
                iss: ISS.into(),
                jti: "j".into(),
                exp: None,
            })),
            reason: String::new(),
        },
    )
}

/// `auth.api_keys_file` (a mounted Secret) is read again while serving: a key added to
/// it is taken, a key removed from it is refused, and a file that does not parse
/// leaves the keys as they were.
#[tokio::test]
async fn the_api_keys_file_is_read_again_while_serving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("api-keys.toml");
    let entry = |name: &str, key: &str| api_key_entry(name, key, "revoke");
    let replace = |text: &str| -> std::io::Result<()> {
        let staging = dir.path().join(".api-keys.toml.new");
        std::fs::write(&staging, text)?;
        std::fs::rename(&staging, &path)
    };
    replace(&entry("old", "old-key"))?;
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.auth.api_keys_file = Some(path.clone());
    file.auth.api_keys_reload_secs = 1;
    let server = Introspectd::start_ready(file).await;
    let code = |key: &'static str| {
        let server = &server;
        async move {
            let request = revoke_jti_j(key);
            match server.revocation().await.revoke(request).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
    };
    assert_eq!(code("old-key").await, Code::Ok);
    assert_eq!(code("new-key").await, Code::Unauthenticated);
    replace(&entry("new", "new-key"))?;
    eventually("the new key to be taken", || async {
        code("new-key").await == Code::Ok
    })
    .await;
    assert_eq!(code("old-key").await, Code::Unauthenticated, "removed");
    replace("[[api_keys]]\nname = \"broken\"\n")?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        code("new-key").await,
        Code::Ok,
        "a broken file changes nothing"
    );
    Ok(())
}

/// SIGHUP reads what an operator changed at once: the API keys file and the issuers'
/// key sets (a key the issuer withdrew stops verifying), where their periods (an hour
/// here) would wait. The process keeps serving; it used to die of the signal.
#[tokio::test]
async fn sighup_reads_the_keys_file_and_the_key_sets_again_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("api-keys.toml");
    let entry = |name: &str, key: &str| api_key_entry(name, key, "revoke");
    std::fs::write(&path, entry("old", "old-key"))?;
    let withdrawn = key(Algorithm::ES256, "withdrawn");
    let kept = key(Algorithm::ES256, "kept");
    let jwks = JwksServer::start(&[&withdrawn, &kept]).await;
    let issuer = IssuerSection {
        refresh_secs: 3_600,
        refresh_min_secs: 3_600,
        ..issuer_section(ISS, &jwks.jwks_uri(), &["ES256"])
    };
    let config = write_config(dir.path(), vec![issuer], |file| {
        file.auth.api_keys_file = Some(path.clone());
        file.auth.api_keys_reload_secs = 3_600;
    });
    let process = spawn_serve(&config, std::process::Stdio::null).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", process.grpc))?
        .connect()
        .await?;
    let revoke_code = |key: &'static str| {
        let mut client = pb::token_revocation_client::TokenRevocationClient::new(channel.clone());
        async move {
            let request = revoke_jti_j(key);
            client
                .revoke(request)
                .await
                .map_or_else(|s| s.code(), |_| Code::Ok)
        }
    };
    let active = |token: String| {
        let mut client =
            pb::token_introspection_client::TokenIntrospectionClient::new(channel.clone());
        async move {
            client
                .introspect(pb::IntrospectRequest {
                    token,
                    ..Default::default()
                })
                .await
                .is_ok_and(|answer| answer.into_inner().active)
        }
    };
    let signed_by_withdrawn = mint(&withdrawn, &claims(ISS));
    assert!(active(signed_by_withdrawn.clone()).await);
    assert_eq!(revoke_code("new-key").await, Code::Unauthenticated);

    std::fs::write(&path, entry("new", "new-key"))?;
    jwks.set_keys(&[&kept]);
    process.send("HUP")?;
    eventually("the new API key to be taken", || async {
        revoke_code("new-key").await == Code::Ok
    })
    .await;
    assert_eq!(revoke_code("old-key").await, Code::Unauthenticated);
    eventually("the withdrawn signing key to be dropped", || async {
        !active(signed_by_withdrawn.clone()).await
    })
    .await;
    assert!(active(mint(&kept, &claims(ISS))).await);
    let mut process = process;
    assert!(
        process.terminate()?.success(),
        "still running, stops cleanly"
    );
    Ok(())
}

/// A key removed from the keys file stops the streams it opened, not only new calls:
/// IntrospectStream fails its next request with UNAUTHENTICATED, WatchRevocations its
/// next event.
#[tokio::test]
async fn a_removed_key_ends_the_streams_it_opened() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("api-keys.toml");
    let entry = api_key_entry;
    let admin = entry("admin", "admin-key", "admin");
    let replace = |text: &str| -> std::io::Result<()> {
        let staging = dir.path().join(".api-keys.toml.new");
        std::fs::write(&staging, text)?;
        std::fs::rename(&staging, &path)
    };
    replace(&format!(
        "{admin}{}",
        entry("gateway", "gateway-key", "introspect")
    ))?;
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.auth.anonymous_introspect = false;
    file.auth.api_keys_file = Some(path.clone());
    file.auth.api_keys_reload_secs = 1;
    let server = Introspectd::start_ready(file).await;
    let token = mint(&signer, &claims(ISS));

    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    let mut answers = server
        .client()
        .await
        .introspect_stream(with_key(
            "gateway-key",
            tokio_stream::wrappers::ReceiverStream::new(outbound),
        ))
        .await?
        .into_inner();
    requests.send(crate::stream::ask(1, &token)).await?;
    assert_eq!(answers.message().await?.map(|answer| answer.id), Some(1));
    let mut events = server
        .revocation()
        .await
        .watch_revocations(with_key(
            "gateway-key",
            pb::WatchRevocationsRequest { after: None },
        ))
        .await?
        .into_inner();
    assert!(events.message().await?.is_some_and(|event| event.caught_up));

    replace(&admin)?;
    eventually("the gateway key to be refused", || async {
        server
            .client()
            .await
            .introspect(with_key(
                "gateway-key",
                pb::IntrospectRequest {
                    token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .is_err_and(|status| status.code() == Code::Unauthenticated)
    })
    .await;
    requests.send(crate::stream::ask(2, &token)).await?;
    assert_eq!(
        answers.message().await.err().map(|status| status.code()),
        Some(Code::Unauthenticated),
        "the open stream answers no more"
    );
    server
        .revocation()
        .await
        .revoke(with_key(
            "admin-key",
            pb::RevokeRequest {
                target: Some(Target::Jti(pb::JtiTarget {
                    iss: ISS.into(),
                    jti: "after-removal".into(),
                    exp: None,
                })),
                reason: String::new(),
            },
        ))
        .await?;
    assert_eq!(
        events.message().await.err().map(|status| status.code()),
        Some(Code::Unauthenticated),
        "the open watch gets no more revocations"
    );
    Ok(())
}

#[tokio::test]
async fn introspection_needs_a_key_unless_anonymous_is_allowed() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.auth.anonymous_introspect = false;
    let server = Introspectd::start_ready(file).await;
    let token = mint(&signer, &claims(ISS));
    let request = || pb::IntrospectRequest {
        token: token.clone(),
        ..Default::default()
    };
    let mut client = server.client().await;
    assert_eq!(
        client.introspect(request()).await.err().map(|e| e.code()),
        Some(Code::Unauthenticated)
    );
    assert!(
        client
            .introspect(with_key(READER_KEY, request()))
            .await?
            .into_inner()
            .active
    );
    let http = reqwest::Client::new();
    let url = format!("http://{}/oauth2/introspect", server.http_addr);
    let anonymous = http
        .post(&url)
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    let keyed = http
        .post(&url)
        .bearer_auth(READER_KEY)
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(keyed.status(), 200);
    Ok(())
}

#[tokio::test]
async fn bad_revocations_get_invalid_argument() -> TestResult {
    let s = setup().await;
    let mut client = s.server.revocation().await;
    let revoke = |target: Option<Target>, reason: &str| {
        with_key(
            ADMIN_KEY,
            pb::RevokeRequest {
                target,
                reason: reason.into(),
            },
        )
    };
    let cases = vec![
        ("no target", revoke(None, "")),
        (
            "empty token",
            revoke(Some(Target::Token(pb::TokenTarget::default())), ""),
        ),
        (
            "empty jti",
            revoke(
                Some(Target::Jti(pb::JtiTarget {
                    iss: ISS.into(),
                    ..Default::default()
                })),
                "",
            ),
        ),
        (
            "unknown issuer",
            revoke(
                Some(Target::Subject(pb::CutoffTarget {
                    iss: "https://nobody/".into(),
                    value: "a".into(),
                    before: None,
                })),
                "",
            ),
        ),
        (
            "empty subject",
            revoke(Some(Target::Subject(cutoff("", None))), ""),
        ),
        (
            "reason over 256 bytes",
            revoke(Some(Target::Subject(cutoff("a", None))), &"r".repeat(257)),
        ),
        (
            "cut-off more than a minute in the future",
            revoke(Some(Target::Client(cutoff("c", Some(now() + 62)))), ""),
        ),
    ];
    // The bounds themselves are accepted.
    for (what, request) in [
        (
            "a 256-byte reason",
            revoke(Some(Target::Subject(cutoff("a", None))), &"r".repeat(256)),
        ),
        (
            "a cut-off within the minute",
            revoke(Some(Target::Client(cutoff("c", Some(now() + 58)))), ""),
        ),
    ] {
        assert!(client.revoke(request).await.is_ok(), "{what}");
    }
    for (what, request) in cases {
        assert_eq!(
            client.revoke(request).await.err().map(|e| e.code()),
            Some(Code::InvalidArgument),
            "{what}"
        );
    }
    let huge = revoke(
        Some(Target::Token(pb::TokenTarget {
            token: "t".repeat(1 << 20),
            token_type_hint: None,
        })),
        "",
    );
    assert_eq!(
        client.revoke(huge).await.err().map(|e| e.code()),
        Some(Code::OutOfRange)
    );
    let empty_check = client
        .check_revocation(with_key(
            ADMIN_KEY,
            pb::CheckRevocationRequest { subject: None },
        ))
        .await;
    assert_eq!(
        empty_check.err().map(|e| e.code()),
        Some(Code::InvalidArgument)
    );
    let bad_position = client
        .watch_revocations(with_key(
            ADMIN_KEY,
            pb::WatchRevocationsRequest {
                after: Some("yesterday".into()),
            },
        ))
        .await;
    assert_eq!(
        bad_position.err().map(|e| e.code()),
        Some(Code::InvalidArgument)
    );
    Ok(())
}

async fn next_event(stream: &mut tonic::Streaming<pb::RevocationEvent>) -> pb::RevocationEvent {
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Ok(Some(event))) => event,
        other => unreachable!("no event: {other:?}"),
    }
}

fn jti_of(event: &pb::RevocationEvent) -> Option<String> {
    match event.revocation.as_ref()?.record.as_ref()? {
        pb::revocation::Record::Jti(jti) => Some(jti.jti.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn watch_sends_the_set_then_live_changes_and_resumes_without_gaps() -> TestResult {
    let s = setup().await;
    let revoke_jti = |n: usize| {
        Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: format!("j{n}"),
            exp: None,
        })
    };
    for n in 0..3 {
        s.server.revoke(revoke_jti(n)).await;
    }
    // An already forgotten record is not part of the live set.
    s.server
        .revoke(Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "gone".into(),
            exp: Some(now() - 3600),
        }))
        .await;
    let mut client = s.server.revocation().await;
    let mut stream = client
        .watch_revocations(with_key(
            READER_KEY,
            pb::WatchRevocationsRequest { after: None },
        ))
        .await?
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut stream).await;
        if event.caught_up {
            break;
        }
        seen.push(jti_of(&event));
    }
    assert_eq!(
        seen,
        vec![Some("j0".into()), Some("j1".into()), Some("j2".into())]
    );
    s.server.revoke(revoke_jti(3)).await;
    let live = next_event(&mut stream).await;
    assert_eq!(jti_of(&live).as_deref(), Some("j3"));
    let resume_from = live.position.clone();
    drop(stream);

    for n in 4..7 {
        s.server.revoke(revoke_jti(n)).await;
    }
    let mut resumed = client
        .watch_revocations(with_key(
            READER_KEY,
            pb::WatchRevocationsRequest {
                after: Some(resume_from),
            },
        ))
        .await?
        .into_inner();
    let mut missed = Vec::new();
    loop {
        let event = next_event(&mut resumed).await;
        if event.caught_up {
            break;
        }
        missed.push(jti_of(&event));
    }
    assert_eq!(
        missed,
        vec![Some("j4".into()), Some("j5".into()), Some("j6".into())],
        "exactly the missed changes"
    );
    s.server.revoke(revoke_jti(7)).await;
    assert_eq!(
        jti_of(&next_event(&mut resumed).await).as_deref(),
        Some("j7")
    );
    Ok(())
}

#[tokio::test]
async fn forgotten_records_are_purged() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let mut issuer = inline_issuer(ISS, &signer);
    issuer.leeway_secs = 0;
    let mut file = file_config(vec![issuer]);
    file.store.purge_interval_secs = 1;
    let server = Introspectd::start_ready(file).await;
    let exp = now() + 1;
    server
        .revoke(Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "short".into(),
            exp: Some(exp),
        }))
        .await;
    use pb::check_revocation_request::Subject;
    let identity = || {
        Subject::Identity(pb::TokenIdentity {
            iss: ISS.into(),
            jti: Some("short".into()),
            ..Default::default()
        })
    };
    assert!(check(&server, identity()).await.revoked);
    eventually("the record to be purged", || async {
        !check(&server, identity()).await.revoked
    })
    .await;
    assert!(
        now() >= exp,
        "purged only once the token could no longer be accepted"
    );
    Ok(())
}

#[tokio::test]
async fn embedded_store_keeps_revocations_across_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let signer = key(Algorithm::ES256, "es");
    let config = || {
        let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
        file.store = StoreSection {
            backend: StoreBackend::Embedded,
            path: dir.path().join("state.redb"),
            ..StoreSection::default()
        };
        file
    };
    let token = mint(&signer, &claims(ISS));
    let server = Introspectd::start_ready(config()).await;
    server
        .revoke(Target::Token(pb::TokenTarget {
            token: token.clone(),
            token_type_hint: None,
        }))
        .await;
    server.revoke(Target::Subject(cutoff("user-9", None))).await;
    server.stop().await?;

    let server = Introspectd::start_ready(config()).await;
    assert_eq!(
        reason(&server.introspect(&token).await),
        InactiveReason::Revoked
    );
    let mut other = claims(ISS);
    other["sub"] = json!("user-9");
    other["iat"] = json!(now() - 5);
    assert_eq!(
        reason(&server.introspect(&mint(&signer, &other)).await),
        InactiveReason::Revoked
    );
    Ok(())
}

/// ECDSA signatures are malleable: (r, s) and (r, n − s) both verify. A revocation by
/// token must cover the re-signed variant too.
#[tokio::test]
async fn revoked_ecdsa_token_stays_revoked_when_its_signature_is_rewritten() -> TestResult {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    // Order of the P-256 group.
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let s = setup().await;
    let token = token_with(&s, json!({}));
    let (signed, signature) = token.rsplit_once('.').ok_or("no signature")?;
    let mut bytes = URL_SAFE_NO_PAD.decode(signature)?;
    // s := n - s (big-endian subtraction).
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let diff = i16::from(N[i]) - i16::from(bytes[32 + i]) - borrow;
        bytes[32 + i] = diff.rem_euclid(256) as u8;
        borrow = i16::from(diff < 0);
    }
    let twin = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert_ne!(twin, token);
    assert!(
        s.server.introspect(&twin).await.active,
        "the rewritten signature verifies"
    );

    s.server
        .revoke(Target::Token(pb::TokenTarget {
            token: token.clone(),
            token_type_hint: None,
        }))
        .await;
    assert_eq!(
        reason(&s.server.introspect(&token).await),
        InactiveReason::Revoked
    );
    assert_eq!(
        reason(&s.server.introspect(&twin).await),
        InactiveReason::Revoked
    );
    use pb::check_revocation_request::Subject;
    assert!(check(&s.server, Subject::Token(twin)).await.revoked);
    Ok(())
}

/// A Revoke from a newer client, whose target is a oneof member this version does not
/// know (field 9): the target is absent here, so the call is refused, not half-done.
#[tokio::test]
async fn revoke_with_an_unknown_target_is_invalid_argument() -> TestResult {
    #[derive(Clone, PartialEq, prost::Message)]
    struct FutureRevokeRequest {
        #[prost(string, tag = "9")]
        device_id: String,
    }
    let s = setup().await;
    let mut grpc = tonic::client::Grpc::new(s.server.channel().await);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<FutureRevokeRequest, pb::RevokeResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/introspectd.v1.TokenRevocation/Revoke");
    let request = with_key(
        ADMIN_KEY,
        FutureRevokeRequest {
            device_id: "phone-1".into(),
        },
    );
    let answer = grpc.unary(request, path, codec).await;
    assert_eq!(answer.err().map(|e| e.code()), Some(Code::InvalidArgument));
    Ok(())
}

#[tokio::test]
async fn watching_from_a_position_this_log_never_had_is_out_of_range() -> TestResult {
    let s = setup().await;
    let mut client = s.server.revocation().await;
    let answer = client
        .watch_revocations(with_key(
            READER_KEY,
            pb::WatchRevocationsRequest {
                after: Some("123456".into()),
            },
        ))
        .await;
    assert_eq!(answer.err().map(|e| e.code()), Some(Code::OutOfRange));
    Ok(())
}
