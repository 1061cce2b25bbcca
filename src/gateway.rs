//! The decision a gateway asks for ("may this request pass?"), independent of how it
//! asks: Envoy's ext_authz (`grpc/ext_authz.rs`) and HTTP forward-auth (`/authz` in
//! `http.rs`) only translate requests into [`GatewayRequest`] and [`Decision`] into
//! their answers.
//!
//! Denials follow RFC 6750 section 3: no token is 401 with `WWW-Authenticate: Bearer
//! realm=".."` and no error; an inactive token is 401 with `error="invalid_token"`;
//! missing scopes are 403 with `error="insufficient_scope"` and the scopes needed.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value};

use crate::introspect::Introspection;
use crate::token::Reason;

/// An answer header for the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamHeader {
    /// `x-introspectd-sub`
    Sub,
    /// `x-introspectd-client-id`
    ClientId,
    /// `x-introspectd-scope`: the scopes, space-separated.
    Scope,
    /// `x-introspectd-claims`: the RFC 7662 answer with its enrichment, as base64url
    /// JSON.
    Claims,
}

impl UpstreamHeader {
    pub const ALL: [UpstreamHeader; 4] = [Self::Sub, Self::ClientId, Self::Scope, Self::Claims];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sub => "x-introspectd-sub",
            Self::ClientId => "x-introspectd-client-id",
            Self::Scope => "x-introspectd-scope",
            Self::Claims => "x-introspectd-claims",
        }
    }
}

/// How answers to gateways look.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `realm` of `WWW-Authenticate`.
    pub realm: String,
    /// The request header that carries the token (lower case).
    pub token_header: String,
    /// Headers added to the upstream request of an allowed call.
    pub upstream_headers: Vec<UpstreamHeader>,
    /// Drop the token header from the upstream request (ext_authz).
    pub remove_token_header: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            realm: "introspectd".into(),
            token_header: "authorization".into(),
            upstream_headers: UpstreamHeader::ALL.to_vec(),
            remove_token_header: false,
        }
    }
}

/// What one route requires beyond the issuer's rules (Envoy's `context_extensions`,
/// forward-auth query parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    pub required_scopes: Vec<String>,
    pub audience: Option<String>,
}

/// The decision, for the gateway to enact.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        /// Headers for the upstream request: every configured one, empty where the
        /// token has no such value, so a client can never pass its own under that name.
        headers: Vec<(&'static str, String)>,
        /// The answer's claims, for the gateway's later filters (Envoy's RBAC, logs).
        claims: Map<String, Value>,
    },
    Deny {
        /// 401 or 403.
        status: u16,
        www_authenticate: String,
    },
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case), or
/// `None` for anything else.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Settings {
    /// No token in the request.
    pub fn missing_token(&self) -> Decision {
        Decision::Deny {
            status: 401,
            www_authenticate: format!("Bearer realm=\"{}\"", self.realm),
        }
    }

    /// The decision for an introspected token.
    pub fn decide(&self, answer: &Introspection, route: &RoutePolicy) -> Decision {
        let token = match &answer.outcome {
            Ok(token) => token,
            Err(rejection) if rejection.reason == Reason::InsufficientScope => {
                return Decision::Deny {
                    status: 403,
                    www_authenticate: format!(
                        "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"",
                        self.realm,
                        route.required_scopes.join(" ")
                    ),
                };
            }
            Err(_) => {
                return Decision::Deny {
                    status: 401,
                    www_authenticate: format!(
                        "Bearer realm=\"{}\", error=\"invalid_token\"",
                        self.realm
                    ),
                };
            }
        };
        let claims = match answer.rfc7662() {
            Value::Object(claims) => claims,
            _ => Map::new(),
        };
        let mut headers = Vec::with_capacity(self.upstream_headers.len());
        for header in &self.upstream_headers {
            let value = match header {
                UpstreamHeader::Sub => token.sub.clone(),
                UpstreamHeader::ClientId => token.client_id.clone(),
                UpstreamHeader::Scope => token.scope_string(),
                UpstreamHeader::Claims => serde_json::to_vec(&claims)
                    .ok()
                    .map(|json| URL_SAFE_NO_PAD.encode(json)),
            };
            headers.push((header.name(), value.unwrap_or_default()));
        }
        Decision::Allow { headers, claims }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_value_carries_a_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
