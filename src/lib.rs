//! introspectd: token introspection beside your services.
//!
//! ```text
//! main.rs ─► cli (arguments) ─► config (file + env → Config of domain types)
//!   App::build: keys (issuers, key sets)   statelog (revocations, subject claims)
//!               introspect (Introspector: cache → token/opaque → revocation → enrich)
//!   App::serve: grpc (tonic services + auth/metrics layers, health, reflection) ─┐ translate
//!               http (axum: RFC 7662/7009, health, metrics)                       ─┘ only
//!               tasks (every background task, named, joined on shutdown)
//! ```
//!
//! | module | owns |
//! | --- | --- |
//! | [`app`] | assembling the components ([`App::build`]) and serving them ([`App::serve`]) |
//! | [`config`] | the TOML file and `INTROSPECTD_*` overrides, validated into [`config::Config`] |
//! | [`token`] | pure validation: token + [`token::Policy`] + key set + now → claims or a reason |
//! | [`keys`] | issuers ([`keys::IssuerSpec`]), their key-set snapshots, JWKS fetch, refresh |
//! | [`cache`] | verified tokens by SHA-256 |
//! | [`opaque`] | opaque tokens, asked of their issuer's RFC 7662 endpoint |
//! | [`revocation`] | the revocation set; revoke, check and watch |
//! | [`statelog`] | the ordered log of changes: memory, embedded (redb), Redis Streams |
//! | [`enrich`] | enrichers ([`enrich::Spec`]) and per-subject claims |
//! | [`gateway`] | the decision gateways ask for (ext_authz, forward-auth), as headers or an RFC 6750 denial |
//! | [`binding`] | sender-constrained tokens: DPoP proofs (RFC 9449), certificate-bound tokens (RFC 8705) |
//! | [`auth`] | API keys, roles, and who may make which call |
//! | [`introspect`] | the [`introspect::Introspector`] facade used by every surface |
//! | [`grpc`], [`http`] | transports |
//! | [`calls`] | the futures both transports wrap a call in: refused before its handler, holding an in-flight slot, bounded by the call timeout |
//! | [`listener`] | accepting connections: a cap per listener, back-off on `EMFILE`, a first-byte timeout, TLS handshakes |
//! | [`tls`] | TLS and mTLS material, reloaded when its files change; client certificate identities |
//! | [`outbound`] | the one HTTP client and its error handling, for every outbound call |
//! | [`ttl_map`] | the bounded expiring map behind every cache |
//! | [`digest`] | fixed-size keys from strings |
//! | [`signing`] | signed introspection answers (RFC 9701) and their published keys |
//! | [`tasks`] | named background tasks, stopped and joined together |
//! | [`dev`] | the local issuer of `introspectd dev` and `introspectd mint` |
//! | [`cli`] | the command line: `serve`, `dev`, and the client commands |
//! | [`telemetry`] | logs, traces, metrics |

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod binding;
pub mod cache;
pub mod calls;
pub mod cli;
pub mod config;
pub mod dev;
pub mod digest;
pub mod enrich;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod introspect;
pub mod keys;
pub mod listener;
pub mod opaque;
pub mod outbound;
pub mod revocation;
pub mod signing;
pub mod statelog;
pub mod tasks;
pub mod telemetry;
#[cfg(test)]
mod test_util;
pub mod tls;
pub mod token;
pub mod ttl_map;

pub use app::{App, BuildError, Listeners, RunError, RunOptions, ServeError, run};

/// Seconds since the Unix epoch: the one place the wall clock is read for token rules.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Takes SIGHUP before anything is built (the store opened, keys loaded): its default
/// action ends the process, and a service that is starting must not die of it any more
/// than one that serves. tokio keeps a handler, once installed, for the life of the
/// process; the running service listens for the signal itself (it reads its files again).
/// Where it cannot be installed, the service's own listener says so.
pub fn take_sighup() {
    #[cfg(unix)]
    let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
