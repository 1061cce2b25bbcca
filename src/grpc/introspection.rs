//! `introspectd.v1.TokenIntrospection`, served by hand rather than by the generated
//! server: its answers go out as [`Encoded`] bytes, so an answer kept with its cached
//! token is neither rebuilt nor re-encoded on each call. The wire format is the proto's.

use std::{pin::Pin, sync::Arc};

use bytes::{Buf, BufMut, Bytes};
use futures_util::{Stream, StreamExt};
use prost::{
    DecodeError, Message,
    encoding::{
        DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len, uint64,
    },
};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Response, Status, Streaming,
    server::{NamedService, StreamingService, UnaryService},
};

use super::{
    codec::Encoded,
    convert::json_to_struct,
    pb::{self, InactiveReason},
    served::{Answered, BoxFuture, HandWritten, encoded_grpc},
    status,
};
use crate::auth::{Admission, Caller};
use crate::binding::{self, Presentation};
use crate::introspect::{Introspection, Introspector};
use crate::signing::AnswerSigner;
use crate::telemetry::metrics::{Metrics, Surface};
use crate::token::{CallPolicy, Reason};

const INTROSPECT: &str = "/introspectd.v1.TokenIntrospection/Introspect";
const INTROSPECT_STREAM: &str = "/introspectd.v1.TokenIntrospection/IntrospectStream";

/// The `IntrospectStreamResponse` fields `id` and `response`
/// (proto/introspectd/v1/introspection.proto).
const STREAM_ID_FIELD: u32 = 1;
const STREAM_RESPONSE_FIELD: u32 = 2;

#[derive(Clone)]
pub struct IntrospectionService {
    answerer: Arc<Answerer>,
    max_request_bytes: usize,
    /// Fires when the server drains: open streams take no more requests, answer those
    /// in flight and end, so shutdown does not wait out its grace for them.
    drain: CancellationToken,
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
        max_request_bytes: usize,
        drain: CancellationToken,
    ) -> Self {
        Self {
            answerer: Arc::new(Answerer {
                introspector,
                metrics,
                expose_inactive_reason,
                signer,
            }),
            max_request_bytes,
            drain,
        }
    }
}

impl NamedService for IntrospectionService {
    const NAME: &'static str = "introspectd.v1.TokenIntrospection";
}

impl HandWritten for IntrospectionService {
    fn call<B>(&self, request: http::Request<B>) -> Option<Answered>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        let handler = Handler(self.answerer.clone(), self.drain.clone());
        let max = self.max_request_bytes;
        Some(match request.uri().path() {
            INTROSPECT => Box::pin(async move {
                let mut grpc = encoded_grpc::<pb::IntrospectRequest, Encoded>(max);
                Ok(grpc.unary(handler, request).await)
            }),
            INTROSPECT_STREAM => Box::pin(async move {
                let mut grpc = encoded_grpc::<pb::IntrospectStreamRequest, StreamAnswer>(max);
                Ok(grpc.streaming(handler, request).await)
            }),
            _ => return None,
        })
    }
}

#[derive(Clone)]
struct Handler(Arc<Answerer>, CancellationToken);

impl UnaryService<pb::IntrospectRequest> for Handler {
    type Response = Encoded;
    type Future = BoxFuture<Result<Response<Encoded>, Status>>;

    fn call(&mut self, request: Request<pb::IntrospectRequest>) -> Self::Future {
        let answerer = self.0.clone();
        Box::pin(async move {
            // The caller matters only to a signed answer (its `aud`).
            let caller = if request.get_ref().signed_answer {
                request.extensions().get::<Arc<Caller>>().cloned()
            } else {
                None
            };
            let answer = answerer
                .answer(request.into_inner(), caller.as_deref())
                .await?;
            Ok(Response::new(answer))
        })
    }
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<StreamAnswer, Status>> + Send>>;

impl StreamingService<pb::IntrospectStreamRequest> for Handler {
    type Response = StreamAnswer;
    type ResponseStream = AnswerStream;
    type Future = BoxFuture<Result<Response<AnswerStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<pb::IntrospectStreamRequest>>) -> Self::Future {
        let caller = request.extensions().get::<Arc<Caller>>().cloned();
        let admission = request.extensions().get::<Arc<Admission>>().cloned();
        let answerer = self.0.clone();
        let drain = self.1.clone();
        // Why the stream takes no more requests, if not because the caller ended it: a
        // message that cannot be read (its id unknown, it cannot be answered alone), the
        // caller's key removed, or shutdown. The answers in flight are sent first.
        let ended = Arc::new(std::sync::Mutex::new(None::<Status>));
        let end = |ended: &std::sync::Mutex<Option<Status>>, status: Status| {
            if let Ok(mut ended) = ended.lock() {
                ended.get_or_insert(status);
            }
        };
        let requests = {
            let ended = ended.clone();
            request
                .into_inner()
                .take_until(drain.clone().cancelled_owned())
                .scan((), move |(), item| {
                    // A key removed since the stream opened gets no more answers.
                    let admitted = admission.as_ref().map_or(Ok(()), |a| a.still_admitted());
                    let next = match (admitted, item) {
                        (Err(refused), _) => {
                            end(&ended, super::layers::denied(refused));
                            None
                        }
                        (Ok(()), Err(status)) => {
                            end(&ended, status);
                            None
                        }
                        (Ok(()), Ok(request)) => Some(request),
                    };
                    std::future::ready(next)
                })
        };
        let answers = requests
            .map(move |pb::IntrospectStreamRequest { id, request }| {
                let answerer = answerer.clone();
                let caller = caller.clone();
                async move {
                    let outcome = match request {
                        None => Err(status::missing("request")),
                        Some(request) => answerer.answer(request, caller.as_deref()).await,
                    };
                    Ok(stream_response(id, outcome))
                }
            })
            .buffer_unordered(STREAM_IN_FLIGHT);
        let last = futures_util::stream::once(async move {
            let ended = ended.lock().ok().and_then(|mut ended| ended.take());
            ended.or_else(|| {
                drain
                    .is_cancelled()
                    .then(|| Status::unavailable("the server is shutting down; open a new stream"))
            })
        })
        .filter_map(|ended| std::future::ready(ended.map(Err)));
        let answers = answers.chain(last);
        Box::pin(async move { Ok(Response::new(Box::pin(answers) as AnswerStream)) })
    }
}

/// One `IntrospectStreamResponse` as it goes on the wire: an answer's bytes (kept with
/// its token, most often) are written into the message as its `response` field as they
/// are, neither decoded nor first copied into a buffer of its own.
#[derive(Debug, Clone)]
enum StreamAnswer {
    Answered {
        id: u64,
        answer: Bytes,
    },
    /// A request that could not be answered: the whole message (`id`, `error`), encoded.
    Failed(Bytes),
}

fn stream_response(id: u64, outcome: Result<Encoded, Status>) -> StreamAnswer {
    match outcome {
        Ok(Encoded(answer)) => StreamAnswer::Answered { id, answer },
        Err(status) => {
            let failed = pb::IntrospectStreamResponse {
                id,
                outcome: Some(pb::introspect_stream_response::Outcome::Error(
                    pb::CallError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    },
                )),
            };
            StreamAnswer::Failed(failed.encode_to_vec().into())
        }
    }
}

/// Encodes as prost encodes `IntrospectStreamResponse` (fields in number order, a zero
/// `id` left out); only ever encoded, like [`Encoded`].
impl Message for StreamAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            StreamAnswer::Answered { id, answer } => {
                if *id != 0 {
                    uint64::encode(STREAM_ID_FIELD, id, buf);
                }
                encode_key(STREAM_RESPONSE_FIELD, WireType::LengthDelimited, buf);
                encode_varint(answer.len() as u64, buf);
                buf.put_slice(answer);
            }
            StreamAnswer::Failed(message) => buf.put_slice(message),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            StreamAnswer::Answered { id, answer } => {
                let id = if *id != 0 {
                    uint64::encoded_len(STREAM_ID_FIELD, id)
                } else {
                    0
                };
                id + key_len(STREAM_RESPONSE_FIELD)
                    + encoded_len_varint(answer.len() as u64)
                    + answer.len()
            }
            StreamAnswer::Failed(message) => message.len(),
        }
    }

    fn clear(&mut self) {
        *self = StreamAnswer::Failed(Bytes::new());
    }
}

impl Answerer {
    async fn answer(
        &self,
        request: pb::IntrospectRequest,
        caller: Option<&Caller>,
    ) -> Result<Encoded, Status> {
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
            // Empty is absent, as the HTTP form has it.
            None | Some([]) => None,
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
                scheme: if dpop_scheme {
                    binding::Scheme::Dpop
                } else {
                    binding::Scheme::Unstated
                },
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
        if let (Some(signer), Some(audience)) = (&self.signer, audience_of_answer) {
            let signed = signer
                .sign(&answer.rfc7662(), &audience, now)
                .map_err(|error| Status::internal(error.to_string()))?;
            let mut response = answer_message(&answer, self.expose_inactive_reason);
            response.signed_answer = Some(signed);
            return Ok(Encoded::of(&response));
        }
        Ok(Encoded(answer.encoded_answer(|answer| {
            answer_message(answer, self.expose_inactive_reason)
                .encode_to_vec()
                .into()
        })))
    }
}

/// The IntrospectResponse of an answer; the inactive reason only where the operator
/// exposes it.
pub fn answer_message(
    answer: &Introspection,
    expose_inactive_reason: bool,
) -> pb::IntrospectResponse {
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
            inactive_reason: if expose_inactive_reason {
                inactive_reason(rejection.reason).into()
            } else {
                InactiveReason::Unspecified.into()
            },
            dpop_nonce,
            ..Default::default()
        },
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

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    /// The service is written by hand, so the compiler no longer says when the proto
    /// grows a method or renumbers the stream's `response`: this test does.
    #[test]
    fn the_hand_written_service_serves_what_the_proto_declares() {
        let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let (file, service) = set
            .file
            .iter()
            .find_map(|file| {
                let service = file
                    .service
                    .iter()
                    .find(|s| s.name() == "TokenIntrospection");
                service.map(|service| (file, service))
            })
            .unwrap_or_else(|| unreachable!("no TokenIntrospection in the descriptors"));
        let paths: Vec<String> = service
            .method
            .iter()
            .map(|m| format!("/{}/{}", IntrospectionService::NAME, m.name()))
            .collect();
        assert_eq!(paths, [INTROSPECT, INTROSPECT_STREAM]);
        let fields = &file
            .message_type
            .iter()
            .find(|m| m.name() == "IntrospectStreamResponse")
            .unwrap_or_else(|| unreachable!("no IntrospectStreamResponse"))
            .field;
        let number = |name: &str| fields.iter().find(|f| f.name() == name).map(|f| f.number());
        assert_eq!(number("id"), Some(STREAM_ID_FIELD as i32));
        assert_eq!(number("response"), Some(STREAM_RESPONSE_FIELD as i32));
    }

    /// A stream message written around the kept answer's bytes is, byte for byte, what
    /// prost writes for the same `IntrospectStreamResponse`.
    #[test]
    fn a_stream_answer_is_encoded_as_prost_encodes_it() {
        let answer = pb::IntrospectResponse {
            active: true,
            sub: Some("user-1".into()),
            fingerprint: "0123456789abcdef".into(),
            ..Default::default()
        };
        for id in [0, 7, 300, u64::MAX] {
            let written = stream_response(id, Ok(Encoded::of(&answer)));
            let by_prost = pb::IntrospectStreamResponse {
                id,
                outcome: Some(pb::introspect_stream_response::Outcome::Response(
                    answer.clone(),
                )),
            };
            assert_eq!(written.encoded_len(), by_prost.encoded_len(), "id {id}");
            assert_eq!(written.encode_to_vec(), by_prost.encode_to_vec(), "id {id}");
        }
        let failed = stream_response(8, Err(Status::invalid_argument("no token")));
        let decoded = pb::IntrospectStreamResponse::decode(failed.encode_to_vec().as_slice())
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(decoded.id, 8);
        assert!(matches!(
            decoded.outcome,
            Some(pb::introspect_stream_response::Outcome::Error(
                pb::CallError { code: 3, .. }
            ))
        ));
    }
}
