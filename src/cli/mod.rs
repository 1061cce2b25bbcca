//! The command line: `serve` and `dev` run the service; the other commands are
//! clients of a running one (or of the dev issuer's files). A file per command;
//! [`Cli`] and [`run`] tie them together.
//!
//! Exit codes: 0 done, 1 failure at start or while serving (or a refused call),
//! 2 usage errors (clap), 64 a bad configuration or argument value.

/// `println!` for the commands' output: a reader that went away (`| head`) ends the
/// output quietly instead of panicking on the broken pipe, as other command-line tools
/// do.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod api_key;
mod dpop_proof;
mod health;
mod introspect;
mod loadtest;
mod mint;
mod revoke;
mod serve;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::dev;

/// Exit code for a configuration (or argument value) that cannot be used.
pub const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "introspectd",
    version,
    about = "Token introspection beside your services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        addrs: AddrArgs,
    },
    /// Validate a configuration file and exit (non-zero, naming the key, if invalid).
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Serve with a local dev issuer: no configuration needed.
    Dev {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        addrs: AddrArgs,
        /// The dev issuer's algorithm (ES256, ES384, EdDSA, RS256, PS256, ...), fixed
        /// when its key is first made in --data-dir; `mint` follows it.
        #[arg(long, default_value = "ES256", value_parser = parse_algorithm)]
        alg: jsonwebtoken::Algorithm,
    },
    /// Print a token signed by the dev issuer (alone on stdout).
    Mint(mint::MintArgs),
    /// Introspect a token against a running server and print the answer as JSON.
    Introspect(introspect::IntrospectArgs),
    /// Revoke a token, a jti, or everything issued before a time for a subject, client
    /// or session, on a running server.
    Revoke(revoke::RevokeArgs),
    /// Generate an API key and print it with its configuration entry.
    ApiKey(api_key::ApiKeyArgs),
    /// Ask a running server's gRPC health service; exit 0 when SERVING (`helm test`).
    Health(health::HealthArgs),
    /// Print a DPoP proof (RFC 9449) made with the dev client key kept in --data-dir
    /// (created on first use), or that key's thumbprint for `mint --dpop-jkt`.
    DpopProof(dpop_proof::DpopProofArgs),
    /// Load a running server with Introspect calls and report them against the gRPC
    /// health Check on the same server (bounded in time; stops by itself).
    Loadtest(loadtest::LoadtestArgs),
}

fn parse_algorithm(text: &str) -> Result<jsonwebtoken::Algorithm, String> {
    text.parse::<jsonwebtoken::Algorithm>()
        .ok()
        .filter(|alg| {
            !matches!(
                alg,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            )
        })
        .ok_or_else(|| format!("{text:?} is not an asymmetric JWS algorithm"))
}

/// Runs a parsed command line to its exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("introspectd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config, addrs } => {
                crate::take_sighup();
                serve::serve_file(&config.config, &addrs).await
            }
            Command::CheckConfig { config } => serve::check_config(&config.config),
            Command::Dev { data, addrs, alg } => {
                crate::take_sighup();
                serve::dev(&data.data_dir, &addrs, alg).await
            }
            Command::Mint(args) => mint::mint(args),
            Command::DpopProof(args) => dpop_proof::dpop_proof(&args),
            Command::Health(args) => health::health(args).await,
            Command::Introspect(args) => introspect::introspect(args).await,
            Command::Revoke(args) => revoke::revoke(args).await,
            Command::ApiKey(args) => api_key::api_key(&args),
            Command::Loadtest(args) => loadtest::loadtest(args).await,
        }
    })
}

#[derive(Args)]
pub struct ClientArgs {
    /// Server address (`http://` is assumed without a scheme, `https://` with --tls-ca).
    #[arg(
        long,
        env = "INTROSPECTD_GRPC_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub grpc_addr: String,
    /// PEM CA bundle to verify a TLS server with (the server's `[tls]`).
    #[arg(long, env = "INTROSPECTD_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for mTLS (with --tls-key).
    #[arg(long, env = "INTROSPECTD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "INTROSPECTD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The name to verify the server certificate for, when it differs from the
    /// address's host (a certificate for `introspectd.svc` reached at 127.0.0.1).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// API key; defaults to the dev admin key saved in --data-dir.
    #[arg(long, env = "INTROSPECTD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
}

impl ClientArgs {
    pub fn api_key(&self) -> Option<String> {
        self.api_key
            .clone()
            .or_else(|| dev::saved_admin_key(&self.data.data_dir))
    }

    pub async fn channel(&self) -> Result<tonic::transport::Channel, String> {
        let tls = self.tls_config()?;
        // The server's own addresses are written without a scheme; accept them here too.
        let url = if self.grpc_addr.contains("://") {
            self.grpc_addr.clone()
        } else if tls.is_some() {
            format!("https://{}", self.grpc_addr)
        } else {
            format!("http://{}", self.grpc_addr)
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| format!("{}: {e}", self.grpc_addr))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS settings: {e}"))?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.grpc_addr))
    }

    /// TLS settings from the `--tls-*` flags; `None` for plaintext.
    fn tls_config(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let secure = self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.grpc_addr.starts_with("https://");
        if !secure {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &self.tls_ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        Ok(Some(config))
    }

    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, String> {
        let mut request = tonic::Request::new(message);
        if let Some(key) = self.api_key() {
            let value = format!("Bearer {key}")
                .parse()
                .map_err(|_| "the API key has characters a header cannot carry".to_owned())?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

#[derive(Args)]
pub struct ConfigArg {
    /// Configuration file (TOML).
    #[arg(long, env = "INTROSPECTD_CONFIG")]
    pub config: PathBuf,
}

#[derive(Args)]
pub struct AddrArgs {
    /// gRPC listen address, overriding the configuration.
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// HTTP listen address, overriding the configuration.
    #[arg(long)]
    pub http_addr: Option<String>,
}

#[derive(Args)]
pub struct DataDirArg {
    /// Where the dev issuer's key is kept.
    #[arg(long, env = "INTROSPECTD_DATA_DIR", default_value = dev::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// A refused call, for people: the status, and for a missing or wrong key, where a key
/// comes from.
pub fn refusal(status: &tonic::Status) -> String {
    let hint = match status.code() {
        tonic::Code::Unauthenticated => {
            "\n  hint: pass --api-key (or INTROSPECTD_API_KEY), or run where `introspectd dev` runs: it saves its admin key in ./data/admin-api-key"
        }
        tonic::Code::PermissionDenied => "\n  hint: this API key lacks the role for the call",
        _ => "",
    };
    format!("{}: {}{hint}", status.code(), status.message())
}

/// The token argument, or stdin when it is absent or `-`.
pub fn token_arg(token: Option<String>) -> Result<String, String> {
    match token.filter(|t| t != "-") {
        Some(token) => Ok(token),
        None => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
            Ok(text.trim().to_owned())
        }
    }
}
