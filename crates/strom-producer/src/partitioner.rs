//! Partition choice exactly as Kafka's Java client makes it: murmur2 of the key, made positive,
//! modulo the partition count; records without a key stick to one partition per batch.

use rand::Rng;
use strom_client::TopicInfo;
use strom_format::PartitionId;

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`, little-endian blocks.
///
/// ```
/// assert_eq!(strom_producer::murmur2(b"foobar"), -790332482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java uses the `int` length; keys are far below 4 GiB.
    let mut h = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().unwrap_or_default());
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match *chunks.remainder() {
        [a, b, c] => {
            h ^= u32::from(c) << 16;
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a, b] => {
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a] => {
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key`:
/// `(murmur2(key) & 0x7fffffff) % num_partitions`. Returns partition 0 when `num_partitions`
/// is 0 (a topic always has at least one).
///
/// ```
/// use strom_format::PartitionId;
/// assert_eq!(strom_producer::partition_for_key(b"foobar", 10), PartitionId::new(6));
/// ```
pub fn partition_for_key(key: &[u8], num_partitions: u32) -> PartitionId {
    if num_partitions == 0 {
        return PartitionId::new(0);
    }
    let positive = (murmur2(key) as u32) & 0x7fff_ffff;
    // The remainder is below num_partitions <= u32::MAX and below 2^31 since positive is.
    PartitionId::new((positive % num_partitions) as i32)
}

/// A new sticky partition for records without a key: random among partitions with a leader
/// (all partitions if none has one), avoiding `current` when there is a choice.
pub(crate) fn pick_sticky(info: &TopicInfo, current: Option<PartitionId>) -> PartitionId {
    let mut rng = rand::rng();
    let available: Vec<PartitionId> = info
        .partitions
        .iter()
        .filter(|p| p.leader >= 0 && Some(p.id) != current)
        .map(|p| p.id)
        .collect();
    if !available.is_empty() {
        let i = rng.random_range(0..available.len());
        return available.get(i).copied().unwrap_or(PartitionId::new(0));
    }
    let n = info.partitions.len();
    if n == 0 {
        return PartitionId::new(0);
    }
    if n == 1 {
        return info.partitions.first().map_or(PartitionId::new(0), |p| p.id);
    }
    loop {
        let candidate = info.partitions.get(rng.random_range(0..n)).map(|p| p.id);
        if let Some(p) = candidate
            && Some(p) != current
        {
            return p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strom_client::PartitionInfo;
    use strom_format::LeaderEpoch;

    /// From Apache Kafka's `UtilsTest.testMurmur2` (clients/src/test/java/org/apache/kafka/
    /// common/utils/UtilsTest.java).
    const JAVA_VECTORS: &[(&[u8], i32)] = &[
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ];

    #[test]
    fn murmur2_matches_kafka_java_vectors() {
        for (input, expected) in JAVA_VECTORS {
            assert_eq!(murmur2(input), *expected, "murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn partition_for_key_uses_positive_hash() {
        // (-790332482 & 0x7fffffff) = 1357151166.
        assert_eq!(partition_for_key(b"foobar", 10), PartitionId::new(6));
        assert_eq!(partition_for_key(b"foobar", 50), PartitionId::new(16));
        assert_eq!(partition_for_key(b"foobar", 0), PartitionId::new(0));
        assert_eq!(partition_for_key(b"anything", 1), PartitionId::new(0));
    }

    fn topic(n: i32, leaderless: &[i32]) -> TopicInfo {
        TopicInfo {
            name: "t".into(),
            partitions: (0..n)
                .map(|i| PartitionInfo {
                    id: PartitionId::new(i),
                    leader: if leaderless.contains(&i) { -1 } else { 1 },
                    leader_epoch: LeaderEpoch::new(0),
                })
                .collect(),
        }
    }

    #[test]
    fn sticky_prefers_partitions_with_leaders_and_moves_on() {
        let info = topic(4, &[0, 1, 2]);
        for _ in 0..50 {
            assert_eq!(pick_sticky(&info, None), PartitionId::new(3));
        }
        let info = topic(3, &[]);
        for _ in 0..50 {
            assert_ne!(pick_sticky(&info, Some(PartitionId::new(1))), PartitionId::new(1));
        }
        let single = topic(1, &[0]);
        assert_eq!(pick_sticky(&single, Some(PartitionId::new(0))), PartitionId::new(0));
    }

    proptest! {
        #[test]
        fn same_key_same_partition_in_range(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            n in 1u32..10_000,
        ) {
            let p = partition_for_key(&key, n);
            prop_assert!(p.get() >= 0 && (p.get() as u32) < n);
            prop_assert_eq!(p, partition_for_key(&key.clone(), n));
        }

        #[test]
        fn murmur2_is_deterministic(key in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(murmur2(&key), murmur2(&key));
        }
    }
}
