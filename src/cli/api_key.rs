//! `introspectd api-key`: a new API key and its configuration entry.

use std::process::ExitCode;

use clap::Args;

use crate::auth::{ApiKeyEntry, Role, hash_key};

#[derive(Args)]
pub struct ApiKeyArgs {
    /// Who will hold the key.
    #[arg(long)]
    name: String,
    /// Roles: introspect, revoke, admin; repeatable.
    #[arg(long = "role", required = true, value_parser = parse_role)]
    roles: Vec<Role>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    toml::Value::String(text.to_owned())
        .try_into()
        .map_err(|_| format!("{text:?} is not a role (introspect, revoke, admin)"))
}

pub fn api_key(args: &ApiKeyArgs) -> ExitCode {
    let key = match crate::token::sign::random_id() {
        Ok(id) => format!("ik_{id}"),
        Err(error) => {
            eprintln!("introspectd api-key: {error}");
            return ExitCode::FAILURE;
        }
    };
    let entry = ApiKeyEntry {
        name: args.name.clone(),
        sha256: hash_key(&key),
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
