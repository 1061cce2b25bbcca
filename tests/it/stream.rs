//! IntrospectStream: many answers on one stream, matched by id, revocation applied, and
//! a request that cannot be answered failing alone.

use std::collections::HashMap;

use introspectd::grpc::pb::{self, introspect_stream_response::Outcome};
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::support::*;

const ISS: &str = "https://stream.test/";

pub(crate) fn ask(id: u64, token: &str) -> pb::IntrospectStreamRequest {
    pb::IntrospectStreamRequest {
        id,
        request: Some(pb::IntrospectRequest {
            token: token.to_owned(),
            ..Default::default()
        }),
    }
}

pub(crate) async fn answers(
    server: &Introspectd,
    key: Option<&str>,
    requests: Vec<pb::IntrospectStreamRequest>,
) -> Result<HashMap<u64, Outcome>, tonic::Status> {
    let expected = requests.len();
    let outbound = tokio_stream::iter(requests);
    let request = match key {
        Some(key) => with_key(key, outbound),
        None => tonic::Request::new(outbound),
    };
    let mut inbound = server
        .client()
        .await
        .introspect_stream(request)
        .await?
        .into_inner();
    let mut out = HashMap::new();
    while out.len() < expected {
        let Some(answer) = inbound.message().await? else {
            break;
        };
        if let Some(outcome) = answer.outcome {
            out.insert(answer.id, outcome);
        }
    }
    Ok(out)
}

fn active(outcome: Option<&Outcome>) -> Option<bool> {
    match outcome {
        Some(Outcome::Response(response)) => Some(response.active),
        _ => None,
    }
}

#[tokio::test]
async fn one_stream_answers_many_tokens_by_id() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.auth.anonymous_introspect = false;
    let server = Introspectd::start_ready(file).await;
    let good = mint(&signer, &claims(ISS));
    let mut old = claims(ISS);
    old["exp"] = json!(now() - 3600);
    let expired = mint(&signer, &old);
    let mut revoked_claims = claims(ISS);
    revoked_claims["jti"] = json!("streamed-and-revoked");
    let revoked = mint(&signer, &revoked_claims);
    server
        .revoke(pb::revoke_request::Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "streamed-and-revoked".into(),
            exp: None,
        }))
        .await;

    let mut requests = vec![
        ask(7, &good),
        ask(8, &expired),
        ask(9, ""),
        ask(10, &revoked),
    ];
    // Many more of the same token, to see answers come back for every id.
    requests.extend((100..600).map(|id| ask(id, &good)));
    let got = answers(&server, Some(READER_KEY), requests).await?;
    assert_eq!(got.len(), 504);
    assert_eq!(active(got.get(&7)), Some(true));
    assert_eq!(active(got.get(&8)), Some(false));
    assert_eq!(
        active(got.get(&10)),
        Some(false),
        "revocation applies on streams too"
    );
    match got.get(&9) {
        Some(Outcome::Error(error)) => assert_eq!(error.code, tonic::Code::InvalidArgument as i32),
        other => unreachable!("an empty token must fail alone: {other:?}"),
    }
    assert!((100..600).all(|id| active(got.get(&id)) == Some(true)));

    // Without a key the stream is refused as a whole.
    let refused = answers(&server, None, vec![ask(1, &good)]).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    assert!(
        server
            .metric("introspectd_requests_total{method=\"IntrospectStream\",code=\"OK\"}")
            .await
            >= 1.0
    );
    server.stop().await?;
    Ok(())
}

/// Answers come as they are ready: a slow opaque token (its issuer's endpoint takes a
/// second) is answered after the JWTs sent behind it, and an opaque token whose issuer
/// cannot be reached fails alone with UNAVAILABLE while the stream goes on.
#[tokio::test]
async fn a_slow_or_failing_request_holds_up_no_other() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let (slow_endpoint, _idp) = crate::limits::slow_idp(std::time::Duration::from_secs(1)).await;
    let unreachable = format!("http://{}/introspect", free_addr());
    let good = mint(&signer, &claims(ISS));
    for (endpoint, slow) in [(slow_endpoint, true), (unreachable, false)] {
        let server =
            Introspectd::start_ready(file_config(vec![introspectd::config::IssuerSection {
                introspection_endpoint: Some(endpoint),
                ..inline_issuer(ISS, &signer)
            }]))
            .await;
        let mut requests = vec![ask(1, "an-opaque-token")];
        requests.extend((2..=5).map(|id| ask(id, &good)));
        let mut inbound = server
            .client()
            .await
            .introspect_stream(tokio_stream::iter(requests))
            .await?
            .into_inner();
        let mut order = Vec::new();
        let mut opaque = None;
        while order.len() < 5 {
            let Some(answer) = inbound.message().await? else {
                break;
            };
            order.push(answer.id);
            if answer.id == 1 {
                opaque = answer.outcome;
            } else {
                assert_eq!(active(answer.outcome.as_ref()), Some(true));
            }
        }
        assert_eq!(order.len(), 5, "every id answered: {order:?}");
        if slow {
            assert_eq!(
                order.last(),
                Some(&1),
                "the slow token comes last: {order:?}"
            );
            assert!(matches!(opaque, Some(Outcome::Response(_))), "{opaque:?}");
        } else {
            match opaque {
                Some(Outcome::Error(error)) => {
                    assert_eq!(error.code, tonic::Code::Unavailable as i32);
                }
                other => unreachable!("an unreachable issuer fails alone: {other:?}"),
            }
        }
        server.stop().await?;
    }
    Ok(())
}

/// The README's "up to 128 of a stream at once": with 128 slow opaque tokens in flight a
/// JWT sent behind them waits for a slot (an opaque answer comes first); with 127 it
/// takes the free slot and is answered first.
#[tokio::test]
async fn a_stream_answers_up_to_128_requests_at_once() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let (slow_endpoint, idp) = crate::limits::slow_idp(std::time::Duration::from_secs(2)).await;
    let good = mint(&signer, &claims(ISS));
    let server = Introspectd::start_ready(file_config(vec![introspectd::config::IssuerSection {
        introspection_endpoint: Some(slow_endpoint),
        introspection_timeout_ms: 30_000,
        // Above the stream's own limit, so that the stream's is the one met.
        max_outbound_concurrency: 512,
        max_outbound_per_second: 10_000,
        ..inline_issuer(ISS, &signer)
    }]))
    .await;
    for (slow, jwt_first) in [(128_u64, false), (127, true)] {
        let mut requests: Vec<_> = (1..=slow)
            .map(|id| ask(id, &format!("opaque-{slow}-{id}")))
            .collect();
        let jwt_id = 1_000;
        requests.push(ask(jwt_id, &good));
        let mut inbound = server
            .client()
            .await
            .introspect_stream(tokio_stream::iter(requests))
            .await?
            .into_inner();
        let first = inbound.message().await?.map(|answer| answer.id);
        assert_eq!(
            first == Some(jwt_id),
            jwt_first,
            "{slow} slow requests in flight, first answer: {first:?}"
        );
        let mut answered = 1;
        while inbound.message().await?.is_some() {
            answered += 1;
            if answered == slow + 1 {
                break;
            }
        }
        assert_eq!(answered, slow + 1, "every request is answered");
    }
    assert_eq!(
        idp.calls.load(std::sync::atomic::Ordering::SeqCst),
        255,
        "each opaque token went to its issuer once"
    );
    server.stop().await?;
    Ok(())
}

/// An open stream with one request in flight: an opaque token whose issuer answers in
/// 700 ms.
struct SlowStream {
    server: Introspectd,
    requests: tokio::sync::mpsc::Sender<pb::IntrospectStreamRequest>,
    inbound: tonic::Streaming<pb::IntrospectStreamResponse>,
    _idp: std::sync::Arc<crate::limits::SlowIdp>,
}

impl SlowStream {
    async fn open(shutdown_grace_secs: u64) -> Result<Self, Box<dyn std::error::Error>> {
        let signer = key(Algorithm::ES256, "es");
        let (slow_endpoint, idp) =
            crate::limits::slow_idp(std::time::Duration::from_millis(700)).await;
        let mut file = file_config(vec![introspectd::config::IssuerSection {
            introspection_endpoint: Some(slow_endpoint),
            ..inline_issuer(ISS, &signer)
        }]);
        file.server.shutdown_grace_secs = shutdown_grace_secs;
        let server = Introspectd::start_ready(file).await;
        let (requests, outbound) = tokio::sync::mpsc::channel(4);
        let inbound = server
            .client()
            .await
            .introspect_stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
            .await?
            .into_inner();
        requests.send(ask(1, "a-slow-opaque-token")).await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Ok(Self {
            server,
            requests,
            inbound,
            _idp: idp,
        })
    }

    /// The answer in flight comes first; then how the stream ended.
    async fn answer_then_end(&mut self) -> Result<Option<tonic::Status>, tonic::Status> {
        let first = self.inbound.message().await?;
        assert_eq!(
            first.map(|answer| answer.id),
            Some(1),
            "the answer in flight"
        );
        Ok(self.inbound.message().await.err())
    }
}

/// A message that cannot be read (here: over `max_request_bytes`) has no id to answer
/// alone: the stream takes no more requests, sends the answers in flight, then ends with
/// that message's error.
#[tokio::test]
async fn an_unreadable_message_ends_the_stream_after_the_answers_in_flight() -> TestResult {
    let mut stream = SlowStream::open(5).await?;
    stream.requests.send(ask(2, &"x".repeat(200_000))).await?;
    let ended = stream.answer_then_end().await?;
    assert_eq!(
        ended.map(|status| status.code()),
        Some(tonic::Code::OutOfRange),
        "then the unreadable message's error"
    );
    Ok(())
}

/// At shutdown a stream takes no more requests, sends the answers in flight and ends
/// with UNAVAILABLE at once, rather than holding shutdown for its whole grace.
#[tokio::test]
async fn a_stream_ends_when_the_server_drains() -> TestResult {
    let mut stream = SlowStream::open(30).await?;
    stream.server.begin_stop();
    let status = stream.answer_then_end().await?;
    assert_eq!(
        status.as_ref().map(tonic::Status::code),
        Some(tonic::Code::Unavailable),
        "{status:?}"
    );
    assert!(
        status.is_some_and(|status| status.message().contains("shutting down")),
        "ended by the drain, not cut at the end of the grace"
    );
    stream.server.join().await?;
    Ok(())
}
