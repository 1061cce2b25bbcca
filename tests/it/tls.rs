//! TLS and mTLS on both listeners, with certificates generated here (rcgen): plaintext
//! and unknown CAs refused, a client certificate's SAN standing for a caller, a rotated
//! certificate served to new connections while open ones keep going.

use std::{path::Path, sync::Arc, time::Duration};

use introspectd::auth::{ClientEntry, Role};
use introspectd::config::TlsSection;
use introspectd::grpc::pb;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::support::*;

pub const GATEWAY_SPIFFE_ID: &str = "spiffe://cluster.local/ns/edge/sa/gateway";

/// A CA and the certificates it signs.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| unreachable!("{e}"))
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = ok(CertificateParams::new(Vec::<String>::new()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self {
            ca: ok(CertifiedIssuer::self_signed(
                params,
                ok(KeyPair::generate()),
            )),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `dns` names and `uris`.
    pub fn leaf(&self, dns: &[&str], uris: &[&str]) -> Leaf {
        let mut params = ok(CertificateParams::new(
            dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>(),
        ));
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI(ok((*uri).try_into())));
        }
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = ok(KeyPair::generate());
        let cert = ok(params.signed_by(&key, &self.ca));
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// TLS files in a directory, rewritable to rotate.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new(server: &Leaf, client_ca: &Pki) -> Self {
        let files = Self {
            dir: ok(tempfile::tempdir()),
        };
        files.write(server);
        ok(std::fs::write(
            files.path("client-ca.crt"),
            client_ca.ca_pem(),
        ));
        files
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a pair the way a rotated Secret appears: each file replaced whole.
    fn write(&self, server: &Leaf) {
        self.replace("tls.key", &server.key_pem);
        self.replace("tls.crt", &server.cert_pem);
    }

    /// Replaces one file whole, so a reload never reads it half written.
    fn replace(&self, name: &str, text: &str) {
        let staging = self.path(&format!(".{name}.new"));
        ok(std::fs::write(&staging, text));
        ok(std::fs::rename(&staging, self.path(name)));
    }

    fn section(&self) -> TlsSection {
        TlsSection {
            cert_file: self.path("tls.crt"),
            key_file: self.path("tls.key"),
            client_ca_file: Some(self.path("client-ca.crt")),
            reload_interval_secs: 1,
        }
    }
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap_or_else(|e| unreachable!("{e}"))
        .tls_config(tls)?
        .connect()
        .await
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|response| response.into_inner().status)
}

fn rustls_client(ca_pem: &str, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        ok(roots.add(ok(cert)));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        ok(ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions())
            .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => ok(builder.with_client_auth_cert(
            vec![CertificateDer::from(leaf.der.clone())],
            ok(PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())),
        )),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A raw TLS connection to the HTTP listener; the server's leaf certificate with it.
async fn connect_raw(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ok(ServerName::try_from("localhost"));
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .unwrap_or_default();
    Ok((stream, leaf))
}

/// One HTTP/1.1 request on an open connection; the status line's code.
async fn http_get(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    ok(stream.write_all(request.as_bytes()).await);
    let mut buffer = vec![0u8; 4096];
    let read = ok(stream.read(&mut buffer).await);
    String::from_utf8_lossy(&buffer[..read])
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// `/metrics` over a fresh TLS connection.
async fn metrics(addr: std::net::SocketAddr, config: &Arc<ClientConfig>) -> String {
    let (mut stream, _) = ok(connect_raw(addr, config.clone()).await);
    let request = "GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    ok(stream.write_all(request.as_bytes()).await);
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text
}

async fn start(files: &TlsFiles, issuer: &JwksServer) -> Introspectd {
    let mut file = file_config(vec![issuer_section(
        &issuer.issuer(),
        &issuer.jwks_uri(),
        &["ES256"],
    )]);
    file.auth.anonymous_introspect = false;
    file.auth.clients = vec![
        ClientEntry {
            name: "edge-gateway".into(),
            identity: GATEWAY_SPIFFE_ID.into(),
            roles: vec![Role::Introspect],
        },
        ClientEntry {
            name: "idp".into(),
            identity: "idp.internal".into(),
            roles: vec![Role::Revoke],
        },
    ];
    file.tls = Some(files.section());
    Introspectd::start(file).await
}

async fn wait_serving(server: &Introspectd, ca_pem: &str) -> Channel {
    let mut last = String::new();
    for _ in 0..300 {
        match tls_channel(server.grpc_addr, ca_pem, None).await {
            Ok(channel) => match health(channel.clone()).await {
                Ok(1) => return channel,
                Ok(status) => last = format!("status {status}"),
                Err(status) => last = status.to_string(),
            },
            Err(error) => last = format!("{error:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("TLS server never served: {last}")
}

/// `first_byte_timeout_ms` counts what the client sends inside TLS: a client that
/// completes the handshake and then sends nothing (or half an HTTP/2 preface) is closed,
/// on both listeners, as on a plaintext one; the handshake alone is not a request.
#[tokio::test]
async fn a_client_silent_after_the_tls_handshake_is_closed() {
    let server_pki = Pki::new("server CA");
    let files = TlsFiles::new(
        &server_pki.leaf(&["localhost"], &[]),
        &Pki::new("client CA"),
    );
    let signer = key(jsonwebtoken::Algorithm::ES256, "k1");
    let mut file = file_config(vec![inline_issuer("https://tls.test/", &signer)]);
    // Long enough for a handshake on a busy machine, short against the 5 s below.
    file.server.first_byte_timeout_ms = 1_000;
    file.tls = Some(files.section());
    let server = Introspectd::start(file).await;
    wait_serving(&server, &server_pki.ca_pem()).await;
    for (addr, alpn, opening) in [
        (server.grpc_addr, b"h2".as_slice(), b"".as_slice()),
        (server.grpc_addr, b"h2", b"PRI * HTTP/2.0"),
        (server.http_addr, b"http/1.1", b""),
    ] {
        let mut config = (*rustls_client(&server_pki.ca_pem(), None)).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let (mut stream, _) = ok(connect_raw(addr, Arc::new(config)).await);
        ok(stream.write_all(opening).await);
        ok(stream.flush().await);
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "{addr} ({}): still open 5 s after the handshake",
            String::from_utf8_lossy(alpn)
        );
    }
}

#[tokio::test]
async fn tls_and_mtls_decide_who_may_call() {
    let key = key(jsonwebtoken::Algorithm::ES256, "k1");
    let issuer = JwksServer::start(&[&key]).await;
    let server_pki = Pki::new("server CA");
    let client_pki = Pki::new("client CA");
    let files = TlsFiles::new(&server_pki.leaf(&["localhost"], &[]), &client_pki);
    let server = start(&files, &issuer).await;
    let channel = wait_serving(&server, &server_pki.ca_pem()).await;
    let token = mint(&key, &claims(&issuer.issuer()));

    // Plaintext on the TLS port gets no answer.
    let plain = Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap_or_else(|e| unreachable!("{e}"))
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    let plain_health = match plain.connect().await {
        Ok(channel) => health(channel).await.is_ok(),
        Err(_) => false,
    };
    assert!(!plain_health, "plaintext must not be served on a TLS port");

    // A client trusting another CA refuses the server.
    let stranger = Pki::new("someone else");
    let wrong_ca = match tls_channel(server.grpc_addr, &stranger.ca_pem(), None).await {
        Ok(channel) => health(channel).await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !wrong_ca,
        "a server certificate from an unknown CA was accepted"
    );

    // Without a client certificate: an API key, as on plaintext.
    let mut client = pb::token_introspection_client::TokenIntrospectionClient::new(channel);
    let refused = client
        .introspect(pb::IntrospectRequest {
            token: token.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        refused.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    let with_key = client
        .introspect(with_key(
            READER_KEY,
            pb::IntrospectRequest {
                token: token.clone(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().active);
    assert_eq!(with_key.ok(), Some(true));

    // The gateway's certificate stands for its caller: introspect, but not revoke.
    let gateway = client_pki.leaf(&[], &[GATEWAY_SPIFFE_ID]);
    let mtls = ok(tls_channel(server.grpc_addr, &server_pki.ca_pem(), Some(&gateway)).await);
    let answer = pb::token_introspection_client::TokenIntrospectionClient::new(mtls.clone())
        .introspect(pb::IntrospectRequest {
            token: token.clone(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().active);
    assert_eq!(
        answer.ok(),
        Some(true),
        "mTLS identity not mapped to its roles"
    );
    let revoke = pb::token_revocation_client::TokenRevocationClient::new(mtls)
        .revoke(pb::RevokeRequest {
            target: Some(pb::revoke_request::Target::Token(pb::TokenTarget {
                token: token.clone(),
                token_type_hint: None,
            })),
            ..Default::default()
        })
        .await;
    assert_eq!(
        revoke.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::PermissionDenied)
    );

    // The command-line client, with the flags the README shows.
    let dir = ok(tempfile::tempdir());
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        ok(std::fs::write(&path, text));
        path.display().to_string()
    };
    let args = vec![
        "introspect".to_owned(),
        token.clone(),
        "--grpc-addr".into(),
        server.grpc_addr.to_string(),
        "--tls-ca".into(),
        write("ca.crt", &server_pki.ca_pem()),
        "--tls-server-name".into(),
        "localhost".into(),
        "--tls-cert".into(),
        write("gateway.crt", &gateway.cert_pem),
        "--tls-key".into(),
        write("gateway.key", &gateway.key_pem),
    ];
    let output = ok(tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_introspectd"))
            .args(&args)
            .env_remove("INTROSPECTD_API_KEY")
            .env("INTROSPECTD_DATA_DIR", "/nonexistent")
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await);
    let output = ok(output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("\"active\": true"),
        "introspectd introspect over mTLS: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // grpcurl 1.8, as the README shows it, over mTLS with reflection.
    if crate::tools::grpcurl_available("tls_and_mtls_decide_who_may_call (grpcurl)") {
        let addr = server.grpc_addr.to_string();
        let (ca, cert, key) = (
            dir.path().join("ca.crt"),
            dir.path().join("gateway.crt"),
            dir.path().join("gateway.key"),
        );
        let listed = ok(tokio::task::spawn_blocking(move || {
            let path = |p: &Path| p.display().to_string();
            crate::tools::grpcurl(&[
                "-cacert",
                &path(&ca),
                "-cert",
                &path(&cert),
                "-key",
                &path(&key),
                "-servername",
                "localhost",
                &addr,
                "list",
            ])
        })
        .await);
        assert!(
            listed
                .as_ref()
                .is_ok_and(|l| l.contains("introspectd.v1.TokenIntrospection")),
            "grpcurl over mTLS: {listed:?}"
        );
    }

    // A certificate from a CA the server does not trust is refused in the handshake.
    let impostor = stranger.leaf(&[], &[GATEWAY_SPIFFE_ID]);
    let refused = match tls_channel(server.grpc_addr, &server_pki.ca_pem(), Some(&impostor)).await {
        Ok(channel) => health(channel).await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !refused,
        "a client certificate from an unknown CA was accepted"
    );

    // The HTTP listener: the same certificate, the same mapping (a DNS SAN this time).
    let idp = client_pki.leaf(&["idp.internal"], &[]);
    let http = ok(reqwest::Client::builder()
        .add_root_certificate(ok(reqwest::Certificate::from_pem(
            server_pki.ca_pem().as_bytes(),
        )))
        .identity(ok(reqwest::Identity::from_pem(
            format!("{}{}", idp.cert_pem, idp.key_pem).as_bytes(),
        )))
        .resolve("localhost", server.http_addr)
        .build());
    let base = format!("https://localhost:{}", server.http_addr.port());
    let ready = ok(http.get(format!("{base}/readyz")).send().await);
    assert_eq!(ready.status(), 200);
    let revoked = ok(http
        .post(format!("{base}/oauth2/revoke"))
        .form(&[("token", token.as_str())])
        .send()
        .await);
    assert_eq!(revoked.status(), 200, "the idp's certificate may revoke");
    let after = pb::token_introspection_client::TokenIntrospectionClient::new(ok(tls_channel(
        server.grpc_addr,
        &server_pki.ca_pem(),
        Some(&gateway),
    )
    .await))
    .introspect(pb::IntrospectRequest {
        token: token.clone(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().active);
    assert_eq!(after.ok(), Some(false), "revoked over mTLS, still active");
    ok(server.stop().await);
}

#[tokio::test]
async fn a_rotated_certificate_is_served_and_open_connections_stay() {
    let key = key(jsonwebtoken::Algorithm::ES256, "k1");
    let issuer = JwksServer::start(&[&key]).await;
    let pki = Pki::new("server CA");
    let first = pki.leaf(&["localhost"], &[]);
    let files = TlsFiles::new(&first, &Pki::new("client CA"));
    let server = start(&files, &issuer).await;
    wait_serving(&server, &pki.ca_pem()).await;
    let client = rustls_client(&pki.ca_pem(), None);
    let (mut open, served) = ok(connect_raw(server.http_addr, client.clone()).await);
    assert_eq!(served, first.der);
    assert_eq!(http_get(&mut open, "/healthz").await, "200");

    let second = pki.leaf(&["localhost"], &[]);
    files.write(&second);
    eventually("the rotated certificate served", || {
        let client = client.clone();
        let wanted = second.der.clone();
        async move {
            matches!(connect_raw(server.http_addr, client).await, Ok((_, served)) if served == wanted)
        }
    })
    .await;
    assert_eq!(
        http_get(&mut open, "/healthz").await,
        "200",
        "a connection opened before the rotation was dropped"
    );
    assert!(
        metrics(server.http_addr, &client)
            .await
            .contains("introspectd_tls_reloads_total{result=\"reloaded\"}")
    );

    // A broken file (a key that does not match) is refused; the last good pair stays.
    let third = pki.leaf(&["localhost"], &[]);
    files.replace("tls.crt", &third.cert_pem);
    eventually("the mismatched pair refused", || {
        let client = client.clone();
        async move {
            metric_in(
                &metrics(server.http_addr, &client).await,
                "introspectd_tls_reloads_total{result=\"failed\"}",
            ) > 0.0
        }
    })
    .await;
    let (_, served) = ok(connect_raw(server.http_addr, client.clone()).await);
    assert_eq!(
        served, second.der,
        "a mismatched pair replaced the good one"
    );
    // One bad set is one failure, however many checks find it still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        metric_in(
            &metrics(server.http_addr, &client).await,
            "introspectd_tls_reloads_total{result=\"failed\"}",
        ),
        1.0
    );
    // The TLS families are exposition Prometheus accepts.
    if crate::tools::promtool_available(
        "a_rotated_certificate_is_served_and_open_connections_stay (promtool)",
    ) {
        let scraped = metrics(server.http_addr, &client).await;
        let body = scraped.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        assert!(
            body.contains("introspectd_tls_handshake_failures_total"),
            "{body}"
        );
        if let Err(error) = crate::tools::promtool(&["check", "metrics"], Some(body)) {
            unreachable!("{error}");
        }
    }
    ok(server.stop().await);
}

#[test]
fn missing_or_broken_files_stop_the_start_with_their_path() {
    let dir = ok(tempfile::tempdir());
    let settings = |cert: &Path, key: &Path| introspectd::tls::Settings {
        cert_file: cert.to_owned(),
        key_file: key.to_owned(),
        client_ca_file: None,
        reload_interval: Duration::from_secs(10),
    };
    let load_error = |cert: &Path, key: &Path| {
        introspectd::tls::Tls::load(settings(cert, key))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let missing = dir.path().join("nope.crt");
    let error = load_error(&missing, &missing);
    assert!(
        error.as_ref().is_err_and(|e| e.contains("nope.crt")),
        "{error:?}"
    );
    let garbage = dir.path().join("garbage.pem");
    ok(std::fs::write(&garbage, "not a certificate"));
    let error = load_error(&garbage, &garbage);
    assert!(
        error.as_ref().is_err_and(|e| e.contains("garbage.pem")),
        "{error:?}"
    );
    // A key that is not the certificate's is named, and a PEM cut short is said in
    // words, not in bytes.
    let pki = Pki::new("server CA");
    let (one, other) = (pki.leaf(&["localhost"], &[]), pki.leaf(&["localhost"], &[]));
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("other.key");
    ok(std::fs::write(&cert, &one.cert_pem));
    ok(std::fs::write(&key, &other.key_pem));
    let error = load_error(&cert, &key);
    assert!(
        error
            .as_ref()
            .is_err_and(|e| e.contains("other.key") && e.contains("tls.crt")),
        "{error:?}"
    );
    let cut = one.cert_pem.lines().take(3).collect::<Vec<_>>().join("\n");
    ok(std::fs::write(&cert, cut));
    let error = load_error(&cert, &key);
    assert!(
        error
            .as_ref()
            .is_err_and(|e| e.contains("tls.crt") && e.contains("-----END CERTIFICATE-----")),
        "{error:?}"
    );
}
