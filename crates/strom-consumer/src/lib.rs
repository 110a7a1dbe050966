//! strom-consumer
