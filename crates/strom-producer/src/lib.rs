//! strom-producer
