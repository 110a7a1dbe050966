//! ApiVersions: the version range of every API we serve. The answer leaves the v3+ tagged
//! fields (features) at their defaults, so none are written: librdkafka 2.0.2 (kcat) rejects
//! an ApiVersions answer with top-level tagged fields it does not expect.

use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use super::codes::UNSUPPORTED_VERSION;
use crate::versions::SUPPORTED_APIS;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

/// The answer to a supported ApiVersions request.
pub(super) fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The answer to ApiVersions at a version we do not know: UNSUPPORTED_VERSION in the v0
/// format, still listing our ranges, so the client retries with a version we support.
pub(super) fn unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(UNSUPPORTED_VERSION).with_api_keys(api_keys())
}
