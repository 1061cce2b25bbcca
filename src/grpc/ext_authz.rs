//! Envoy's external authorization, `envoy.service.auth.v3.Authorization/Check`: the
//! gateway decision ([`crate::gateway`]) for the request Envoy describes. The token comes
//! from the configured header, the route's policy from `context_extensions`
//! (`required_scopes`, space-separated, and `audience`). When introspectd cannot decide
//! the call fails with `UNAVAILABLE`, so Envoy's `failure_mode_allow` decides.
//!
//! Served by hand rather than by the generated server, like `TokenIntrospection`: an
//! allow for a token whose answer does not vary by call is encoded once and kept with it.

use std::{collections::HashMap, sync::Arc};

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::{protobuf::Struct as EnvoyStruct, rpc};
use prost::Message;
use tonic::{
    Request, Response, Status,
    server::{NamedService, UnaryService},
};

use super::{
    check_request::CheckRequest,
    codec::Encoded,
    convert::json_to_struct,
    served::{Answered, BoxFuture, HandWritten, encoded_grpc},
    status,
};
use crate::binding;
use crate::gateway::{self, Decision, GatewayRequest, RoutePolicy};
use crate::introspect::Introspector;
use crate::telemetry::metrics::{Metrics, Surface};
use crate::token::CallPolicy;

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

#[derive(Clone)]
pub struct ExtAuthzService {
    decider: Arc<Decider>,
    max_request_bytes: usize,
}

/// What answers one CheckRequest.
struct Decider {
    introspector: Arc<Introspector>,
    metrics: Arc<Metrics>,
    settings: Arc<gateway::Settings>,
}

impl ExtAuthzService {
    pub fn new(
        introspector: Arc<Introspector>,
        metrics: Arc<Metrics>,
        settings: Arc<gateway::Settings>,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            decider: Arc::new(Decider {
                introspector,
                metrics,
                settings,
            }),
            max_request_bytes,
        }
    }
}

impl NamedService for ExtAuthzService {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl HandWritten for ExtAuthzService {
    fn call<B>(&self, request: http::Request<B>) -> Option<Answered>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        if request.uri().path() != CHECK {
            return None;
        }
        let handler = Handler(self.decider.clone());
        let max = self.max_request_bytes;
        Some(Box::pin(async move {
            let mut grpc = encoded_grpc::<CheckRequest, Encoded>(max);
            Ok(grpc.unary(handler, request).await)
        }))
    }
}

struct Handler(Arc<Decider>);

impl UnaryService<CheckRequest> for Handler {
    type Response = Encoded;
    type Future = BoxFuture<Result<Response<Encoded>, Status>>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        let decider = self.0.clone();
        Box::pin(async move { decider.check(request.into_inner()).await.map(Response::new) })
    }
}

/// The route's requirements, as set in Envoy's per-route `context_extensions`.
fn route_policy(extensions: &HashMap<String, String>) -> RoutePolicy {
    RoutePolicy {
        required_scopes: extensions
            .get("required_scopes")
            .map(|scopes| scopes.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        audience: extensions
            .get("audience")
            .filter(|audience| !audience.is_empty())
            .cloned(),
    }
}

impl Decider {
    async fn check(&self, request: CheckRequest) -> Result<Encoded, Status> {
        let attributes = request.attributes.unwrap_or_default();
        let http = attributes
            .request
            .and_then(|request| request.http)
            .unwrap_or_default();
        if let Err(error) = http.check_utf8() {
            tracing::debug!(detail = %error, "a message that does not decode");
            return Err(Status::invalid_argument(status::NOT_PROTOBUF));
        }
        let route = route_policy(&attributes.context_extensions);
        // Envoy's own view of the client's certificate first (`include_peer_certificate`),
        // else the header a trusted proxy in front of Envoy set.
        let source_certificate = attributes
            .source
            .as_ref()
            .map(|source| source.certificate.as_str())
            .filter(|pem| !pem.is_empty());
        let certificate_header = match source_certificate {
            Some(_) => None,
            None => (self.settings.client_certificate_header.as_ref())
                .and_then(|name| http.header(name)),
        };
        let client_certificate = source_certificate
            .or(certificate_header.as_deref())
            .and_then(binding::certificate_from_header);
        let dpop = http.header("dpop");
        // Only a DPoP proof is checked against the URI: built for those requests alone.
        let uri = dpop.as_ref().and_then(|_| {
            gateway::absolute_uri(Some(http.scheme()), Some(http.host()), Some(http.path()))
        });
        let authorization = http.header(&self.settings.token_header);
        let described = GatewayRequest {
            authorization: authorization.as_deref(),
            dpop: dpop.as_deref(),
            method: Some(http.method()).filter(|m| !m.is_empty()),
            uri: uri.as_deref(),
            client_certificate,
        };
        let answer = match described.presented() {
            None => {
                return Ok(Encoded::of(
                    &self.to_response(self.settings.missing_token()),
                ));
            }
            Some((token, presented)) => {
                let policy = CallPolicy {
                    required_scopes: &route.required_scopes,
                    audience: route.audience.as_deref(),
                    presented,
                };
                let answer = self
                    .introspector
                    .introspect(token, policy, crate::unix_now())
                    .await
                    .map_err(status::from_introspect)?;
                self.metrics.record_answer(Surface::Grpc, &answer);
                answer
            }
        };
        // A refusal is made per call (it may name the route's scopes); an allow may be kept.
        let response = match &answer.outcome {
            Ok(token) => answer.encoded_allow(|answer| {
                let allow = self.settings.allow(answer, token);
                self.to_response(allow).encode_to_vec().into()
            }),
            Err(_) => self
                .to_response(self.settings.decide(&answer, &route))
                .encode_to_vec()
                .into(),
        };
        Ok(Encoded(response))
    }
}

fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        // What the gateway sets replaces anything the client sent under that name.
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..Default::default()
    }
}

impl Decider {
    fn to_response(&self, decision: Decision) -> CheckResponse {
        match decision {
            Decision::Allow { headers, claims } => {
                // A header without a value is removed rather than set empty: a client
                // must not pass its own under that name, and Envoy keeps an empty value.
                let mut headers_to_remove = Vec::new();
                if self.settings.remove_token_header {
                    headers_to_remove.push(self.settings.token_header.clone());
                }
                let mut set = Vec::with_capacity(headers.len());
                for (name, value) in headers {
                    if value.is_empty() {
                        headers_to_remove.push(name.to_owned());
                    } else {
                        set.push(header(name, value));
                    }
                }
                CheckResponse {
                    status: Some(rpc::Status::default()),
                    // The same wire format as prost's Struct: one conversion, one place.
                    dynamic_metadata: EnvoyStruct::decode(
                        json_to_struct(&claims).encode_to_vec().as_slice(),
                    )
                    .ok(),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: set,
                        headers_to_remove,
                        ..Default::default()
                    })),
                }
            }
            Decision::Deny {
                status,
                www_authenticate,
                dpop_nonce,
            } => CheckResponse {
                status: Some(rpc::Status {
                    code: if status == 403 {
                        tonic::Code::PermissionDenied
                    } else {
                        tonic::Code::Unauthenticated
                    } as i32,
                    ..Default::default()
                }),
                dynamic_metadata: None,
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(status),
                    }),
                    headers: std::iter::once(header("www-authenticate", www_authenticate))
                        .chain(dpop_nonce.map(|nonce| header("dpop-nonce", nonce)))
                        .collect(),
                    body: String::new(),
                })),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_policy_comes_from_context_extensions() {
        let extensions = HashMap::from([
            (
                "required_scopes".to_owned(),
                "orders:read  orders:write".to_owned(),
            ),
            ("audience".to_owned(), "orders-api".to_owned()),
        ]);
        assert_eq!(
            route_policy(&extensions),
            RoutePolicy {
                required_scopes: vec!["orders:read".into(), "orders:write".into()],
                audience: Some("orders-api".into()),
            }
        );
        assert_eq!(route_policy(&HashMap::new()), RoutePolicy::default());
    }
}
