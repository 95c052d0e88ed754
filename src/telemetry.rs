//! Logging: one JSON object per line on stdout, which the host forwards to Application
//! Insights; the per-invocation summary also goes into the reply's `Logs[]`.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber; `BRIDGE_LOG` (EnvFilter syntax) overrides the `info` default.
pub fn init() {
    let filter = EnvFilter::try_from_env("BRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}
