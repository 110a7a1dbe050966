//! Start-up shared by the client binaries (strom-admin, strom-producer, strom-consumer,
//! strom-bench): their logs go to stderr so stdout carries only data.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `warn`, or at what `RUST_LOG` asks for; colours only on a terminal, so
/// logs piped or written to files carry no escape codes.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
