//! `introspectd dpop-proof`: a DPoP proof from the dev client key, so the README can
//! show the whole sender-constrained flow without a client library.

use std::process::ExitCode;

use clap::Args;

use super::{DataDirArg, EXIT_CONFIG};
use crate::binding::dpop::{self, ProofClaims};
use crate::dev;

#[derive(Args)]
pub struct DpopProofArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Print the key's RFC 7638 thumbprint (for `mint --dpop-jkt`) instead of a proof.
    #[arg(long, conflicts_with_all = ["method", "uri", "token", "nonce"])]
    print_jkt: bool,
    /// The request's method (`htm`).
    #[arg(long, required_unless_present = "print_jkt")]
    method: Option<String>,
    /// The request's absolute URI (`htu`).
    #[arg(long, required_unless_present = "print_jkt")]
    uri: Option<String>,
    /// The access token the proof goes with (`ath`).
    #[arg(long)]
    token: Option<String>,
    /// A server nonce from `DPoP-Nonce` (or an answer's `dpop_nonce`).
    #[arg(long)]
    nonce: Option<String>,
}

pub fn dpop_proof(args: &DpopProofArgs) -> ExitCode {
    let key = match dev::dpop_client_key(&args.data.data_dir) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("introspectd dpop-proof: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_jkt {
        return match dpop::thumbprint(&dpop::proof_jwk(&key)) {
            Some(jkt) => {
                say!("{jkt}");
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        };
    }
    let (Some(method), Some(uri)) = (&args.method, &args.uri) else {
        eprintln!("introspectd dpop-proof: --method and --uri are required");
        return ExitCode::from(EXIT_CONFIG);
    };
    let claims = ProofClaims {
        method,
        uri,
        access_token: args.token.as_deref(),
        nonce: args.nonce.as_deref(),
    };
    match dpop::make_proof(&key, &claims, crate::unix_now()) {
        Ok(proof) => {
            say!("{proof}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("introspectd dpop-proof: {error}");
            ExitCode::FAILURE
        }
    }
}
