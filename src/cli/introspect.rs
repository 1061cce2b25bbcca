//! `introspectd introspect`: ask a running server about a token.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value, json};

use super::{ClientArgs, EXIT_CONFIG, token_arg};
use crate::grpc::pb::{self, token_introspection_client::TokenIntrospectionClient};

#[derive(Args)]
pub struct IntrospectArgs {
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
    /// For a DPoP-bound token: the proof (the `DPoP` header), with --method and --uri.
    #[arg(long)]
    dpop_proof: Option<String>,
    /// The method of the request the token came with (the proof's `htm`).
    #[arg(long)]
    method: Option<String>,
    /// The absolute URI of that request (the proof's `htu`).
    #[arg(long)]
    uri: Option<String>,
    /// For a certificate-bound token: the client certificate (a PEM file).
    #[arg(long)]
    client_cert: Option<std::path::PathBuf>,
    /// Also ask for the answer as a signed JWT (RFC 9701), printed as `signed_answer`.
    #[arg(long)]
    signed: bool,
}

pub async fn introspect(args: IntrospectArgs) -> ExitCode {
    let token = match token_arg(args.token) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("introspectd introspect: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let prepared = async {
        let client_certificate = match &args.client_cert {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let channel = args.client.channel().await?;
        let request = args.client.request(pb::IntrospectRequest {
            token,
            token_type_hint: None,
            required_scopes: args.required_scopes,
            audience: args.audience,
            dpop_proof: args.dpop_proof,
            http_method: args.method,
            http_uri: args.uri,
            client_certificate,
            dpop_scheme: false,
            signed_answer: args.signed,
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
            say!("{:#}", response_json(&response.into_inner()));
            ExitCode::SUCCESS
        }
        Err(status) => {
            eprintln!("introspectd introspect: {}", super::refusal(&status));
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
            Value::Object(crate::grpc::struct_to_json(claims)),
        );
    }
    if let Some(enrichment) = &response.enrichment {
        out.insert(
            "enrichment".into(),
            Value::Object(crate::grpc::struct_to_json(enrichment)),
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
    for (name, value) in [
        ("dpop_nonce", &response.dpop_nonce),
        ("signed_answer", &response.signed_answer),
    ] {
        if let Some(value) = value {
            out.insert(name.into(), json!(value));
        }
    }
    Value::Object(out)
}
