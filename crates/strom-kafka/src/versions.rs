//! The APIs this listener serves and the version range of each, as ApiVersions advertises them.
//! Every range lies within what the `kafka-protocol` codecs support, and tops out below the
//! versions that address topics by id only (Strom topics have no ids yet).

use kafka_protocol::messages::ApiKey;

/// `(api, min, max)` for every API the listener answers.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    // v13 names topics by id only.
    (ApiKey::Produce, 3, 12),
    // v13 names topics by id only.
    (ApiKey::Fetch, 4, 12),
    // v7 adds MAX_TIMESTAMP (-3), which the log cannot answer yet.
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    // v6 may name topics by id only; those get UNKNOWN_TOPIC_ID.
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    // v2 is the first flexible version.
    (ApiKey::DeleteRecords, 0, 2),
    // v0 is gone from Kafka 4 and from the codec; v2 is the first flexible version.
    (ApiKey::DescribeLogDirs, 1, 4),
    // v2 is the first flexible version.
    (ApiKey::ElectLeaders, 0, 2),
];

/// The supported range of `api`, if the listener serves it.
pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(k, _, _)| *k == api).map(|&(_, min, max)| (min, max))
}

/// Whether the listener serves `api` at `version`.
pub fn is_supported(api: ApiKey, version: i16) -> bool {
    supported(api).is_some_and(|(min, max)| (min..=max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    fn codec_range(api: ApiKey) -> (i16, i16) {
        let r = match api {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::VERSIONS,
            ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
            ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
            ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
            ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
            ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
            ApiKey::DescribeLogDirs => DescribeLogDirsRequest::VERSIONS,
            ApiKey::ElectLeaders => ElectLeadersRequest::VERSIONS,
            other => panic!("{other:?} not in the table"),
        };
        (r.min, r.max)
    }

    #[test]
    fn every_advertised_range_is_within_the_codec() {
        for &(api, min, max) in SUPPORTED_APIS {
            let (cmin, cmax) = codec_range(api);
            assert!(min <= max && cmin <= min && max <= cmax, "{api:?} {min}..={max}");
        }
    }
}
