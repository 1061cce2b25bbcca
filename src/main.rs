//! The `introspectd` binary: parse the command line, run it. Everything else is in
//! the library ([`introspectd::cli`]).

use std::process::ExitCode;

use clap::Parser;

// In a profile of a hot Introspect against a health Check, glibc's malloc and free were
// the largest difference, more than all of introspectd's own code (README, Performance,
// "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    introspectd::cli::run(introspectd::cli::Cli::parse())
}
