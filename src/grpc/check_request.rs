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
//! Envoy sends the headers in `header_map` instead when `encode_raw_headers` is set: a
//! list, each value as its raw bytes, repeated names not joined. A header is read from
//! whichever of the two came, to the same value (see [`HttpRequest::header`]).

use std::{borrow::Cow, collections::HashMap};

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
    #[prost(message, optional, tag = "13")]
    header_map: Option<RawHeaders>,
}

/// One entry of `HttpRequest.headers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// `HttpRequest.header_map`, Envoy's `config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawHeaders {
    #[prost(message, repeated, tag = "1")]
    headers: Vec<RawHeader>,
}

/// Envoy's `config.core.v3.HeaderValue`: with `encode_raw_headers` only `key` and
/// `raw_value` are set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawHeader {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    raw_value: Bytes,
}

impl RawHeader {
    fn value(&self) -> &Bytes {
        if self.raw_value.is_empty() {
            &self.value
        } else {
            &self.raw_value
        }
    }
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
        // `raw_value` is bytes in Envoy's proto, not checked: only a header a decision
        // reads has to be text, and one that is not is read as absent.
        let raw_headers = self.raw_headers().flat_map(|h| [&h.key, &h.value]);
        let mut all = strings.into_iter().chain(headers).chain(raw_headers);
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

    fn raw_headers(&self) -> impl Iterator<Item = &RawHeader> {
        self.header_map.iter().flat_map(|map| &map.headers)
    }

    /// The value of header `name` (lower-case), from `header_map` where Envoy sent one,
    /// else from `headers`. From `header_map`, the values of every entry of that name
    /// joined with `,`, as Envoy joins them in `headers`, so a request reads the same
    /// with `encode_raw_headers` or without; but where one of them is not UTF-8, `None`
    /// (in `headers` Envoy turns such bytes into `!`, which no token or proof survives
    /// either). From `headers`, where a map entry repeats, the last one counts, as when
    /// the map is decoded.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        if self.header_map.is_some() {
            return crate::gateway::joined_header(
                self.raw_headers()
                    .filter(|header| header.key.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|header| header.value().as_ref()),
            );
        }
        self.headers
            .iter()
            .rev()
            .find(|header| header.key == name.as_bytes())
            .and_then(|header| std::str::from_utf8(&header.value).ok())
            .map(Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::CheckRequest as EnvoyCheckRequest;
    use envoy_types::pb::envoy::config::core::v3 as envoy_core;
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
            assert_eq!(http.header(name).as_deref(), Some(value.as_str()), "{name}");
        }
        assert_eq!(
            http.header("Authorization").as_deref(),
            None,
            "names are matched as sent"
        );
        assert_eq!(http.header("missing").as_deref(), None);
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
                view.header(name).as_deref(),
                envoy.headers.get(name).map(String::as_str),
                "{name:?}"
            );
        }
        assert_eq!(view.header("authorization").as_deref(), Some("Bearer b"));
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
            view.header("authorization").as_deref(),
            as_map.headers.get("authorization").map(String::as_str)
        );
        assert_eq!(view.header("authorization").as_deref(), Some("Bearer last"));
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
        assert_eq!(http.header("authorization").as_deref(), Some("Bearer t"));
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

    /// `encode_raw_headers: true`: the headers come in `header_map`, as raw bytes.
    fn with_raw_headers(headers: &[(&str, &[u8])]) -> HttpRequest {
        let request = EnvoyCheckRequest {
            attributes: Some(envoy::AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        header_map: Some(envoy_core::HeaderMap {
                            headers: headers
                                .iter()
                                .map(|(key, raw_value)| envoy_core::HeaderValue {
                                    key: (*key).to_owned(),
                                    raw_value: raw_value.to_vec(),
                                    ..Default::default()
                                })
                                .collect(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let view = decoded(&request).attributes.and_then(|a| a.request);
        view.and_then(|r| r.http).unwrap_or_default()
    }

    #[test]
    fn raw_headers_are_read_as_envoy_would_join_them() {
        let http = with_raw_headers(&[
            ("authorization", b"Bearer t"),
            ("dpop", b"proof"),
            ("x-forwarded-client-cert", b"Hash=1"),
            ("X-Forwarded-Client-Cert", b"Hash=2"),
            ("x-latin1", b"caf\xe9"),
        ]);
        assert!(http.check_utf8().is_ok(), "raw values are bytes");
        assert_eq!(http.header("authorization").as_deref(), Some("Bearer t"));
        assert!(matches!(http.header("dpop"), Some(Cow::Borrowed("proof"))));
        assert_eq!(
            http.header("x-forwarded-client-cert").as_deref(),
            Some("Hash=1,Hash=2")
        );
        assert_eq!(http.header("x-latin1"), None, "not text: absent");
        assert_eq!(http.header("missing"), None);
        let mut both = http.clone();
        both.headers.push(Header {
            key: Bytes::from_static(b"accept"),
            value: Bytes::from_static(b"text/plain"),
        });
        assert_eq!(
            both.header("accept"),
            None,
            "with header_map, only it is read"
        );
        let mixed = with_raw_headers(&[("authorization", b"Bearer t"), ("authorization", b"\xff")]);
        assert_eq!(mixed.header("authorization"), None);
    }

    /// Where an entry has a `value` and no `raw_value` (Envoy sets only `raw_value`), the
    /// value is read, and checked as the string it is.
    #[test]
    fn a_raw_header_entry_with_a_value_string() {
        let entry = |value: &'static [u8]| RawHeader {
            key: Bytes::from_static(b"authorization"),
            value: Bytes::from_static(value),
            raw_value: Bytes::new(),
        };
        let http = |entry| HttpRequest {
            header_map: Some(RawHeaders {
                headers: vec![entry],
            }),
            ..Default::default()
        };
        let text = http(entry(b"Bearer v"));
        assert!(text.check_utf8().is_ok());
        assert_eq!(text.header("authorization").as_deref(), Some("Bearer v"));
        assert!(http(entry(b"\xff")).check_utf8().is_err());
    }
}
