//! The decision a gateway asks for ("may this request pass?"), independent of how it
//! asks: Envoy's ext_authz (`grpc/ext_authz.rs`) and HTTP forward-auth (`/authz` in
//! `http.rs`) only translate requests into [`GatewayRequest`] and [`Decision`] into
//! their answers.
//!
//! Denials follow RFC 6750 section 3: no token is 401 with `WWW-Authenticate: Bearer
//! realm=".."` and no error; an inactive token is 401 with `error="invalid_token"`;
//! missing scopes are 403 with `error="insufficient_scope"` and the scopes needed.
//! Sender-constrained tokens follow RFC 9449 section 7.1: a DPoP-bound token without a
//! good proof is 401 with a `DPoP` challenge (`error="invalid_dpop_proof"`, or
//! `error="use_dpop_nonce"` and a `DPoP-Nonce` header), listing the accepted `algs`.

use std::borrow::Cow;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value};

use crate::binding::Scheme;
use crate::introspect::Introspection;
use crate::token::{AccessToken, Reason};

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
    /// The header a gateway puts the client certificate in (lower case), if trusted.
    pub client_certificate_header: Option<String>,
    /// The DPoP proof algorithms accepted, space-separated, for `algs` in challenges.
    pub dpop_algorithms: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            realm: "introspectd".into(),
            token_header: "authorization".into(),
            upstream_headers: UpstreamHeader::ALL.to_vec(),
            remove_token_header: false,
            client_certificate_header: None,
            dpop_algorithms: String::new(),
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
        /// A `DPoP-Nonce` for the client's next proof.
        dpop_nonce: Option<String>,
    },
}

/// The request a gateway describes, as far as the decision needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayRequest<'a> {
    /// The value of the token header (`Bearer <token>` or `DPoP <token>`).
    pub authorization: Option<&'a str>,
    /// The `DPoP` header.
    pub dpop: Option<&'a str>,
    pub method: Option<&'a str>,
    /// The absolute URI the client asked for.
    pub uri: Option<&'a str>,
    /// SHA-256 of the client's TLS certificate, where the gateway passed it on.
    pub client_certificate: Option<[u8; 32]>,
}

impl<'a> GatewayRequest<'a> {
    /// The token and what proves possession of it; `None` without a token.
    pub fn presented(&self) -> Option<(&'a str, crate::binding::Presentation<'a>)> {
        let (token, scheme) = credentials(self.authorization?)?;
        Some((
            token,
            crate::binding::Presentation {
                dpop_proof: self.dpop.filter(|proof| !proof.is_empty()),
                scheme,
                http_method: self.method,
                http_uri: self.uri,
                client_certificate: self.client_certificate,
            },
        ))
    }
}

/// A header as a gateway's decision reads it: where it repeats, its values joined with
/// `,` (as Envoy joins them), so two tokens or two DPoP proofs never pass as one, and
/// neither does the first of them alone; `None` where it is absent, or where a value is
/// not UTF-8 (no token or proof is made of such bytes).
pub fn joined_header<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, str>> {
    let mut joined = Cow::Borrowed(std::str::from_utf8(values.next()?).ok()?);
    for value in values {
        let value = std::str::from_utf8(value).ok()?;
        let joined = joined.to_mut();
        joined.push(',');
        joined.push_str(value);
    }
    Some(joined)
}

/// The absolute URI of a request from its parts as gateways pass them; `None` when one
/// is missing (the path is not assumed) or the host is more than a host (userinfo, a
/// path, a query or a fragment hidden in it would make the URI another server's).
pub fn absolute_uri(
    scheme: Option<&str>,
    host: Option<&str>,
    path: Option<&str>,
) -> Option<String> {
    let host = host.filter(|host| {
        !host.is_empty()
            && !host
                .bytes()
                .any(|b| matches!(b, b'@' | b'/' | b'?' | b'#' | b'\\') || b.is_ascii_whitespace())
    })?;
    let scheme = scheme.filter(|s| !s.is_empty()).unwrap_or("https");
    let path = path.filter(|p| p.starts_with('/'))?;
    Some(format!("{scheme}://{host}{path}"))
}

/// The token of an `Authorization` value and its scheme, Bearer or DPoP (RFC 9449
/// section 7.1); `None` for any other scheme.
pub fn credentials(value: &str) -> Option<(&str, Scheme)> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((token, Scheme::Bearer))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((token, Scheme::Dpop))
    } else {
        None
    }
}

impl Settings {
    /// No token in the request.
    pub fn missing_token(&self) -> Decision {
        Decision::Deny {
            status: 401,
            www_authenticate: format!("Bearer realm=\"{}\"", self.realm),
            dpop_nonce: None,
        }
    }

    /// A route whose policy cannot be read: 403, as for scopes the token lacks (a policy
    /// only adds requirements, so one unread is one not met).
    pub fn unreadable_policy(&self) -> Decision {
        Decision::Deny {
            status: 403,
            www_authenticate: format!(
                "Bearer realm=\"{}\", error=\"insufficient_scope\"",
                self.realm
            ),
            dpop_nonce: None,
        }
    }

    fn dpop_challenge(&self, error: &str, dpop_nonce: Option<String>) -> Decision {
        Decision::Deny {
            status: 401,
            www_authenticate: format!(
                "DPoP realm=\"{}\", error=\"{error}\", algs=\"{}\"",
                self.realm, self.dpop_algorithms
            ),
            dpop_nonce,
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
                        challenge_scope(&route.required_scopes)
                    ),
                    dpop_nonce: None,
                };
            }
            Err(rejection) => {
                let nonce = answer.dpop_nonce.clone();
                return match rejection.reason {
                    Reason::DpopProofRequired => self.dpop_challenge("invalid_token", nonce),
                    Reason::DpopProofInvalid => self.dpop_challenge("invalid_dpop_proof", nonce),
                    Reason::DpopNonceRequired => self.dpop_challenge("use_dpop_nonce", nonce),
                    _ => Decision::Deny {
                        status: 401,
                        www_authenticate: format!(
                            "Bearer realm=\"{}\", error=\"invalid_token\"",
                            self.realm
                        ),
                        dpop_nonce: None,
                    },
                };
            }
        };
        self.allow(answer, token)
    }

    /// The allow for an active answer: what it says depends on the token and these
    /// settings alone, never on a route, so a surface may keep it with the token.
    pub fn allow(&self, answer: &Introspection, token: &AccessToken) -> Decision {
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
            // A value no header can carry (a control character in a `sub`) is no value,
            // the same on every surface, so the gateway never passes it on mangled.
            let value = value.filter(|value| header_safe(value));
            headers.push((header.name(), value.unwrap_or_default()));
        }
        Decision::Allow { headers, claims }
    }
}

/// Whether `value` can be an HTTP header value as it is: no control character but tab
/// (RFC 9110 section 5.5), so no CR or LF that would start another header, and no space
/// or tab at either end, which every parser strips (` admin` would arrive as `admin`).
fn header_safe(value: &str) -> bool {
    value.trim_matches([' ', '\t']).len() == value.len()
        && value
            .bytes()
            .all(|byte| byte == b'\t' || (byte >= 0x20 && byte != 0x7f))
}

/// The required scopes as RFC 6750 section 3's `scope` attribute allows them: printable
/// ASCII without `"` or `\`. One with either (a client can send a policy header that a
/// gateway forwards) is left out rather than allowed to end the quoted string and add
/// attributes of its own to the challenge.
fn challenge_scope(scopes: &[String]) -> String {
    let nqchar = |b: u8| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e);
    scopes
        .iter()
        .filter(|scope| !scope.is_empty() && scope.bytes().all(nqchar))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_dpop_values_carry_a_token() {
        assert_eq!(credentials("Bearer abc"), Some(("abc", Scheme::Bearer)));
        assert_eq!(credentials("bearer  abc "), Some(("abc", Scheme::Bearer)));
        assert_eq!(credentials("DPoP abc"), Some(("abc", Scheme::Dpop)));
        assert_eq!(credentials("dpop abc"), Some(("abc", Scheme::Dpop)));
        assert_eq!(credentials("Basic abc"), None);
        assert_eq!(credentials("Bearer "), None);
        assert_eq!(credentials("abc"), None);
    }

    #[test]
    fn absolute_uri_from_gateway_parts() {
        assert_eq!(
            absolute_uri(Some("https"), Some("api.example.com"), Some("/a?b=c")).as_deref(),
            Some("https://api.example.com/a?b=c")
        );
        assert_eq!(
            absolute_uri(None, Some("api.example.com:8443"), Some("/")).as_deref(),
            Some("https://api.example.com:8443/")
        );
        assert_eq!(absolute_uri(Some("http"), None, Some("/")), None);
        // A path the request does not give is not assumed, and a host is a host: no
        // userinfo, path, query or fragment hidden in it to make another URI.
        assert_eq!(absolute_uri(None, Some("api.example.com"), None), None);
        assert_eq!(absolute_uri(None, Some("api.example.com"), Some("*")), None);
        for host in [
            "api.example.com@other.example",
            "other.example/orders#",
            "other.example?x",
            "a b",
            "",
        ] {
            assert_eq!(
                absolute_uri(None, Some(host), Some("/orders")),
                None,
                "{host}"
            );
        }
    }
}
