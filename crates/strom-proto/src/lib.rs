//! Generated protobuf messages and tonic service traits of Strom's gRPC API
//! (`proto/strom/v1/*.proto`). Only generated code lives here; the broker implements the
//! servers and strom-client wraps the clients.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// `strom.v1`: the current API version.
pub mod v1 {
    tonic::include_proto!("strom.v1");
}
