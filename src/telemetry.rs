//! Logs: text or JSON lines on stderr (stdout stays free for `mint` and the client),
//! filtered by `RUST_LOG` or the configured filter.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSection};

/// Installs the global subscriber. Returns an error if the filter does not parse or a
/// subscriber is already installed.
pub fn init(log: &LogSection) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(&log.filter),
    }
    .map_err(|e| format!("log.filter: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry();
    let result = match log.format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}
