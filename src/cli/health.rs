//! `introspectd health`: the gRPC health check from the command line, for `helm test`,
//! container health checks and scripts (the image has no shell and no grpcurl).

use std::process::ExitCode;

use clap::Args;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::ClientArgs;

#[derive(Args)]
pub struct HealthArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The service to ask about: "" (ready: keys loaded, store caught up), "liveness",
    /// or a served service's full name.
    #[arg(long, default_value = "")]
    service: String,
}

/// Prints the status; exits 0 when SERVING, 1 otherwise.
pub async fn health(args: HealthArgs) -> ExitCode {
    let asked = async {
        let channel = args.client.channel().await?;
        let request = args.client.request(HealthCheckRequest {
            service: args.service.clone(),
        })?;
        HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|status| super::refusal(&status))
    };
    match asked.await {
        Ok(response) => {
            let status = ServingStatus::try_from(response.into_inner().status)
                .unwrap_or(ServingStatus::Unknown);
            say!("{}", status.as_str_name());
            if status == ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("introspectd health: {error}");
            ExitCode::FAILURE
        }
    }
}
