//! Topics as the broker serves them: name rules, the in-memory [`Topic`] and the registry that
//! request handlers look partitions up in.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use strom_proto::v1::ErrorCode;

use crate::config::TopicConfig;
use crate::error::ApiError;
use crate::partition::Partition;

/// Longest topic name, as in Kafka (a partition directory name must fit in 255 bytes).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name against Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not
/// `.` or `..`.
///
/// ```
/// use strom_broker::validate_topic_name;
/// assert!(validate_topic_name("orders.v1_eu-west").is_ok());
/// assert!(validate_topic_name("bad/name").is_err());
/// assert!(validate_topic_name("..").is_err());
/// ```
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: String| Err(ApiError::new(ErrorCode::InvalidTopicException, why));
    if name.is_empty() {
        return invalid("topic name is empty".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid(format!(
            "topic name is {} characters; at most {MAX_TOPIC_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return invalid(format!("topic name {name:?} is not allowed"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c))) {
        return invalid(format!(
            "topic name {name:?} contains {c:?}; only [a-zA-Z0-9._-] are allowed"
        ));
    }
    Ok(())
}

/// Internal topics (`__consumer_offsets`, ...) start with two underscores, as in Kafka.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with("__")
}

/// A topic as this node serves it: its settings and the partitions it holds a replica of
/// (`None` where the replicas live on other nodes).
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: String,
    /// The metadata's id of this incarnation of the name.
    pub(crate) topic_id: String,
    pub(crate) config: TopicConfig,
    pub(crate) partitions: Vec<Option<Arc<Partition>>>,
}

impl Topic {
    /// The partitions with a replica on this node.
    pub(crate) fn local_partitions(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.partitions.iter().flatten()
    }
}

/// Every served topic by name. The lock is held only to look up or swap entries, never across
/// I/O or an `.await`; handlers clone the `Arc`s they need and let go.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
}

impl Registry {
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, ApiError> {
        let topics = self.topics.read();
        let slot = usize::try_from(partition)
            .ok()
            .and_then(|p| topics.get(topic)?.partitions.get(p).cloned())
            .ok_or_else(|| ApiError::unknown_topic_or_partition(topic, partition))?;
        slot.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotLeaderOrFollower,
                format!("{topic}-{partition} has no replica on this broker"),
            )
        })
    }

    pub(crate) fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub(crate) fn partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .values()
            .flat_map(|t| t.local_partitions().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub(crate) fn insert(&self, topic: Arc<Topic>) {
        self.topics.write().insert(topic.name.clone(), topic);
    }

    pub(crate) fn remove(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.write().remove(name)
    }

    pub(crate) fn drain(&self) -> Vec<Arc<Topic>> {
        self.topics.write().drain().map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules() {
        for ok in ["a", "orders", "A.b_c-9", "__consumer_offsets", "...", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "..", "a b", "bad/name", "ü", "a\0", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTopicException, "{bad:?}");
        }
        assert!(is_internal_topic("__consumer_offsets"));
        assert!(!is_internal_topic("_one"));
    }
}
