//! The broker settings of the Kafka protocol listener (`strom-kafka`), which runs beside the
//! gRPC server and maps Kafka requests onto this crate's [`Broker`](crate::Broker). Kept apart
//! from `config.rs` so the listener's settings change in one place.

use std::net::SocketAddr;

use crate::config::{BrokerConfig, parse_host_port};
use crate::error::BrokerError;

/// Where the Kafka listener binds unless told otherwise: Kafka's own port.
pub const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9092";

impl BrokerConfig {
    /// The address the Kafka listener binds; `None` when `kafka_listen` is `none` (disabled).
    pub fn kafka_listen_addr(&self) -> Result<Option<SocketAddr>, BrokerError> {
        let value = self.kafka_listen.trim();
        if value.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        value.parse().map(Some).map_err(|_| {
            BrokerError::Config(format!(
                "kafka_listen must be an IP:port or `none`, got {:?}",
                self.kafka_listen
            ))
        })
    }

    pub(crate) fn validate_kafka(&self) -> Result<(), BrokerError> {
        self.kafka_listen_addr()?;
        if let Some(addr) = &self.kafka_advertised_address {
            parse_host_port(addr)
                .map_err(|e| BrokerError::Config(format!("kafka_advertised_address: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_listener_defaults_to_port_9092_and_none_disables_it() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.kafka_listen_addr().ok().flatten(), "127.0.0.1:9092".parse().ok());
        c.kafka_listen = "none".into();
        assert_eq!(c.kafka_listen_addr().ok(), Some(None));
        c.kafka_listen = "nonsense".into();
        assert!(c.validate().is_err());
        let c = BrokerConfig::from_toml_str("kafka_listen = \"0.0.0.0:0\"\n").expect("valid");
        assert_eq!(c.kafka_listen_addr().ok().flatten(), "0.0.0.0:0".parse().ok());
    }
}
