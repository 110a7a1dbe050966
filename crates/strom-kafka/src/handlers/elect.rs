//! ElectLeaders (API 43, `kafka-leader-election.sh`): preferred or unclean elections through
//! the active controller (`strom_broker::ElectionType`), answered per partition. Null
//! partitions mean every partition of the cluster, and then partitions that needed no
//! election are left out of the answer, as Kafka does.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use strom_broker::{ApiError, ElectionOutcome, ElectionType};
use strom_proto::v1::ErrorCode;

use super::{Context, code, str_bytes, topic_name};

pub(super) async fn elect_leaders(
    ctx: &Context,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    // v0 has no election type: preferred.
    let election = if version == 0 {
        Some(ElectionType::Preferred)
    } else {
        ElectionType::from_kafka(req.election_type)
    };
    let partitions: Option<Vec<(String, i32)>> = req.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.as_str().to_string(), *p)))
            .collect()
    });
    let refusal = match (election, &partitions) {
        (None, _) => Some(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("unknown election type {} (0 preferred, 1 unclean)", req.election_type),
        )),
        (Some(_), Some(list)) => strom_broker::check_partition_entries(
            "elect leaders",
            list.iter().map(|(t, p)| (t.as_str(), *p)),
        )
        .err(),
        (Some(_), None) => None,
    };
    let outcomes = match (refusal, election) {
        (Some(e), _) => Err(e),
        (None, Some(election)) => ctx.broker().elect_leaders(election, partitions.clone()).await,
        (None, None) => Err(ApiError::new(ErrorCode::InvalidRequest, "no election")),
    };
    let (top_level, outcomes) = match outcomes {
        Ok(outcomes) => (0, outcomes),
        // The whole request failed: every named partition carries the error (v0 has no
        // top-level code), and v1+ says it at the top too.
        Err(e) => {
            let every = partitions.unwrap_or_default();
            let outcomes = every
                .into_iter()
                .map(|(topic, partition)| ElectionOutcome {
                    topic,
                    partition,
                    result: Err(e.clone()),
                })
                .collect();
            (code(&e), outcomes)
        }
    };
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for o in outcomes {
        let (error_code, error_message) = match &o.result {
            Ok(_) => (0, None),
            Err(e) => (code(e), Some(str_bytes(&e.message))),
        };
        by_topic.entry(o.topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(o.partition)
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    let results = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(topic_name(&topic))
                .with_partition_result(partitions)
        })
        .collect();
    let response = ElectLeadersResponse::default().with_replica_election_results(results);
    if version >= 1 { response.with_error_code(top_level) } else { response }
}
