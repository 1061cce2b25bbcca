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
    /// Where the entry goes: `config` (an `[[auth.api_keys]]` table for the
    /// configuration file) or `keys-file` (an `[[api_keys]]` table for the file named by
    /// `auth.api_keys_file`, a mounted Secret, say).
    #[arg(long, value_enum, default_value_t = EntryFormat::Config)]
    format: EntryFormat,
}

/// Where an API key's entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EntryFormat {
    Config,
    KeysFile,
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
    let (table, place) = match args.format {
        EntryFormat::Config => ("[[auth.api_keys]]", "the configuration file"),
        EntryFormat::KeysFile => ("[[api_keys]]", "the file auth.api_keys_file names"),
    };
    println!("{key}");
    eprintln!(
        "Give the key (printed on stdout) to {}; add this to {place}:\n\n{table}\n{entry}",
        args.name
    );
    ExitCode::SUCCESS
}
