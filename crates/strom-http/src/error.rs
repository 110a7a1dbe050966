//! The crate's error type: what can go wrong starting the listener.

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The address could not be bound (in use, not local, no permission): pick another
    /// `--http-listen` or `none`.
    #[error("binding the HTTP listener to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
