//! `introspectd.v1.TokenIntrospection`.

use std::sync::Arc;

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{
    convert::json_to_struct,
    pb::{
        self, InactiveReason, introspect_stream_response::Outcome,
        token_introspection_server::TokenIntrospection,
    },
    status,
};
use crate::auth::Caller;
use crate::binding::{self, Presentation};
use crate::introspect::{Introspection, Introspector};
use crate::signing::AnswerSigner;
use crate::telemetry::metrics::{Metrics, Surface};
use crate::token::{CallPolicy, Reason};

pub struct IntrospectionService {
    answerer: Arc<Answerer>,
}

/// What answers one IntrospectRequest, shared by the unary call and the streams.
struct Answerer {
    introspector: Arc<Introspector>,
    metrics: Arc<Metrics>,
    expose_inactive_reason: bool,
    signer: Option<Arc<AnswerSigner>>,
}

/// Requests of one stream answered at once; more wait in the stream (HTTP/2 flow
/// control then slows the caller down).
const STREAM_IN_FLIGHT: usize = 128;

impl IntrospectionService {
    pub fn new(
        introspector: Arc<Introspector>,
        metrics: Arc<Metrics>,
        expose_inactive_reason: bool,
        signer: Option<Arc<AnswerSigner>>,
    ) -> Self {
        Self {
            answerer: Arc::new(Answerer {
                introspector,
                metrics,
                expose_inactive_reason,
                signer,
            }),
        }
    }
}

type AnswerStream =
    Pin<Box<dyn Stream<Item = Result<pb::IntrospectStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TokenIntrospection for IntrospectionService {
    async fn introspect(
        &self,
        request: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        // The caller matters only to a signed answer (its `aud`).
        let caller = if request.get_ref().signed_answer {
            request.extensions().get::<Arc<Caller>>().cloned()
        } else {
            None
        };
        let answer = self
            .answerer
            .answer(request.into_inner(), caller.as_deref())
            .await?;
        Ok(Response::new(answer))
    }

    type IntrospectStreamStream = AnswerStream;

    async fn introspect_stream(
        &self,
        request: Request<Streaming<pb::IntrospectStreamRequest>>,
    ) -> Result<Response<AnswerStream>, Status> {
        let caller = request.extensions().get::<Arc<Caller>>().cloned();
        let answerer = self.answerer.clone();
        let answers = request
            .into_inner()
            .map(move |item| {
                let answerer = answerer.clone();
                let caller = caller.clone();
                async move {
                    let pb::IntrospectStreamRequest { id, request } = item?;
                    let outcome = match request {
                        None => Err(status::missing("request")),
                        Some(request) => answerer.answer(request, caller.as_deref()).await,
                    };
                    Ok(pb::IntrospectStreamResponse {
                        id,
                        outcome: Some(match outcome {
                            Ok(response) => Outcome::Response(response),
                            Err(status) => Outcome::Error(pb::CallError {
                                code: status.code() as i32,
                                message: status.message().to_owned(),
                            }),
                        }),
                    })
                }
            })
            .buffer_unordered(STREAM_IN_FLIGHT);
        Ok(Response::new(Box::pin(answers)))
    }
}

impl Answerer {
    async fn answer(
        &self,
        request: pb::IntrospectRequest,
        caller: Option<&Caller>,
    ) -> Result<pb::IntrospectResponse, Status> {
        // Exhaustive, so a new request field fails compilation here until it is handled.
        let pb::IntrospectRequest {
            token,
            token_type_hint: _,
            required_scopes,
            audience,
            dpop_proof,
            http_method,
            http_uri,
            client_certificate,
            dpop_scheme,
            signed_answer,
        } = request;
        if token.is_empty() {
            return Err(status::missing("token"));
        }
        let audience_of_answer = match (&self.signer, signed_answer) {
            (_, false) => None,
            (None, true) => {
                return Err(Status::failed_precondition(
                    "signed answers are not configured ([answer_signing])",
                ));
            }
            (Some(_), true) => Some(caller.map(|c| c.name.clone()).ok_or_else(|| {
                Status::unauthenticated(
                    "a signed answer names its audience: call with an API key or a client certificate",
                )
            })?),
        };
        let client_certificate = match client_certificate.as_deref() {
            None => None,
            Some(presented) => {
                Some(binding::certificate_thumbprint(presented).ok_or_else(|| {
                    Status::invalid_argument("client_certificate is neither DER nor a thumbprint")
                })?)
            }
        };
        let policy = CallPolicy {
            required_scopes: &required_scopes,
            audience: audience.as_deref().filter(|a| !a.is_empty()),
            presented: Presentation {
                dpop_proof: dpop_proof.as_deref().filter(|p| !p.is_empty()),
                dpop_scheme,
                http_method: http_method.as_deref(),
                http_uri: http_uri.as_deref(),
                client_certificate,
            },
        };
        let now = crate::unix_now();
        let answer = self
            .introspector
            .introspect(&token, policy, now)
            .await
            .map_err(status::from_introspect)?;
        self.metrics.record_answer(Surface::Grpc, &answer);
        // The call's one span (the server's, at debug): filled only when someone listens.
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("token.fingerprint", answer.fingerprint.as_str());
            match &answer.outcome {
                Ok(active) => {
                    span.record("iss", active.iss.as_str());
                    span.record("result", "active");
                }
                Err(rejection) => {
                    span.record("result", "inactive");
                    span.record("reason", rejection.reason.as_str());
                }
            }
        }
        let mut response = self.to_response(&answer);
        if let (Some(signer), Some(audience)) = (&self.signer, audience_of_answer) {
            let signed = signer
                .sign(&answer.rfc7662(), &audience, now)
                .map_err(|error| Status::internal(error.to_string()))?;
            response.signed_answer = Some(signed);
        }
        Ok(response)
    }
}

impl Answerer {
    fn to_response(&self, answer: &Introspection) -> pb::IntrospectResponse {
        let fingerprint = answer.fingerprint.to_string();
        let dpop_nonce = answer.dpop_nonce.clone();
        match &answer.outcome {
            Ok(token) => pb::IntrospectResponse {
                active: true,
                scope: token.scope_string(),
                client_id: token.client_id.clone(),
                username: token.username.clone(),
                token_type: Some(token.token_type().into()),
                exp: Some(token.exp),
                iat: token.iat,
                nbf: token.nbf,
                sub: token.sub.clone(),
                aud: token.aud.clone(),
                iss: Some(token.iss.clone()),
                jti: token.jti.clone(),
                claims: Some(json_to_struct(&token.other_claims)),
                enrichment: (!answer.enrichment.is_empty())
                    .then(|| json_to_struct(&answer.enrichment.merged())),
                fingerprint,
                inactive_reason: InactiveReason::Unspecified.into(),
                dpop_nonce,
                signed_answer: None,
            },
            Err(rejection) => pb::IntrospectResponse {
                active: false,
                fingerprint,
                inactive_reason: if self.expose_inactive_reason {
                    inactive_reason(rejection.reason).into()
                } else {
                    InactiveReason::Unspecified.into()
                },
                dpop_nonce,
                ..Default::default()
            },
        }
    }
}

pub fn inactive_reason(reason: Reason) -> InactiveReason {
    match reason {
        Reason::Expired => InactiveReason::Expired,
        Reason::Revoked => InactiveReason::Revoked,
        Reason::BadSignature => InactiveReason::BadSignature,
        Reason::UnknownIssuer => InactiveReason::UnknownIssuer,
        Reason::UnknownKey => InactiveReason::UnknownKey,
        Reason::WrongAudience => InactiveReason::WrongAudience,
        Reason::WrongTokenType => InactiveReason::WrongTokenType,
        Reason::NotYetValid => InactiveReason::NotYetValid,
        Reason::Malformed => InactiveReason::Malformed,
        Reason::InsufficientScope => InactiveReason::InsufficientScope,
        Reason::InactiveAtIssuer => InactiveReason::InactiveAtIssuer,
        Reason::DpopProofRequired => InactiveReason::DpopProofRequired,
        Reason::DpopProofInvalid => InactiveReason::DpopProofInvalid,
        Reason::DpopNonceRequired => InactiveReason::DpopNonceRequired,
        Reason::CertificateMismatch => InactiveReason::CertificateMismatch,
    }
}
