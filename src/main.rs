//! The `introspectd` binary: parse the command line, run it. Everything else is in
//! the library ([`introspectd::cli`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    introspectd::cli::run(introspectd::cli::Cli::parse())
}
