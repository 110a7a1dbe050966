//! DescribeLogDirs (API 35, `kafka-log-dirs.sh --describe`): this node's one data directory,
//! with the size and offset lag of every replica in it that the request asks about (null
//! topics: all), and (v4) the total and usable bytes of its file system.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{Context, str_bytes, topic_name};

pub(super) async fn describe_log_dirs(
    ctx: &Context,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let described = ctx.broker().describe_log_dirs().await;
    // `None`: every replica; else only the named (topic, partition) pairs (unknown ones are
    // left out, as Kafka does).
    let wanted: Option<HashSet<(String, i32)>> = req.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.as_str().to_string(), *p)))
            .collect()
    });
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for p in described.partitions {
        if wanted.as_ref().is_some_and(|w| !w.contains(&(p.topic.clone(), p.partition))) {
            continue;
        }
        topics.entry(p.topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p.partition)
                .with_partition_size(i64::try_from(p.size_bytes).unwrap_or(i64::MAX))
                .with_offset_lag(p.offset_lag)
                .with_is_future_key(false),
        );
    }
    let bytes = |b: Option<u64>| b.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(&described.path))
        .with_total_bytes(bytes(described.total_bytes))
        .with_usable_bytes(bytes(described.usable_bytes))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    DescribeLogDirsTopic::default()
                        .with_name(topic_name(&name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    DescribeLogDirsResponse::default().with_results(vec![result])
}
