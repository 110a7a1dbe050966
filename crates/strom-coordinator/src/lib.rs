//! strom-coordinator
