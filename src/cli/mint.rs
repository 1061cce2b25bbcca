//! `introspectd mint`: a token signed by the dev issuer.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value};

use super::DataDirArg;
use crate::dev::{self, DevIssuer, MintRequest};

#[derive(Args)]
pub struct MintArgs {
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
    /// Bind the token to a DPoP key: its RFC 7638 thumbprint (`cnf.jkt`), as
    /// `introspectd dpop-proof --print-jkt` prints it.
    #[arg(long)]
    dpop_jkt: Option<String>,
    /// Bind the token to a client certificate: its `x5t#S256` (`cnf.x5t#S256`).
    #[arg(long)]
    cnf_x5t: Option<String>,
}

fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

pub fn mint(args: MintArgs) -> ExitCode {
    let issuer = match DevIssuer::load(&args.data.data_dir) {
        Ok(issuer) => issuer,
        Err(error) => {
            eprintln!("introspectd mint: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut extra_claims = args.claims.into_iter().collect::<Map<_, _>>();
    let mut cnf = Map::new();
    if let Some(jkt) = args.dpop_jkt {
        cnf.insert("jkt".into(), Value::String(jkt));
    }
    if let Some(x5t) = args.cnf_x5t {
        cnf.insert("x5t#S256".into(), Value::String(x5t));
    }
    if !cnf.is_empty() {
        extra_claims.insert("cnf".into(), Value::Object(cnf));
    }
    let request = MintRequest {
        subject: args.sub,
        scope: args.scope,
        audiences: args.audiences,
        client_id: args.client_id,
        lifetime_secs: args.lifetime,
        id_token: args.id_token,
        extra_claims,
    };
    match issuer.mint(&request, crate::unix_now()) {
        Ok(token) => {
            say!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("introspectd mint: {error}");
            ExitCode::FAILURE
        }
    }
}
