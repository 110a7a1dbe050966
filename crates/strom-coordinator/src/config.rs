//! Coordinator configuration: Kafka's group settings and the limits that bound what one
//! client can make the coordinator hold.

use std::time::Duration;

/// Settings of a [`crate::GroupCoordinator`].
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Smallest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`).
    pub min_session_timeout: Duration,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub max_session_timeout: Duration,
    /// How long the first rebalance of an empty group waits for more members before it
    /// completes (`group.initial.rebalance.delay.ms`). Each new member extends the wait by this
    /// much again, up to the rebalance timeout.
    ///
    /// Defaults to zero, so a single joiner gets its answer at once (what tests want); Kafka's
    /// default is 3 s, which a broker serving many consumers per group should use to avoid a
    /// burst of rebalances while a fleet starts up.
    pub initial_rebalance_delay: Duration,
    /// Rebalance timeouts above this are clamped to it, so no join phase can hang for longer.
    pub max_rebalance_timeout: Duration,
    /// Most members (joined or pending) one group may have (`group.max.size`).
    pub max_group_size: usize,
    /// Most groups with live state the coordinator keeps; empty groups are evicted first.
    pub max_groups: usize,
    /// Longest group id accepted, in bytes.
    pub max_group_id_len: usize,
    /// Longest client id or protocol type accepted, in bytes.
    pub max_name_len: usize,
    /// Most protocols one member may offer in JoinGroup.
    pub max_protocols_per_member: usize,
    /// Most bytes of protocol metadata one member may send in JoinGroup (all protocols).
    pub max_member_metadata_bytes: usize,
    /// Most bytes of assignment the leader may hand one member.
    pub max_assignment_bytes: usize,
    /// Longest metadata string of a committed offset (`offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
    /// Most partitions one offset commit may carry.
    pub max_offsets_per_commit: usize,
    /// How long the offsets of a group without members are kept
    /// (`offsets.retention.minutes`, 7 days): counted from the later of the offset's commit
    /// and the moment the group became empty (KIP-211). Expiry writes tombstones.
    pub offsets_retention: Duration,
    /// How often expired offsets are looked for (`offsets.retention.check.interval.ms`).
    pub offsets_retention_check_interval: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(30 * 60),
            initial_rebalance_delay: Duration::ZERO,
            max_rebalance_timeout: Duration::from_secs(30 * 60),
            max_group_size: 1000,
            max_groups: 10_000,
            max_group_id_len: 1024,
            max_name_len: 1024,
            max_protocols_per_member: 32,
            max_member_metadata_bytes: 1024 * 1024,
            max_assignment_bytes: 1024 * 1024,
            offset_metadata_max_bytes: 4096,
            max_offsets_per_commit: 100_000,
            offsets_retention: Duration::from_secs(7 * 24 * 60 * 60),
            offsets_retention_check_interval: Duration::from_secs(10 * 60),
        }
    }
}
