//! TLS and mTLS for both listeners: the certificate, key and client CA come from files
//! and are reloaded when those files change (cert-manager renewing, a rotated Secret),
//! without touching open connections: each handshake takes the configuration current at
//! that moment. A client certificate is optional; when presented it must chain to the
//! client CA, and its identities (URI and DNS SANs) can stand for a caller in
//! [`crate::auth`].

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
};

/// Where the TLS material is, validated from `[tls]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates client certificates must chain to; without it no client
    /// certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for a change.
    pub reload_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Material { path: String, what: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The application protocol a listener speaks, offered by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Self::Grpc => vec![b"h2".to_vec()],
            Self::Http => vec![b"http/1.1".to_vec()],
        }
    }
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// URI SANs (a SPIFFE ID, say), as written in the certificate.
    pub uris: Vec<String>,
    /// DNS SANs, as written: kept apart from the URIs, so that neither kind stands
    /// for the other.
    pub dns_names: Vec<String>,
    /// SHA-256 of the certificate's DER: RFC 8705's `x5t#S256`.
    pub sha256: [u8; 32],
}

impl ClientCertificate {
    pub fn from_der(der: &[u8]) -> Self {
        let SubjectAltNames { uris, dns_names } = subject_alt_names(der);
        Self {
            uris,
            dns_names,
            sha256: Sha256::digest(der).into(),
        }
    }
}

/// The current server configurations, one per protocol, swapped whole on reload.
pub struct Tls {
    settings: Settings,
    grpc: ArcSwap<ServerConfig>,
    http: ArcSwap<ServerConfig>,
    /// SHA-256 of the files' contents last tried, used or refused: a set refused once
    /// is not tried (nor counted) again until the files change.
    tried: Mutex<[u8; 32]>,
    counts: Counts,
}

/// What `/metrics` reports about TLS.
#[derive(Debug, Default)]
pub struct Counts {
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub handshake_failures: AtomicU64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The files' contents, read together so that a reload sees one version of each.
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Material {
    fn read(settings: &Settings) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&settings.cert_file)?,
            key: read(&settings.key_file)?,
            client_ca: settings.client_ca_file.as_deref().map(read).transpose()?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [&self.cert, &self.key] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        if let Some(ca) = &self.client_ca {
            hasher.update(ca);
        }
        hasher.finalize().into()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn material_error(path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError::Material {
        path: path.display().to_string(),
        what: what.to_string(),
    }
}

/// A PEM error in words: the crate's own text shows its markers as lists of bytes.
fn pem_error(path: &Path, error: &rustls::pki_types::pem::Error) -> TlsError {
    use rustls::pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { end_marker } => material_error(
            path,
            format!(
                "no -----END {}----- line",
                String::from_utf8_lossy(end_marker)
            ),
        ),
        Error::IllegalSectionStart { line } => material_error(
            path,
            format!("a bad BEGIN line: {}", String::from_utf8_lossy(line)),
        ),
        other => material_error(path, other),
    }
}

impl Tls {
    /// Reads and checks the files; an error names the file and what is wrong with it.
    pub fn load(settings: Settings) -> Result<Arc<Self>, TlsError> {
        let material = Material::read(&settings)?;
        let (grpc, http) = build(&settings, &material)?;
        Ok(Arc::new(Self {
            grpc: ArcSwap::from_pointee(grpc),
            http: ArcSwap::from_pointee(http),
            tried: Mutex::new(material.digest()),
            counts: Counts::default(),
            settings,
        }))
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self, protocol: Protocol) -> TlsAcceptor {
        let config = match protocol {
            Protocol::Grpc => self.grpc.load_full(),
            Protocol::Http => self.http.load_full(),
        };
        TlsAcceptor::from(config)
    }

    /// Rebuilds the configurations when the files changed. A half-written or mismatched
    /// set (new certificate, old key) is refused and the current one kept: the next
    /// check tries again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let material = Material::read(&self.settings)?;
        let digest = material.digest();
        let Ok(mut tried) = self.tried.lock() else {
            return Ok(false);
        };
        if *tried == digest {
            return Ok(false);
        }
        *tried = digest;
        let (grpc, http) = build(&self.settings, &material)?;
        self.grpc.store(Arc::new(grpc));
        self.http.store(Arc::new(http));
        Ok(true)
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Checks the files every `reload_interval`, and whenever `rereads` changes (SIGHUP),
    /// until cancelled.
    pub async fn keep_fresh(self: Arc<Self>, mut rereads: tokio::sync::watch::Receiver<()>) {
        let mut ticks = tokio::time::interval(self.settings.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                Ok(()) = rereads.changed() => {}
            }
            match self.reload_if_changed() {
                Ok(false) => {}
                Ok(true) => {
                    self.counts.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        cert_file = %self.settings.cert_file.display(),
                        "TLS certificate reloaded"
                    );
                }
                Err(error) => {
                    self.counts.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %error,
                        "TLS files cannot be used; still serving the previous certificate"
                    );
                }
            }
        }
    }
}

fn build(
    settings: &Settings,
    material: &Material,
) -> Result<(ServerConfig, ServerConfig), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&material.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&settings.cert_file, &e))?;
    if chain.is_empty() {
        return Err(material_error(&settings.cert_file, "no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key)
        .map_err(|e| pem_error(&settings.key_file, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = match (&material.client_ca, &settings.client_ca_file) {
        (Some(ca), Some(path)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(cert.map_err(|e| pem_error(path, &e))?)
                    .map_err(|e| material_error(path, e))?;
            }
            if roots.is_empty() {
                return Err(material_error(path, "no PEM certificate"));
            }
            // Optional: callers without a certificate still reach the API-key check
            // (and the kubelet's HTTPS probes, which present none, still work).
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?
        }
        _ => WebPkiClientVerifier::no_client_auth(),
    };
    let config = |protocol: Protocol| -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|error| match error {
                rustls::Error::InconsistentKeys(_) => material_error(
                    &settings.key_file,
                    format!("is not the key of {}", settings.cert_file.display()),
                ),
                other => TlsError::Config(other),
            })?;
        config.alpn_protocols = protocol.alpn();
        Ok(config)
    };
    Ok((config(Protocol::Grpc)?, config(Protocol::Http)?))
}

// === subjectAltName, read from the DER a verifier already accepted ===

const SEQUENCE: u8 = 0x30;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const EXTENSIONS: u8 = 0xa3;
const SAN_DNS: u8 = 0x82;
const SAN_URI: u8 = 0x86;
/// 2.5.29.17
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let width = usize::from(first & 0x7f);
        if width == 0 || width > 4 || rest.len() < width {
            return None;
        }
        let (bytes, rest) = rest.split_at(width);
        let length = bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, after) = rest.split_at(length);
    Some((tag, contents, after))
}

/// The elements inside a constructed element's contents.
fn elements(mut contents: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, inner, rest) = element(contents)?;
        contents = rest;
        Some((tag, inner))
    })
}

/// URI SANs then DNS SANs of a certificate; empty when it has none or cannot be read.
pub fn subject_alt_names(der: &[u8]) -> SubjectAltNames {
    let mut names = SubjectAltNames::default();
    let Some(extension) = san_extension(der) else {
        return names;
    };
    for (tag, value) in elements(extension) {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        match tag {
            SAN_URI => names.uris.push(text.to_owned()),
            SAN_DNS => names.dns_names.push(text.to_owned()),
            _ => {}
        }
    }
    names
}

/// A certificate's URI and DNS subject alternative names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SubjectAltNames {
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
}

/// The GeneralNames inside the subjectAltName extension.
fn san_extension(der: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let (_, extensions) = elements(tbs).find(|(tag, _)| *tag == EXTENSIONS)?;
    let (SEQUENCE, list, _) = element(extensions)? else {
        return None;
    };
    elements(list).find_map(|(tag, extension)| {
        if tag != SEQUENCE {
            return None;
        }
        let mut parts = elements(extension);
        let (OID, SUBJECT_ALT_NAME) = parts.next()? else {
            return None;
        };
        // `critical` may come before the value.
        let value = parts.find(|(tag, _)| *tag == OCTET_STRING)?.1;
        match element(value)? {
            (SEQUENCE, names, _) => Some(names),
            _ => None,
        }
    })
}

/// Reads a PEM file of CA certificates as a TLS client will use it: every certificate a
/// trust anchor, at least one (a private CA for Redis or the trace collector).
pub fn read_trust_anchors(path: &Path) -> std::io::Result<Vec<u8>> {
    let pem = std::fs::read(path)?;
    let mut roots = RootCertStore::empty();
    let mut usable = true;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        usable &= certificate.is_ok_and(|der| roots.add(der).is_ok());
    }
    if !usable || roots.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no usable PEM certificate in it",
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_alt_names_are_read_by_kind() {
        let mut params = rcgen::CertificateParams::new(vec!["gateway.example".to_owned()])
            .unwrap_or_else(|_| rcgen::CertificateParams::default());
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/edge/sa/envoy"
                .try_into()
                .unwrap_or_else(|_| unreachable!()),
        ));
        let key = rcgen::KeyPair::generate().unwrap_or_else(|_| unreachable!());
        let cert = params.self_signed(&key).unwrap_or_else(|_| unreachable!());
        let found = ClientCertificate::from_der(cert.der());
        assert_eq!(found.uris, ["spiffe://cluster.local/ns/edge/sa/envoy"]);
        assert_eq!(found.dns_names, ["gateway.example"]);
        assert_eq!(found.sha256, <[u8; 32]>::from(Sha256::digest(cert.der())));
    }

    #[test]
    fn unreadable_der_has_no_names() {
        for der in [
            [].as_slice(),
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x03, 0x30, 0x01],
        ] {
            assert_eq!(subject_alt_names(der), SubjectAltNames::default());
        }
    }
}
