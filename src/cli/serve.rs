//! `introspectd serve`, `check-config` and `dev`: the service itself.

use std::{path::Path, process::ExitCode};

use super::{AddrArgs, EXIT_CONFIG};
use crate::{
    Listeners, RunOptions,
    config::{Config, ConfigError, FileConfig, ProcessEnv},
    dev::{self, DevIssuer},
    telemetry,
};

pub async fn serve_file(path: &Path, addrs: &AddrArgs) -> ExitCode {
    match load_config(path, addrs) {
        Ok(config) => serve(config, RunOptions::default()).await,
        Err(error) => config_failure(&error),
    }
}

pub fn check_config(path: &Path) -> ExitCode {
    let no_overrides = AddrArgs {
        grpc_addr: None,
        http_addr: None,
    };
    match load_config(path, &no_overrides).and_then(|parsed| {
        read_named_files(&parsed)?;
        Ok(parsed)
    }) {
        Ok(parsed) => {
            say!(
                "{}: valid ({} issuer(s))",
                path.display(),
                parsed.issuers.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => config_failure(&error),
    }
}

/// Reads every file the configuration names, as `serve` reads them at start (the API
/// keys file is read by validation already), and checks what `serve` reads from the
/// environment at start (`RUST_LOG`, the OTLP endpoint): a certificate, signing key or
/// JWKS file that is missing or unusable, or a log filter that does not parse, fails
/// `check-config` rather than the first start.
fn read_named_files(config: &Config) -> Result<(), ConfigError> {
    let failed = |key: &str, reason: String| ConfigError::Invalid {
        key: key.into(),
        reason,
    };
    if let Some(tls) = &config.tls {
        crate::tls::Tls::load(tls.clone()).map_err(|e| failed("tls", e.to_string()))?;
    }
    if let crate::statelog::StoreSpec::Redis(redis) = &config.store
        && let Some(path) = &redis.ca_file
    {
        crate::statelog::redis::read_ca(path)
            .map_err(|e| failed("store.redis_ca_file", e.to_string()))?;
    }
    telemetry::check(&config.telemetry).map_err(|(key, reason)| failed(key, reason))?;
    if let Some(signing) = &config.answer_signing {
        crate::signing::AnswerSigner::load(signing)
            .map_err(|e| failed("answer_signing", e.to_string()))?;
    }
    for (index, issuer) in config.issuers.iter().enumerate() {
        let key = match issuer.keys.source {
            crate::keys::Source::File(_) => "jwks_file",
            _ => "jwks",
        };
        issuer
            .keys
            .source
            .check_local()
            .map_err(|reason| failed(&format!("issuers[{index}].{key}"), reason))?;
    }
    Ok(())
}

fn load_config(path: &Path, addrs: &AddrArgs) -> Result<Config, ConfigError> {
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
    let _telemetry = match telemetry::init(&config.telemetry) {
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
    serve_on(config, listeners, options).await
}

async fn serve_on(config: Config, listeners: Listeners, options: RunOptions) -> ExitCode {
    match crate::run(config, listeners, options, crate::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "introspectd failed");
            ExitCode::FAILURE
        }
    }
}

pub async fn dev(data_dir: &Path, addrs: &AddrArgs, alg: jsonwebtoken::Algorithm) -> ExitCode {
    // Bind first: a second `dev` in the same place fails here, having created nothing.
    let listeners = match dev_listeners(addrs).await {
        Ok(listeners) => listeners,
        Err(code) => return code,
    };
    let issuer = match DevIssuer::load_or_create(data_dir, alg) {
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
    let answer_signer = match dev::answer_signer(data_dir) {
        Ok(signer) => signer,
        Err(error) => {
            eprintln!("introspectd: dev answer signing key: {error}");
            return ExitCode::FAILURE;
        }
    };
    let options = RunOptions {
        dev_jwks: Some(issuer.jwks()),
        answer_signer: Some(answer_signer),
    };
    let _telemetry = match telemetry::init(&config.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("introspectd: cannot set up logging and tracing: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    serve_on(config, listeners, options).await
}

/// The dev listeners, at the dev addresses unless the environment or the command line
/// says otherwise.
async fn dev_listeners(addrs: &AddrArgs) -> Result<Listeners, ExitCode> {
    let mut file = FileConfig::default();
    file.server.grpc_addr = dev::DEV_GRPC_ADDR.into();
    file.server.http_addr = dev::DEV_HTTP_ADDR.into();
    overlay_env(&mut file).map_err(|error| config_failure(&error))?;
    apply_addrs(&mut file, addrs);
    let parse = |key: &str, value: &str| {
        value.parse().map_err(|_| {
            config_failure(&ConfigError::Invalid {
                key: key.into(),
                reason: format!("{value:?} is not an address like 127.0.0.1:50051"),
            })
        })
    };
    let grpc = parse("server.grpc_addr", &file.server.grpc_addr)?;
    let http = parse("server.http_addr", &file.server.http_addr)?;
    Listeners::bind_to(grpc, http).await.map_err(|error| {
        eprintln!("introspectd: {error}");
        ExitCode::FAILURE
    })
}

/// Dev mode has no file, but `INTROSPECTD_*` overrides still apply to its settings.
fn overlay_env(file: &mut FileConfig) -> Result<(), ConfigError> {
    let text = toml::to_string(file).map_err(|e| ConfigError::Parse(e.to_string()))?;
    *file = FileConfig::parse(&text, &ProcessEnv)?;
    Ok(())
}
