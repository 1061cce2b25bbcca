//! `introspectd revoke`: revoke on a running server.

use std::process::ExitCode;

use clap::Args;

use super::{ClientArgs, EXIT_CONFIG, token_arg};
use crate::dev;
use crate::grpc::pb::{self, token_revocation_client::TokenRevocationClient};

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
pub struct RevokeArgs {
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

pub async fn revoke(args: RevokeArgs) -> ExitCode {
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
            .map_err(|status| super::refusal(&status))
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
