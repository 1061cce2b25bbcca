//! Caller authentication: API keys with roles, and client certificates (mTLS) whose
//! identity stands for a caller the same way. Keys are configured as SHA-256 hashes and
//! compared in constant time; the transport only extracts the presented key and the
//! verified certificate.

use std::{path::Path, sync::Arc};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::tls::ClientCertificate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Introspect and check revocations.
    Introspect,
    /// Revoke.
    Revoke,
    /// Everything, including administration.
    Admin,
}

/// One configured key.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Who holds the key; logged with each call.
    pub name: String,
    /// Hex SHA-256 of the key: `printf %s "$KEY" | sha256sum`.
    pub sha256: String,
    pub roles: Vec<Role>,
}

/// One configured mTLS client: a certificate with this identity (a URI SAN such as a
/// SPIFFE ID, or a DNS SAN), verified against the client CA, is this caller.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Who the client is; logged with each call.
    pub name: String,
    /// The certificate's URI subject alternative name (a SPIFFE ID: anything with a
    /// `://`), exactly, or its DNS one, in any case.
    pub identity: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeysFile {
    #[serde(default)]
    api_keys: Vec<ApiKeyEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, String),
    #[error("api key {0:?}: sha256 must be 64 hex digits")]
    BadHash(String),
    #[error("{0:?}: no roles")]
    NoRoles(String),
    #[error("client {0:?}: identity must not be empty")]
    NoIdentity(String),
}

#[derive(Debug, Clone)]
struct ApiKey {
    hash: [u8; 32],
    /// Shared with every call it authenticates: no allocation per call.
    caller: Arc<Caller>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn may(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin) || self.roles.contains(&role)
    }
}

/// An API key as an `Authorization` value presents it.
#[derive(Debug)]
pub struct PresentedKey<'a> {
    pub key: std::borrow::Cow<'a, str>,
    /// It came as HTTP Basic: a refusal is answered with a `Basic` challenge.
    pub basic: bool,
}

impl PresentedKey<'_> {
    /// Something was presented that is no key: it matches nothing, so it is refused as
    /// wrong, not treated as absent.
    const NONE: PresentedKey<'static> = PresentedKey {
        key: std::borrow::Cow::Borrowed("\u{0}"),
        basic: false,
    };
}

/// The key of a header's field lines, each read by `read` (an `Authorization` value by
/// [`authorization_key`], a key header by [`header_key`]): `None` without one; two or
/// more are no key (which would count?).
pub fn presented_key<'a>(
    mut lines: impl Iterator<Item = &'a [u8]>,
    read: fn(&'a [u8]) -> PresentedKey<'a>,
) -> Option<PresentedKey<'a>> {
    let first = lines.next()?;
    if lines.next().is_some() {
        return Some(PresentedKey::NONE);
    }
    Some(read(first))
}

/// The key in a header of its own (`X-Introspectd-Api-Key`): its value, trimmed.
pub fn header_key(value: &[u8]) -> PresentedKey<'_> {
    match std::str::from_utf8(value) {
        Ok(key) => PresentedKey {
            key: std::borrow::Cow::Borrowed(key.trim()),
            basic: false,
        },
        Err(_) => PresentedKey::NONE,
    }
}

/// The key in an `Authorization` value: `Bearer <key>`, or HTTP Basic (RFC 7617) with
/// the key as the password, which is how RFC 7662 clients that speak RFC 6749's
/// `client_secret_basic` send it (the user name, their client id, is not checked; the
/// password is form-urlencoded first, section 2.3.1). Schemes are case-insensitive (RFC
/// 9110 section 11.1). Any other scheme, or a value that does not decode, yields a key
/// that matches nothing (so it is refused as wrong, not treated as absent).
pub fn authorization_key(header: &[u8]) -> PresentedKey<'_> {
    let text = std::str::from_utf8(header).unwrap_or_default().trim();
    let (scheme, credentials) = text.split_once(' ').unwrap_or((text, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty() {
        return PresentedKey {
            key: std::borrow::Cow::Borrowed(credentials),
            basic: false,
        };
    }
    let basic = scheme.eq_ignore_ascii_case("basic");
    let password = basic
        .then(|| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
        })
        .flatten()
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|decoded| {
            let (_client_id, password) = decoded.split_once(':')?;
            percent_encoding::percent_decode_str(&password.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(std::borrow::Cow::into_owned)
        });
    match password {
        Some(password) => PresentedKey {
            key: std::borrow::Cow::Owned(password),
            basic,
        },
        None => PresentedKey {
            basic,
            ..PresentedKey::NONE
        },
    }
}

/// Who may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health checks, reflection.
    Open,
    /// A question about one token (Introspect, CheckRevocation): the `introspect` role,
    /// or no key at all when anonymous introspection is on.
    Introspection,
    /// A key with this role (or admin).
    Role(Role),
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No key, or a key we do not know.
    Unauthenticated,
    /// A known key without the role.
    Forbidden,
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    /// The configuration's own keys.
    keys: Vec<ApiKey>,
    /// The keys of `auth.api_keys_file`, read again while serving.
    from_file: Option<Arc<KeysFile>>,
    /// mTLS identities and the callers they stand for.
    clients: Vec<(String, Arc<Caller>)>,
    anonymous_introspect: bool,
}

/// A file of `[[api_keys]]` (a mounted Secret) and the keys last read from it.
#[derive(Debug)]
struct KeysFile {
    path: std::path::PathBuf,
    keys: arc_swap::ArcSwap<Vec<ApiKey>>,
    /// Bumped whenever the file's keys change, so that a stream opened with the old ones
    /// asks again whether they admit it (see [`Admission`]).
    generation: std::sync::atomic::AtomicU64,
    /// SHA-256 of the text the keys were read from: an unchanged file is not parsed.
    /// (A refused version is tried again each time: the reload task says a failure once
    /// however it fails, unreadable or unusable, and says when the file is good again.)
    read_from: std::sync::Mutex<[u8; 32]>,
}

fn api_keys(entries: Vec<ApiKeyEntry>) -> Result<Vec<ApiKey>, AuthError> {
    entries
        .into_iter()
        .map(|entry| {
            let hash =
                parse_hash(&entry.sha256).ok_or_else(|| AuthError::BadHash(entry.name.clone()))?;
            if entry.roles.is_empty() {
                return Err(AuthError::NoRoles(entry.name));
            }
            Ok(ApiKey {
                hash,
                caller: Arc::new(Caller {
                    name: entry.name,
                    roles: entry.roles,
                }),
            })
        })
        .collect()
}

impl ApiKeys {
    pub fn new(entries: Vec<ApiKeyEntry>, anonymous_introspect: bool) -> Result<Self, AuthError> {
        Ok(Self {
            keys: api_keys(entries)?,
            from_file: None,
            clients: Vec::new(),
            anonymous_introspect,
        })
    }

    /// Adds the keys of a file of `[[api_keys]]` entries, read now and again by
    /// [`Self::reread_file`].
    pub fn with_file(mut self, path: &Path) -> Result<Self, AuthError> {
        let text = read_text(path)?;
        let keys = api_keys(parse_keys_file(path, &text)?)?;
        self.from_file = Some(Arc::new(KeysFile {
            path: path.to_owned(),
            keys: arc_swap::ArcSwap::from_pointee(keys),
            generation: std::sync::atomic::AtomicU64::new(0),
            read_from: std::sync::Mutex::new(Sha256::digest(text.as_bytes()).into()),
        }));
        Ok(self)
    }

    /// Reads the keys file again: `Ok(true)` when it changed and its keys now decide,
    /// `Ok(false)` when it is unchanged (or there is none); an error (a file half
    /// written, a bad entry, no entry at all) leaves the keys it had.
    pub fn reread_file(&self) -> Result<bool, AuthError> {
        let Some(file) = &self.from_file else {
            return Ok(false);
        };
        let text = read_text(&file.path)?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let Ok(mut read_from) = file.read_from.lock() else {
            return Ok(false);
        };
        if *read_from == digest {
            return Ok(false);
        }
        let keys = api_keys(parse_keys_file(&file.path, &text)?)?;
        if keys.is_empty() {
            return Err(AuthError::Parse(
                file.path.display().to_string(),
                "no [[api_keys]] entry: taken for a file half written, the keys it had stay".into(),
            ));
        }
        file.keys.store(Arc::new(keys));
        file.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        *read_from = digest;
        Ok(true)
    }

    /// Changes every time the keys do.
    pub fn generation(&self) -> u64 {
        self.from_file.as_ref().map_or(0, |file| {
            file.generation.load(std::sync::atomic::Ordering::Acquire)
        })
    }

    /// Reads `[[api_keys]]` entries from a TOML file (a mounted Secret, say).
    pub fn read_file(path: &Path) -> Result<Vec<ApiKeyEntry>, AuthError> {
        parse_keys_file(path, &read_text(path)?)
    }

    /// Whether a keys file is configured, to be read again while serving.
    pub fn has_file(&self) -> bool {
        self.from_file.is_some()
    }

    /// Adds the mTLS clients: a verified certificate with one of these identities
    /// authenticates its connection's calls as that caller.
    pub fn with_clients(mut self, entries: Vec<ClientEntry>) -> Result<Self, AuthError> {
        for entry in entries {
            if entry.identity.is_empty() {
                return Err(AuthError::NoIdentity(entry.name));
            }
            if entry.roles.is_empty() {
                return Err(AuthError::NoRoles(entry.name));
            }
            let caller = Arc::new(Caller {
                name: entry.name,
                roles: entry.roles,
            });
            self.clients.push((entry.identity, caller));
        }
        Ok(self)
    }

    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The caller a verified client certificate stands for: the first configured client
    /// whose identity the certificate names.
    /// The client a verified certificate names: an identity with a scheme (`spiffe://`)
    /// is one of its URI SANs exactly, any other one of its DNS SANs in any case (RFC
    /// 4343); neither kind of name stands for the other.
    pub fn client(&self, certificate: &ClientCertificate) -> Option<Arc<Caller>> {
        self.clients.iter().find_map(|(identity, caller)| {
            let named = if identity.contains("://") {
                certificate.uris.iter().any(|uri| uri == identity)
            } else {
                certificate
                    .dns_names
                    .iter()
                    .any(|name| name.eq_ignore_ascii_case(identity))
            };
            named.then(|| caller.clone())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self
                .from_file
                .as_ref()
                .is_none_or(|file| file.keys.load().is_empty())
    }

    /// The caller a presented key belongs to. Every configured hash is compared, in
    /// constant time, so timing tells nothing about which key nearly matched.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<Caller>> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let from_file = self.from_file.as_ref().map(|file| file.keys.load());
        let mut found = None;
        for key in self
            .keys
            .iter()
            .chain(from_file.iter().flat_map(|keys| keys.iter()))
        {
            if aws_lc_rs::constant_time::verify_slices_are_equal(&key.hash, &hash).is_ok() {
                found = Some(key.caller.clone());
            }
        }
        found
    }

    /// Decides a call needing `role`: a known key with that role (or admin).
    pub fn authorize(&self, presented: Option<&str>, role: Role) -> Result<Arc<Caller>, Denied> {
        self.authorize_credentials(Credentials::key(presented), role)
    }

    fn authorize_credentials(
        &self,
        credentials: Credentials<'_>,
        role: Role,
    ) -> Result<Arc<Caller>, Denied> {
        let caller = self.identify(credentials).ok_or(Denied::Unauthenticated)?;
        if caller.may(role) {
            Ok(caller)
        } else {
            Err(Denied::Forbidden)
        }
    }

    /// The caller behind a call's credentials: a presented key decides (a wrong key is
    /// refused even on an mTLS connection); without one, the client certificate.
    fn identify(&self, credentials: Credentials<'_>) -> Option<Arc<Caller>> {
        match (credentials.key, credentials.certificate) {
            (Some(key), _) => self.authenticate(key),
            (None, Some(certificate)) => self.client(certificate),
            (None, None) => None,
        }
    }

    /// Decides a call: the caller, if credentials were needed, or why it is refused.
    pub fn admit(
        &self,
        access: Access,
        credentials: Credentials<'_>,
    ) -> Result<Option<Arc<Caller>>, Denied> {
        match access {
            Access::Open => Ok(None),
            Access::Introspection => self.authorize_introspection_with(credentials),
            Access::Role(role) => self.authorize_credentials(credentials, role).map(Some),
        }
    }

    /// Decides a question about one token (Introspect, CheckRevocation): like
    /// [`Self::authorize`] with the `introspect` role, except that no key at all is
    /// accepted when `anonymous_introspect` is on. A wrong key is refused either way.
    pub fn authorize_introspection(
        &self,
        presented: Option<&str>,
    ) -> Result<Option<Arc<Caller>>, Denied> {
        self.authorize_introspection_with(Credentials::key(presented))
    }

    fn authorize_introspection_with(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Option<Arc<Caller>>, Denied> {
        if credentials.key.is_none() && self.anonymous_introspect {
            // A known client certificate still names the caller in the logs.
            return Ok(credentials.certificate.and_then(|c| self.client(c)));
        }
        self.authorize_credentials(credentials, Role::Introspect)
            .map(Some)
    }
}

/// A streaming call's credentials, kept for the life of the stream: a key removed from
/// the keys file (or stripped of the role) stops the streams it opened, not just new
/// calls. Asked before each message; costs an atomic load until the keys change.
pub struct Admission {
    keys: Arc<ApiKeys>,
    access: Access,
    key: Option<String>,
    certificate: Option<Arc<ClientCertificate>>,
    /// The keys' generation these credentials were last admitted under.
    admitted_under: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Admission {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// Credentials [`ApiKeys::admit`] has just admitted for `access`.
    pub fn new(
        keys: Arc<ApiKeys>,
        access: Access,
        key: Option<&str>,
        certificate: Option<Arc<ClientCertificate>>,
    ) -> Self {
        let admitted_under = keys.generation().into();
        Self {
            keys,
            access,
            key: key.map(str::to_owned),
            certificate,
            admitted_under,
        }
    }

    /// Whether the keys as they are now still admit the stream's credentials.
    pub fn still_admitted(&self) -> Result<(), Denied> {
        use std::sync::atomic::Ordering;
        let now = self.keys.generation();
        if now == self.admitted_under.load(Ordering::Relaxed) {
            return Ok(());
        }
        let credentials = Credentials {
            key: self.key.as_deref(),
            certificate: self.certificate.as_deref(),
        };
        self.keys.admit(self.access, credentials)?;
        self.admitted_under.store(now, Ordering::Relaxed);
        Ok(())
    }
}

/// What a call presents: an API key, and the verified client certificate of its
/// connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub key: Option<&'a str>,
    pub certificate: Option<&'a ClientCertificate>,
}

impl<'a> Credentials<'a> {
    pub fn key(key: Option<&'a str>) -> Self {
        Self {
            key,
            certificate: None,
        }
    }
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

/// Hex SHA-256 of a key, as configured.
fn read_text(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|e| AuthError::Read(path.display().to_string(), e))
}

fn parse_keys_file(path: &Path, text: &str) -> Result<Vec<ApiKeyEntry>, AuthError> {
    let file: ApiKeysFile = toml::from_str(text)
        .map_err(|e| AuthError::Parse(path.display().to_string(), e.to_string()))?;
    Ok(file.api_keys)
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(anonymous: bool) -> ApiKeys {
        let entry = |name: &str, key: &str, roles: Vec<Role>| ApiKeyEntry {
            name: name.into(),
            sha256: hash_key(key),
            roles,
        };
        ApiKeys::new(
            vec![
                entry("gateway", "gw-key", vec![Role::Introspect]),
                entry("idp", "idp-key", vec![Role::Revoke]),
                entry("ops", "ops-key", vec![Role::Admin]),
            ],
            anonymous,
        )
        .unwrap_or_default()
    }

    #[test]
    fn roles_decide() {
        let keys = keys(false);
        assert!(keys.authorize_introspection(Some("gw-key")).is_ok());
        assert_eq!(
            keys.authorize(Some("gw-key"), Role::Revoke),
            Err(Denied::Forbidden)
        );
        assert!(keys.authorize(Some("idp-key"), Role::Revoke).is_ok());
        assert!(
            keys.authorize(Some("ops-key"), Role::Revoke).is_ok(),
            "admin may everything"
        );
        assert_eq!(
            keys.authorize(Some("wrong"), Role::Introspect),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            keys.authorize_introspection(None),
            Err(Denied::Unauthenticated)
        );
    }

    /// A URI identity (a SPIFFE ID) is matched by a URI SAN alone, and a DNS identity by
    /// a DNS SAN alone, in any case: a CA lax about one kind of name cannot mint the
    /// other.
    /// A keys file read again that holds no key at all is taken for one half written
    /// (a Secret being replaced), not as "nobody may call": the keys it had stay.
    #[test]
    fn an_empty_keys_file_read_again_leaves_the_keys() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("keys.toml");
        let entry = format!(
            "[[api_keys]]\nname = \"a\"\nsha256 = \"{}\"\nroles = [\"introspect\"]\n",
            hash_key("a-key")
        );
        std::fs::write(&path, &entry)?;
        let keys = ApiKeys::new(Vec::new(), false)?.with_file(&path)?;
        std::fs::write(&path, "")?;
        assert!(keys.reread_file().is_err());
        assert!(keys.authenticate("a-key").is_some());
        Ok(())
    }

    #[test]
    fn client_identities_match_their_own_kind_of_name() -> Result<(), AuthError> {
        let spiffe = "spiffe://cluster.local/ns/edge/sa/envoy";
        let keys = ApiKeys::new(Vec::new(), false)?.with_clients(vec![
            ClientEntry {
                name: "envoy".into(),
                identity: spiffe.into(),
                roles: vec![Role::Introspect],
            },
            ClientEntry {
                name: "gateway".into(),
                identity: "gateway.example".into(),
                roles: vec![Role::Introspect],
            },
        ])?;
        let named = |uris: &[&str], dns: &[&str]| {
            let certificate = ClientCertificate {
                uris: uris.iter().map(|s| (*s).to_owned()).collect(),
                dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
                sha256: [0; 32],
            };
            keys.client(&certificate).map(|caller| caller.name.clone())
        };
        assert_eq!(named(&[spiffe], &[]).as_deref(), Some("envoy"));
        assert_eq!(named(&[], &["gateway.example"]).as_deref(), Some("gateway"));
        assert_eq!(named(&[], &["GATEWAY.Example"]).as_deref(), Some("gateway"));
        assert_eq!(named(&[], &[spiffe]), None, "a URI identity in a DNS SAN");
        assert_eq!(
            named(&["gateway.example"], &[]),
            None,
            "a DNS identity in a URI SAN"
        );
        Ok(())
    }

    /// A key as `Bearer`, whatever the scheme's case (RFC 9110 section 11.1), or as
    /// the password of HTTP Basic, RFC 6749's `client_secret_basic` (the password
    /// form-urlencoded first, section 2.3.1); nothing else reads as a key.
    #[test]
    fn keys_come_as_bearer_or_as_the_basic_password() {
        let key = |header: &[u8]| authorization_key(header).key.into_owned();
        assert_eq!(key(b"Bearer abc "), "abc");
        assert_eq!(key(b"bearer abc"), "abc");
        assert_eq!(key(b"BEARER abc"), "abc");
        // base64("gateway:s3cr%2Bt") and base64("gateway:k:with:colons")
        assert_eq!(key(b"Basic Z2F0ZXdheTpzM2NyJTJCdA=="), "s3cr+t");
        assert_eq!(key(b"basic Z2F0ZXdheTprOndpdGg6Y29sb25z"), "k:with:colons");
        assert!(authorization_key(b"Basic Z2F0ZXdheTpzM2NyJTJCdA==").basic);
        assert!(
            authorization_key(b"Basic").basic,
            "no credentials, still Basic"
        );
        assert!(!authorization_key(b"Bearer abc").basic);
        for refused in [
            b"Basic !!!".as_slice(),
            b"Basic Z2F0ZXdheQ==", // no colon
            b"Digest abc",
            b"abc",
            &[0xff, 0xfe],
        ] {
            assert_eq!(key(refused), "\u{0}", "{refused:?}");
        }
    }

    #[test]
    fn anonymous_introspection_only_when_allowed() {
        let keys = keys(true);
        assert_eq!(keys.authorize_introspection(None), Ok(None));
        assert_eq!(
            keys.authorize(None, Role::Revoke),
            Err(Denied::Unauthenticated)
        );
        // Watching the whole set is never anonymous.
        assert_eq!(
            keys.authorize(None, Role::Introspect),
            Err(Denied::Unauthenticated)
        );
        // A wrong key is still refused: anonymous means no key, not any key.
        assert_eq!(
            keys.authorize_introspection(Some("wrong")),
            Err(Denied::Unauthenticated)
        );
        assert!(keys.authorize_introspection(Some("gw-key")).is_ok());
    }

    #[test]
    fn bad_entries_are_refused() {
        let bad = ApiKeyEntry {
            name: "x".into(),
            sha256: "abc".into(),
            roles: vec![Role::Admin],
        };
        assert!(matches!(
            ApiKeys::new(vec![bad], false),
            Err(AuthError::BadHash(_))
        ));
        let none = ApiKeyEntry {
            name: "y".into(),
            sha256: hash_key("k"),
            roles: vec![],
        };
        assert!(matches!(
            ApiKeys::new(vec![none], false),
            Err(AuthError::NoRoles(_))
        ));
    }
}
