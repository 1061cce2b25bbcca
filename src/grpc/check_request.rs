//! Envoy's ext_authz `CheckRequest`, decoded only as far as a decision reads it. The
//! fields are Envoy's (`envoy/service/auth/v3/attribute_context.proto`), numbered as
//! there, so the wire format is the same; every field not named here is skipped unread,
//! and unchecked: a binary body Envoy sends in the `body` string, say, no longer gets the
//! Check refused.
//! The request's strings are kept as the bytes they came in (the same wire type), its
//! headers too, a `map<string, string>` on the wire (a repeated entry message with
//! `key = 1`, `value = 2`): envoy-types' `HashMap<String, String>` allocated two
//! strings per header and hashed each name, to read at most three of them, on every
//! call.

use std::collections::HashMap;

use bytes::Bytes;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    #[prost(map = "string, string", tag = "10")]
    pub context_extensions: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    /// The peer's certificate, PEM and URL-encoded, as Envoy sends it.
    #[prost(string, tag = "5")]
    pub certificate: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(bytes = "bytes", tag = "2")]
    method: Bytes,
    #[prost(message, repeated, tag = "3")]
    headers: Vec<Header>,
    #[prost(bytes = "bytes", tag = "4")]
    path: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    host: Bytes,
    #[prost(bytes = "bytes", tag = "6")]
    scheme: Bytes,
}

/// One entry of `HttpRequest.headers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// These are strings in Envoy's proto, which envoy-types' decoding checked; kept as
/// bytes, the ones carried are checked here, all of them, so that what is carried is
/// refused as before rather than read as "" where it is not UTF-8.
#[derive(Debug, thiserror::Error)]
#[error("a string of the request is not UTF-8")]
pub struct NotUtf8;

/// A string field kept as bytes; "" where it is not UTF-8, which
/// [`HttpRequest::check_utf8`] refuses first.
fn text(bytes: &Bytes) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl HttpRequest {
    pub fn check_utf8(&self) -> Result<(), NotUtf8> {
        let strings = [&self.method, &self.path, &self.host, &self.scheme];
        let headers = self.headers.iter().flat_map(|h| [&h.key, &h.value]);
        let mut all = strings.into_iter().chain(headers);
        if all.all(|s| std::str::from_utf8(s).is_ok()) {
            Ok(())
        } else {
            Err(NotUtf8)
        }
    }

    pub fn method(&self) -> &str {
        text(&self.method)
    }

    pub fn path(&self) -> &str {
        text(&self.path)
    }

    pub fn host(&self) -> &str {
        text(&self.host)
    }

    pub fn scheme(&self) -> &str {
        text(&self.scheme)
    }

    /// The value of header `name`; where a map entry repeats, the last one counts, as
    /// when the map is decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|header| header.key == name.as_bytes())
            .and_then(|header| std::str::from_utf8(&header.value).ok())
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::CheckRequest as EnvoyCheckRequest;
    use envoy_types::pb::envoy::service::auth::v3::{self as envoy, attribute_context};
    use prost::Message;

    use super::*;

    fn decoded(request: &EnvoyCheckRequest) -> CheckRequest {
        CheckRequest::decode(request.encode_to_vec().as_slice())
            .unwrap_or_else(|error| unreachable!("{error}"))
    }

    /// What a decision reads is what was sent.
    #[test]
    fn reads_what_envoy_sends() {
        let headers = HashMap::from([
            ("authorization".to_owned(), "Bearer eyJ.x.y".to_owned()),
            ("dpop".to_owned(), "eyJ.proof.sig".to_owned()),
            (
                "x-forwarded-client-cert".to_owned(),
                "Hash=ab;Cert=\"-----BEGIN\"".to_owned(),
            ),
            ("accept".to_owned(), "application/json".to_owned()),
            ("empty".to_owned(), String::new()),
        ]);
        let request = EnvoyCheckRequest {
            attributes: Some(envoy::AttributeContext {
                source: Some(attribute_context::Peer {
                    certificate: "-----BEGIN%20CERTIFICATE-----".into(),
                    principal: "spiffe://cluster/ns/a".into(),
                    ..Default::default()
                }),
                destination: Some(attribute_context::Peer {
                    certificate: "not the source".into(),
                    ..Default::default()
                }),
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        id: "request-1".into(),
                        method: "POST".into(),
                        headers: headers.clone(),
                        path: "/orders?id=7".into(),
                        host: "api.example".into(),
                        scheme: "https".into(),
                        protocol: "HTTP/2".into(),
                        body: "ignored".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: HashMap::from([(
                    "required_scopes".to_owned(),
                    "orders:read".to_owned(),
                )]),
                ..Default::default()
            }),
        };
        let view = decoded(&request);
        let attributes = view.attributes.unwrap_or_default();
        assert_eq!(
            attributes.source.map(|peer| peer.certificate).as_deref(),
            Some("-----BEGIN%20CERTIFICATE-----")
        );
        assert_eq!(
            attributes
                .context_extensions
                .get("required_scopes")
                .map(String::as_str),
            Some("orders:read")
        );
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        assert!(http.check_utf8().is_ok());
        assert_eq!((http.method(), http.path()), ("POST", "/orders?id=7"));
        assert_eq!((http.host(), http.scheme()), ("api.example", "https"));
        for (name, value) in &headers {
            assert_eq!(http.header(name), Some(value.as_str()), "{name}");
        }
        assert_eq!(
            http.header("Authorization"),
            None,
            "names are matched as sent"
        );
        assert_eq!(http.header("missing"), None);
        assert_eq!(
            decoded(&EnvoyCheckRequest::default()),
            CheckRequest::default()
        );
    }

    /// Messages sent twice merge, a map entry sent twice counts as its last, an entry
    /// without its key or value reads as "": as envoy-types decodes the same bytes.
    #[test]
    fn repeated_and_partial_fields_read_as_envoy_types_reads_them() {
        let http = |headers: &[(&str, &str)], path: &str| EnvoyCheckRequest {
            attributes: Some(envoy::AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        headers: headers
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                        path: path.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let mut bytes = http(&[("authorization", "Bearer a"), ("dpop", "p")], "/a").encode_to_vec();
        bytes.extend(http(&[("authorization", "Bearer b"), ("", "no name")], "").encode_to_vec());
        let keyless_entry = Header {
            key: Bytes::new(),
            value: Bytes::from_static(b"v"),
        };
        let valueless_entry = Header {
            key: Bytes::from_static(b"accept"),
            value: Bytes::new(),
        };
        let entries = HttpRequest {
            headers: vec![keyless_entry, valueless_entry],
            ..Default::default()
        };
        bytes.extend(
            CheckRequest {
                attributes: Some(AttributeContext {
                    request: Some(Request {
                        http: Some(entries),
                    }),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        );
        let envoy = EnvoyCheckRequest::decode(bytes.as_slice())
            .unwrap_or_else(|error| unreachable!("{error}"));
        let envoy = envoy
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http);
        let envoy = envoy.unwrap_or_default();
        let view = CheckRequest::decode(bytes.as_slice()).unwrap_or_else(|e| unreachable!("{e}"));
        let view = view.attributes.and_then(|a| a.request).and_then(|r| r.http);
        let view = view.unwrap_or_default();
        for name in ["authorization", "dpop", "", "accept", "missing"] {
            assert_eq!(
                view.header(name),
                envoy.headers.get(name).map(String::as_str),
                "{name:?}"
            );
        }
        assert_eq!(view.header("authorization"), Some("Bearer b"));
        assert_eq!(view.path(), envoy.path);
    }

    /// A map entry sent twice: the last one counts, as when the map is decoded.
    #[test]
    fn a_repeated_header_entry_reads_as_its_last() {
        let entry = |value: &str| Header {
            key: Bytes::from_static(b"authorization"),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        let http = HttpRequest {
            headers: vec![entry("Bearer first"), entry("Bearer last")],
            ..Default::default()
        };
        let bytes = http.encode_to_vec();
        let as_map = attribute_context::HttpRequest::decode(bytes.as_slice())
            .unwrap_or_else(|error| unreachable!("{error}"));
        let view = HttpRequest::decode(bytes.as_slice()).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            view.header("authorization"),
            as_map.headers.get("authorization").map(String::as_str)
        );
        assert_eq!(view.header("authorization"), Some("Bearer last"));
    }

    /// A field no decision reads is skipped unchecked: Envoy puts a binary body in the
    /// `body` string (field 11) unless told to pack it as bytes.
    #[test]
    fn a_binary_body_does_not_fail_the_check() {
        let mut http = HttpRequest {
            headers: vec![Header {
                key: Bytes::from_static(b"authorization"),
                value: Bytes::from_static(b"Bearer t"),
            }],
            ..Default::default()
        }
        .encode_to_vec();
        prost::encoding::bytes::encode(11, &vec![0xff, 0x00, 0xfe], &mut http);
        // Request { http = 2 }, AttributeContext { request = 4 }, CheckRequest { attributes = 1 }.
        let mut bytes = http;
        for tag in [2, 4, 1] {
            let mut outer = Vec::new();
            prost::encoding::bytes::encode(tag, &bytes, &mut outer);
            bytes = outer;
        }
        assert!(EnvoyCheckRequest::decode(bytes.as_slice()).is_err());
        let view = CheckRequest::decode(bytes.as_slice()).unwrap_or_else(|e| unreachable!("{e}"));
        let http = view.attributes.and_then(|a| a.request).and_then(|r| r.http);
        let http = http.unwrap_or_default();
        assert!(http.check_utf8().is_ok());
        assert_eq!(http.header("authorization"), Some("Bearer t"));
    }

    #[test]
    fn a_string_that_is_not_utf8_is_refused() {
        let http = HttpRequest {
            path: Bytes::from_static(b"/\xff"),
            ..Default::default()
        };
        assert!(http.check_utf8().is_err());
        assert!(attribute_context::HttpRequest::decode(http.encode_to_vec().as_slice()).is_err());
    }

    #[test]
    fn a_header_that_is_not_utf8_is_refused() {
        for (key, value) in [(&b"dpop"[..], &b"\xff"[..]), (b"\xfe", b"v")] {
            let http = HttpRequest {
                headers: vec![Header {
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::copy_from_slice(value),
                }],
                ..Default::default()
            };
            assert!(http.check_utf8().is_err());
            // envoy-types refuses the same bytes.
            assert!(
                attribute_context::HttpRequest::decode(http.encode_to_vec().as_slice()).is_err()
            );
        }
    }
}
