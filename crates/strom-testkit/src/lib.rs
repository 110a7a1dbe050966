//! Test support shared by the workspace's test suites: fakes, failing doubles and start-up
//! helpers that several crates' tests need.
//!
//! Why a crate: before it, each test suite carried its own copy of the same fake services and
//! failing-store doubles, and the copies drifted. This crate is only ever a `dev-dependency`;
//! nothing in a shipped binary links it, so it may `panic!` on set-up failures (a test that cannot
//! start should fail loudly) but never hides the failure it is asked to inject.

pub mod offsets_log;
