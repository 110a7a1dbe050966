//! The broker settings of the HTTP listener (`strom-http`: Prometheus metrics, health
//! endpoints, web console), which runs beside the gRPC server on the same [`Broker`]
//! (crate::Broker). Kept apart from `config.rs` so the listener's settings change in one place.

use std::net::SocketAddr;

use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// Where the HTTP listener binds unless told otherwise: loopback only, so metrics and the
/// console are not exposed to the network without an explicit choice.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9096";

impl BrokerConfig {
    /// The address the HTTP listener binds; `None` when `http_listen` is `none` (disabled).
    pub fn http_listen_addr(&self) -> Result<Option<SocketAddr>, BrokerError> {
        let value = self.http_listen.trim();
        if value.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        value.parse().map(Some).map_err(|_| {
            BrokerError::Config(format!(
                "http_listen must be an IP:port or `none`, got {:?}",
                self.http_listen
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_listener_defaults_to_loopback_9096_and_none_disables_it() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.http_listen_addr().ok().flatten(), "127.0.0.1:9096".parse().ok());
        c.http_listen = "NONE".into();
        assert_eq!(c.http_listen_addr().ok(), Some(None));
        c.http_listen = "localhost".into();
        assert!(c.validate().is_err());
        let c = BrokerConfig::from_toml_str("http_listen = \"127.0.0.1:0\"\n").expect("valid");
        assert_eq!(c.http_listen_addr().ok().flatten(), "127.0.0.1:0".parse().ok());
    }
}
