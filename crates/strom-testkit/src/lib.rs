//! Test support shared by the workspace's test suites: fakes, failing doubles and start-up
//! helpers that several crates' tests need.
//!
//! Why a crate: before it, each test suite carried its own copy of the same fake services and
//! failing-store doubles, and the copies drifted. This crate is only ever a `dev-dependency`;
//! nothing in a shipped binary links it, so it may `panic!` on set-up failures (a test that cannot
//! start should fail loudly) but never hides the failure it is asked to inject.
//!
//! - [`broker`]: a real in-process broker on port 0 with its data in a temporary directory.
//! - [`fake_broker`]: the pieces of a scripted gRPC broker: an `Admin` service that answers
//!   only Metadata, a forwarder to a real broker, a port-0 server and metadata builders. Each
//!   test suite keeps only the behaviour it scripts (its `Broker` or `Group` service).
//! - [`offsets_log`]: a `__consumer_offsets` partition whose appends and flushes fail or stall
//!   on demand, for the group coordinator's commit tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod broker;
pub mod fake_broker;
pub mod offsets_log;
