//! Start-up shared by the client binaries (strom-admin, strom-producer, strom-consumer,
//! strom-bench): their logs go to stderr so stdout carries only data.

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `warn`, or at what `RUST_LOG` asks for.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
}
