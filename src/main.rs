//! The `introspectd` command: load config → init logs → bind → run until a signal.
//! Exit codes: 0 done, 64 bad configuration or usage, 1 failure at start or while serving.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use introspectd::{
    Listeners, RunOptions,
    config::{Config, ConfigError, FileConfig, ProcessEnv},
    dev::{self, DevIssuer, MintRequest},
    grpc::pb::{
        self, token_introspection_client::TokenIntrospectionClient,
        token_revocation_client::TokenRevocationClient,
    },
    telemetry,
};
use serde_json::{Map, Value, json};

const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "introspectd",
    version,
    about = "Token introspection beside your services"
)]
struct Cli {
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
    },
    /// Print a token signed by the dev issuer (alone on stdout).
    Mint(MintArgs),
    /// Introspect a token against a running server and print the answer as JSON.
    Introspect(IntrospectArgs),
    /// Revoke a token, a jti, or everything issued before a time for a subject, client
    /// or session, on a running server.
    Revoke(RevokeArgs),
    /// Generate an API key and print it with its configuration entry.
    ApiKey(ApiKeyArgs),
    /// Load a running server with Introspect calls and report them against the gRPC
    /// health Check on the same server (bounded in time; stops by itself).
    Loadtest(LoadtestArgs),
}

#[derive(Args)]
struct LoadtestArgs {
    /// The token to introspect; default: one minted by the dev issuer in --data-dir.
    #[arg(long)]
    token: Option<String>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds per phase (health Check, then Introspect); at most 600.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct ClientArgs {
    /// Server address (`http://` is assumed without a scheme).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc_addr: String,
    /// API key; defaults to the dev admin key saved in --data-dir.
    #[arg(long, env = "INTROSPECTD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    data: DataDirArg,
}

impl ClientArgs {
    fn api_key(&self) -> Option<String> {
        self.api_key
            .clone()
            .or_else(|| dev::saved_admin_key(&self.data.data_dir))
    }

    async fn channel(&self) -> Result<tonic::transport::Channel, String> {
        // The server's own addresses are written without a scheme; accept them here too.
        let url = if self.grpc_addr.contains("://") {
            self.grpc_addr.clone()
        } else {
            format!("http://{}", self.grpc_addr)
        };
        tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| format!("{}: {e}", self.grpc_addr))?
            .connect()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.grpc_addr))
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, String> {
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
#[group(id = "target", required = true, multiple = false)]
struct RevokeTarget {
    /// A token (access or refresh, JWT or opaque); "-" reads it from stdin.
    #[arg(long, group = "target")]
    token: Option<String>,
    /// A token's jti (with --iss).
    #[arg(long, group = "target")]
    jti: Option<String>,
    /// Every token of this subject issued before --before.
    #[arg(long, group = "target")]
    subject: Option<String>,
    /// Every token of this client issued before --before.
    #[arg(long, group = "target")]
    client: Option<String>,
    /// Every token of this session (sid) issued before --before.
    #[arg(long, group = "target")]
    session: Option<String>,
}

#[derive(Args)]
struct RevokeArgs {
    #[command(flatten)]
    target: RevokeTarget,
    /// Issuer of the jti, subject, client or session.
    #[arg(long, default_value = dev::DEV_ISSUER)]
    iss: String,
    /// Cut-off time, Unix seconds (default: now).
    #[arg(long)]
    before: Option<i64>,
    /// The jti's token expiry, Unix seconds, if known.
    #[arg(long)]
    exp: Option<i64>,
    /// Why (kept with the record).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct ApiKeyArgs {
    /// Who will hold the key.
    #[arg(long)]
    name: String,
    /// Roles: introspect, revoke, admin; repeatable.
    #[arg(long = "role", required = true, value_parser = parse_role)]
    roles: Vec<introspectd::auth::Role>,
}

fn parse_role(text: &str) -> Result<introspectd::auth::Role, String> {
    toml::Value::String(text.to_owned())
        .try_into()
        .map_err(|_| format!("{text:?} is not a role (introspect, revoke, admin)"))
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file (TOML).
    #[arg(long, env = "INTROSPECTD_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct AddrArgs {
    /// gRPC listen address, overriding the configuration.
    #[arg(long)]
    grpc_addr: Option<String>,
    /// HTTP listen address, overriding the configuration.
    #[arg(long)]
    http_addr: Option<String>,
}

#[derive(Args)]
struct DataDirArg {
    /// Where the dev issuer's key is kept.
    #[arg(long, env = "INTROSPECTD_DATA_DIR", default_value = dev::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
struct MintArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Subject (`sub`).
    #[arg(long, default_value = dev::DEV_SUBJECT)]
    sub: String,
    /// Space-separated scopes.
    #[arg(long, default_value = dev::DEV_SCOPE)]
    scope: String,
    /// Audience; repeat for several.
    #[arg(long = "aud", default_value = dev::DEV_AUDIENCE)]
    audiences: Vec<String>,
    /// Client (`client_id`).
    #[arg(long, default_value = dev::DEV_CLIENT_ID)]
    client_id: String,
    /// Lifetime in seconds (negative mints an already expired token).
    #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
    lifetime: i64,
    /// Mint an OIDC ID token instead, to see it refused as WRONG_TOKEN_TYPE.
    #[arg(long)]
    id_token: bool,
    /// Claim NAME=VALUE (VALUE as JSON if it parses, else a string), added or replacing
    /// a default one (e.g. `jti=abc`); repeatable.
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, Value)>,
}

#[derive(Args)]
struct IntrospectArgs {
    /// The token; read from stdin when absent or `-`.
    token: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    /// Scope the caller requires; repeatable.
    #[arg(long = "require-scope")]
    required_scopes: Vec<String>,
    /// Audience the caller is.
    #[arg(long)]
    audience: Option<String>,
}

fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Command::Serve { config, addrs } => match load_config(&config.config, &addrs) {
                Ok(config) => serve(config, RunOptions::default()).await,
                Err(error) => config_failure(&error),
            },
            Command::CheckConfig { config } => {
                let no_overrides = AddrArgs {
                    grpc_addr: None,
                    http_addr: None,
                };
                match load_config(&config.config, &no_overrides) {
                    Ok(parsed) => {
                        println!(
                            "{}: valid ({} issuer(s))",
                            config.config.display(),
                            parsed.issuers.len()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(error) => config_failure(&error),
                }
            }
            Command::Dev { data, addrs } => dev_mode(&data.data_dir, &addrs).await,
            Command::Mint(args) => mint(args),
            Command::Introspect(args) => introspect(args).await,
            Command::Revoke(args) => revoke(args).await,
            Command::ApiKey(args) => api_key(&args),
            Command::Loadtest(args) => loadtest(args).await,
        }
    })
}

fn load_config(path: &std::path::Path, addrs: &AddrArgs) -> Result<Config, ConfigError> {
    let mut file = FileConfig::load(path, &ProcessEnv)?;
    apply_addrs(&mut file, addrs);
    file.validate()
}

fn apply_addrs(file: &mut FileConfig, addrs: &AddrArgs) {
    if let Some(addr) = &addrs.grpc_addr {
        file.server.grpc_addr = addr.clone();
    }
    if let Some(addr) = &addrs.http_addr {
        file.server.http_addr = addr.clone();
    }
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("introspectd: invalid configuration: {error}");
    ExitCode::from(EXIT_CONFIG)
}

async fn serve(config: Config, options: RunOptions) -> ExitCode {
    let _telemetry = match telemetry::init(&config.log, &config.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("introspectd: cannot set up logging and tracing: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(%error, grpc.addr = %config.grpc_addr, http.addr = %config.http_addr, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match introspectd::run(config, listeners, options, introspectd::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "introspectd failed");
            ExitCode::FAILURE
        }
    }
}

async fn dev_mode(data_dir: &std::path::Path, addrs: &AddrArgs) -> ExitCode {
    let issuer = match DevIssuer::load_or_create(data_dir) {
        Ok(issuer) => issuer,
        Err(error) => {
            eprintln!("introspectd: dev issuer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let admin_key = match dev::admin_key(data_dir) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("introspectd: dev admin key: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut file = issuer.file_config(data_dir, &admin_key, dev::DEV_GRPC_ADDR, dev::DEV_HTTP_ADDR);
    if let Err(error) = overlay_env(&mut file) {
        return config_failure(&error);
    }
    apply_addrs(&mut file, addrs);
    let config = match file.validate() {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    eprintln!(
        "introspectd dev: issuer {} (key in {}), audience {}\n  gRPC   {}\n  HTTP   http://{}  (JWKS at /.well-known/jwks.json)\n  admin  API key {} (saved in {}; `introspectd revoke` here uses it)\n  store  {}\n  try:   TOKEN=$(introspectd mint) && introspectd introspect \"$TOKEN\"",
        dev::DEV_ISSUER,
        data_dir.display(),
        dev::DEV_AUDIENCE,
        config.grpc_addr,
        config.http_addr,
        admin_key,
        data_dir.join(dev::ADMIN_KEY_FILE).display(),
        data_dir.join("state.redb").display(),
    );
    let options = RunOptions {
        dev_jwks: Some(issuer.jwks()),
    };
    serve(config, options).await
}

/// Dev mode has no file, but `INTROSPECTD_*` overrides still apply to its settings.
fn overlay_env(file: &mut FileConfig) -> Result<(), ConfigError> {
    let text = toml::to_string(file).map_err(|e| ConfigError::Parse(e.to_string()))?;
    *file = FileConfig::parse(&text, &ProcessEnv)?;
    Ok(())
}

fn mint(args: MintArgs) -> ExitCode {
    let issuer = match DevIssuer::load_or_create(&args.data.data_dir) {
        Ok(issuer) => issuer,
        Err(error) => {
            eprintln!("introspectd mint: {error}");
            return ExitCode::FAILURE;
        }
    };
    let request = MintRequest {
        subject: args.sub,
        scope: args.scope,
        audiences: args.audiences,
        client_id: args.client_id,
        lifetime_secs: args.lifetime,
        id_token: args.id_token,
        extra_claims: args.claims.into_iter().collect::<Map<_, _>>(),
    };
    match issuer.mint(&request, introspectd::unix_now()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("introspectd mint: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The token argument, or stdin when it is absent or `-`.
fn token_arg(token: Option<String>) -> Result<String, String> {
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

async fn introspect(args: IntrospectArgs) -> ExitCode {
    let token = match token_arg(args.token) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("introspectd introspect: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let prepared = async {
        let channel = args.client.channel().await?;
        let request = args.client.request(pb::IntrospectRequest {
            token,
            token_type_hint: None,
            required_scopes: args.required_scopes,
            audience: args.audience,
        })?;
        Ok::<_, String>((TokenIntrospectionClient::new(channel), request))
    };
    let (mut client, request) = match prepared.await {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("introspectd introspect: {error}");
            return ExitCode::FAILURE;
        }
    };
    match client.introspect(request).await {
        Ok(response) => {
            println!("{:#}", response_json(&response.into_inner()));
            ExitCode::SUCCESS
        }
        Err(status) => {
            eprintln!(
                "introspectd introspect: {}: {}",
                status.code(),
                status.message()
            );
            ExitCode::FAILURE
        }
    }
}

/// The gRPC answer as JSON for people: members that are set, claims as JSON.
fn response_json(response: &pb::IntrospectResponse) -> Value {
    let mut out = Map::new();
    out.insert("active".into(), json!(response.active));
    let optional = [
        ("scope", response.scope.as_ref().map(|v| json!(v))),
        ("client_id", response.client_id.as_ref().map(|v| json!(v))),
        ("username", response.username.as_ref().map(|v| json!(v))),
        ("token_type", response.token_type.as_ref().map(|v| json!(v))),
        ("exp", response.exp.map(|v| json!(v))),
        ("iat", response.iat.map(|v| json!(v))),
        ("nbf", response.nbf.map(|v| json!(v))),
        ("sub", response.sub.as_ref().map(|v| json!(v))),
        ("iss", response.iss.as_ref().map(|v| json!(v))),
        ("jti", response.jti.as_ref().map(|v| json!(v))),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            out.insert(name.into(), value);
        }
    }
    if !response.aud.is_empty() {
        out.insert("aud".into(), json!(response.aud));
    }
    if let Some(claims) = &response.claims {
        out.insert(
            "claims".into(),
            Value::Object(introspectd::grpc::struct_to_json(claims)),
        );
    }
    if let Some(enrichment) = &response.enrichment {
        out.insert(
            "enrichment".into(),
            Value::Object(introspectd::grpc::struct_to_json(enrichment)),
        );
    }
    if let Ok(reason) = pb::InactiveReason::try_from(response.inactive_reason)
        && reason != pb::InactiveReason::Unspecified
    {
        out.insert(
            "inactive_reason".into(),
            json!(reason.as_str_name().trim_start_matches("INACTIVE_REASON_")),
        );
    }
    out.insert("fingerprint".into(), json!(response.fingerprint));
    Value::Object(out)
}

async fn revoke(args: RevokeArgs) -> ExitCode {
    use pb::revoke_request::Target;
    let cutoff = |value: String| pb::CutoffTarget {
        iss: args.iss.clone(),
        value,
        before: args.before,
    };
    let RevokeTarget {
        token,
        jti,
        subject,
        client,
        session,
    } = args.target;
    let target = match (token, jti, subject, client, session) {
        (Some(token), ..) => match token_arg(Some(token)) {
            Ok(token) => Target::Token(pb::TokenTarget {
                token,
                token_type_hint: None,
            }),
            Err(error) => {
                eprintln!("introspectd revoke: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (_, Some(jti), ..) => Target::Jti(pb::JtiTarget {
            iss: args.iss.clone(),
            jti,
            exp: args.exp,
        }),
        (_, _, Some(subject), ..) => Target::Subject(cutoff(subject)),
        (_, _, _, Some(client), _) => Target::Client(cutoff(client)),
        (_, _, _, _, Some(session)) => Target::Session(cutoff(session)),
        _ => {
            eprintln!(
                "introspectd revoke: name what to revoke (--token, --jti, --subject, --client or --session)"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let message = pb::RevokeRequest {
        target: Some(target),
        reason: args.reason,
    };
    let outcome = async {
        let channel = args.client.channel().await?;
        let request = args.client.request(message)?;
        TokenRevocationClient::new(channel)
            .revoke(request)
            .await
            .map_err(|status| format!("{}: {}", status.code(), status.message()))
    };
    match outcome.await {
        Ok(_) => {
            eprintln!("revoked");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("introspectd revoke: {error}");
            ExitCode::FAILURE
        }
    }
}

fn api_key(args: &ApiKeyArgs) -> ExitCode {
    let key = match introspectd::token::sign::random_id() {
        Ok(id) => format!("ik_{id}"),
        Err(error) => {
            eprintln!("introspectd api-key: {error}");
            return ExitCode::FAILURE;
        }
    };
    let entry = introspectd::auth::ApiKeyEntry {
        name: args.name.clone(),
        sha256: introspectd::auth::hash_key(&key),
        roles: args.roles.clone(),
    };
    let entry = toml::to_string(&entry).unwrap_or_default();
    println!("{key}");
    eprintln!(
        "Give the key (printed on stdout) to {}; add this to the configuration:\n\n[[auth.api_keys]]\n{entry}",
        args.name
    );
    ExitCode::SUCCESS
}

async fn loadtest(args: LoadtestArgs) -> ExitCode {
    let token = match args.token.clone() {
        Some(token) => token,
        None => {
            let minted = DevIssuer::load_or_create(&args.client.data.data_dir)
                .and_then(|issuer| issuer.mint(&MintRequest::default(), introspectd::unix_now()));
            match minted {
                Ok(token) => token,
                Err(error) => {
                    eprintln!("introspectd loadtest: no --token and no dev issuer: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        match args.client.channel().await {
            Ok(channel) => channels.push(channel),
            Err(error) => {
                eprintln!("introspectd loadtest: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let plan = introspectd::loadtest::LoadPlan {
        concurrency: args.concurrency,
        duration: std::time::Duration::from_secs(args.seconds),
        api_key: args.client.api_key(),
    };
    eprintln!(
        "introspectd loadtest: {} callers over {} connections, {} s per phase, against {}",
        plan.concurrency,
        channels.len(),
        args.seconds,
        args.client.grpc_addr
    );
    let results = introspectd::loadtest::run(&channels, &token, &plan).await;
    for result in &results {
        println!(
            "{:<30} {:>10.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs  ({} calls, {} errors)",
            result.name,
            result.per_second,
            result.p50.as_secs_f64() * 1e6,
            result.p99.as_secs_f64() * 1e6,
            result.calls,
            result.errors
        );
    }
    if let [health, introspect] = results.as_slice() {
        println!(
            "Introspect throughput is {:.2} of health Check throughput on the same server",
            introspect.per_second / health.per_second.max(f64::MIN_POSITIVE)
        );
        if introspect.errors > 0 {
            eprintln!(
                "introspectd loadtest: {} Introspect calls failed or were inactive",
                introspect.errors
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
