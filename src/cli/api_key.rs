//! `introspectd api-key`: a new API key and its configuration entry.

use std::io::Write;
use std::path::{Path, PathBuf};
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
    /// Append the entry to this file (created if missing) instead of printing it, to
    /// build a keys file one key at a time.
    #[arg(long, value_name = "PATH")]
    append_to: Option<PathBuf>,
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
    let entry = format!("{table}\n{entry}");
    if let Some(path) = &args.append_to {
        if let Err(error) = append_entry(path, &entry) {
            eprintln!(
                "introspectd api-key: cannot append to {}: {error}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        say!("{key}");
        eprintln!(
            "Give the key (printed on stdout) to {}; its entry is in {}.",
            args.name,
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    say!("{key}");
    eprintln!(
        "Give the key (printed on stdout) to {}; add this to {place}:\n\n{entry}",
        args.name
    );
    ExitCode::SUCCESS
}

/// Appends after a blank line, so entries stay apart whatever the file ended with.
fn append_entry(path: &Path, entry: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let separator = if file.metadata()?.len() > 0 { "\n" } else { "" };
    file.write_all(format!("{separator}{entry}").as_bytes())?;
    file.sync_all()
}
