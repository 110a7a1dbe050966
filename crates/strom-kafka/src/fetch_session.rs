//! KIP-227 incremental fetch sessions: the per-listener cache of what each consumer fetches, so
//! that after one full Fetch the client sends only the partitions whose fetch position changed
//! and the broker answers only the partitions that have something new.
//!
//! Pure: no I/O, no clock (time is an argument), no lock; the handler (`handlers/fetch.rs`) holds
//! the cache under a mutex for each step and never across the fetch itself. The invariants:
//! - a session answers only requests carrying its current epoch (the next one after each
//!   answered request), so a lost or reordered request is detected (INVALID_FETCH_SESSION_EPOCH)
//!   and the client falls back to a full fetch;
//! - the cache holds at most `slots` sessions (Kafka's
//!   `max.incremental.fetch.session.cache.slots`) and each session at most
//!   [`MAX_SESSION_PARTITIONS`] partitions;
//! - an incremental answer leaves a partition out only if nothing the client could act on
//!   changed since it was last sent: no records, same high watermark and log start, no error
//!   (an error resets the cached high watermark, so the partition is sent again once it clears).
//!
//! Eviction follows Kafka's `FetchSessionCache`: a new session may take the slot of a session
//! unused for `eviction_ms`, or else of one older than `eviction_ms` with fewer partitions than
//! the new one (its owner re-creates it with its next full fetch); otherwise the new client gets
//! session id 0 and keeps sending full requests.

use std::collections::HashMap;

use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;

/// Kafka's default `max.incremental.fetch.session.cache.slots`.
pub const DEFAULT_SESSION_SLOTS: usize = 1000;
/// Kafka's `min.incremental.fetch.session.eviction.ms` (not configurable there either).
pub const SESSION_EVICTION_MS: u64 = 120_000;
/// Most partitions one session may hold: the broker's cap on one fetch.
pub const MAX_SESSION_PARTITIONS: usize = strom_broker::MAX_FETCH_PARTITIONS;

/// The session id meaning "no session" (Kafka's INVALID_SESSION_ID).
pub const NO_SESSION: i32 = 0;
/// The epoch of a full request that must not create a session (Kafka's FINAL_EPOCH).
pub const FINAL_EPOCH: i32 = -1;
/// The epoch of a full request that asks for a session (Kafka's INITIAL_EPOCH).
pub const INITIAL_EPOCH: i32 = 0;

/// A partition as a session names it.
pub type PartitionKey = (String, i32);

/// What the client asked of one partition; a session keeps the last values it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// Where to read from.
    pub fetch_offset: i64,
    /// Byte limit of this partition in one answer.
    pub partition_max_bytes: i32,
    /// The leader epoch the client believes current (-1: unknown).
    pub current_leader_epoch: i32,
}

/// What one partition's answer said, for deciding whether the next one must be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Bytes of records returned.
    pub records_len: usize,
    /// The partition's error code (0: none).
    pub error_code: i16,
    /// High watermark returned.
    pub high_watermark: i64,
    /// Log start offset returned.
    pub log_start_offset: i64,
}

#[derive(Debug, Clone)]
struct Cached {
    position: FetchPosition,
    /// Last values sent to the client; -1 until first sent, and after an error.
    high_watermark: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    epoch: i32,
    /// In fetch order: partitions that returned records move to the end, so that a
    /// response size limit does not starve the partitions behind them.
    partitions: IndexMap<PartitionKey, Cached>,
    created_ms: u64,
    last_used_ms: u64,
}

/// How to run one Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Fetch these partitions; answer every one with session id 0 (epoch -1, or a session
    /// that became empty).
    Sessionless,
    /// Fetch the request's partitions, answer every one, then offer a session
    /// ([`FetchSessionCache::create`]).
    Full,
    /// Fetch every partition of the session, in this order, and answer the ones
    /// [`FetchSessionCache::filter`] keeps.
    Incremental {
        /// The session.
        session_id: i32,
        /// Its partitions, with the positions to fetch from.
        partitions: Vec<(PartitionKey, FetchPosition)>,
    },
    /// Answer with this top-level error and session id 0 (the client starts over with a full
    /// request).
    Error(i16),
}

/// Kafka's FETCH_SESSION_ID_NOT_FOUND.
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = ResponseError::FetchSessionIdNotFound.code();
/// Kafka's INVALID_FETCH_SESSION_EPOCH.
pub const INVALID_FETCH_SESSION_EPOCH: i16 = ResponseError::InvalidFetchSessionEpoch.code();

/// The sessions of one listener.
#[derive(Debug)]
pub struct FetchSessionCache {
    slots: usize,
    eviction_ms: u64,
    sessions: HashMap<i32, Session>,
    /// State of the id generator (splitmix64): ids are hard to guess and never 0 or negative.
    id_state: u64,
    evictions: u64,
}

impl FetchSessionCache {
    /// A cache of at most `slots` sessions (0 disables sessions: every client stays
    /// sessionless). `seed` varies the session ids.
    pub fn new(slots: usize, eviction_ms: u64, seed: u64) -> Self {
        FetchSessionCache {
            slots,
            eviction_ms,
            sessions: HashMap::new(),
            id_state: seed,
            evictions: 0,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Sessions evicted to make room for others, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Decides how to serve a request with `session_id` / `epoch`, naming `changed` partitions
    /// (for a full request: all of them) and `forgotten` ones, at `now_ms`. For an incremental
    /// request this already updates the session and moves its epoch on, as Kafka does: a
    /// request that fails afterwards still used the epoch up.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        changed: &[(PartitionKey, FetchPosition)],
        forgotten: &[PartitionKey],
        now_ms: u64,
    ) -> Plan {
        if epoch == FINAL_EPOCH || epoch == INITIAL_EPOCH {
            // A full request closes the session it names.
            if session_id != NO_SESSION {
                self.sessions.remove(&session_id);
            }
            return if epoch == FINAL_EPOCH { Plan::Sessionless } else { Plan::Full };
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Plan::Error(FETCH_SESSION_ID_NOT_FOUND);
        };
        if session.epoch != epoch {
            return Plan::Error(INVALID_FETCH_SESSION_EPOCH);
        }
        for key in forgotten {
            session.partitions.shift_remove(key);
        }
        for (key, position) in changed {
            match session.partitions.get_mut(key) {
                Some(cached) => cached.position = *position,
                None => {
                    session.partitions.insert(
                        key.clone(),
                        Cached { position: *position, high_watermark: -1, log_start_offset: -1 },
                    );
                }
            }
        }
        if session.partitions.is_empty() || session.partitions.len() > MAX_SESSION_PARTITIONS {
            // Empty: nothing left to remember (Kafka answers it sessionless). Too large: the
            // client starts over with a full request, which the broker bounds like any fetch.
            let oversized = !session.partitions.is_empty();
            self.sessions.remove(&session_id);
            return if oversized {
                Plan::Error(FETCH_SESSION_ID_NOT_FOUND)
            } else {
                Plan::Sessionless
            };
        }
        session.epoch = next_epoch(session.epoch);
        session.last_used_ms = now_ms;
        let partitions = session.partitions.iter().map(|(k, c)| (k.clone(), c.position)).collect();
        Plan::Incremental { session_id, partitions }
    }

    /// After a full request's answer: creates a session of `partitions` (with what was
    /// answered for each) if a slot is free or can be freed, returning its id; else
    /// [`NO_SESSION`].
    pub fn create(
        &mut self,
        partitions: Vec<(PartitionKey, FetchPosition, Answered)>,
        now_ms: u64,
    ) -> i32 {
        if self.slots == 0
            || partitions.is_empty()
            || partitions.len() > MAX_SESSION_PARTITIONS
            || (self.sessions.len() >= self.slots && !self.evict_one(partitions.len(), now_ms))
        {
            return NO_SESSION;
        }
        let id = self.new_id();
        let mut map = IndexMap::with_capacity(partitions.len());
        for (key, position, answered) in partitions {
            let mut cached = Cached { position, high_watermark: -1, log_start_offset: -1 };
            remember(&mut cached, &answered);
            map.insert(key, cached);
        }
        let session = Session {
            epoch: next_epoch(INITIAL_EPOCH),
            partitions: map,
            created_ms: now_ms,
            last_used_ms: now_ms,
        };
        self.sessions.insert(id, session);
        id
    }

    /// After an incremental request's answer: which of the fetched partitions (in the order
    /// the plan gave) go into the answer, updating what the session remembers. A session gone
    /// meanwhile (evicted, closed by another request) keeps every partition.
    pub fn filter(&mut self, session_id: i32, answered: &[(PartitionKey, Answered)]) -> Vec<bool> {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return vec![true; answered.len()];
        };
        answered
            .iter()
            .map(|(key, a)| {
                let Some(cached) = session.partitions.get_mut(key) else { return true };
                let must = a.records_len > 0
                    || a.error_code != 0
                    || a.high_watermark != cached.high_watermark
                    || a.log_start_offset != cached.log_start_offset;
                remember(cached, a);
                if a.records_len > 0
                    && let Some((key, cached)) = session.partitions.shift_remove_entry(key)
                {
                    session.partitions.insert(key, cached);
                }
                must
            })
            .collect()
    }

    /// Frees one slot for a new session of `size` partitions, as Kafka's `tryEvict`: the
    /// least recently used session if it is stale, else the smallest session older than the
    /// eviction time if it is smaller than the new one.
    fn evict_one(&mut self, size: usize, now_ms: u64) -> bool {
        let stalest = self.sessions.iter().min_by_key(|(id, s)| (s.last_used_ms, **id));
        if let Some((&id, s)) = stalest
            && now_ms.saturating_sub(s.last_used_ms) > self.eviction_ms
        {
            self.sessions.remove(&id);
            self.evictions += 1;
            return true;
        }
        let smallest = self
            .sessions
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.created_ms) > self.eviction_ms)
            .min_by_key(|(id, s)| (s.partitions.len(), **id));
        match smallest {
            Some((&id, s)) if s.partitions.len() < size => {
                self.sessions.remove(&id);
                self.evictions += 1;
                true
            }
            _ => false,
        }
    }

    fn new_id(&mut self) -> i32 {
        loop {
            self.id_state = self.id_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.id_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // Positive and non-zero, as Kafka's ids.
            let id = (z & 0x7fff_ffff) as i32;
            if id != NO_SESSION && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

fn remember(cached: &mut Cached, a: &Answered) {
    if a.error_code != 0 {
        cached.high_watermark = -1;
    } else {
        cached.high_watermark = a.high_watermark;
    }
    cached.log_start_offset = a.log_start_offset;
}

/// Kafka's `FetchMetadata.nextEpoch`: 1, 2, ... and after i32::MAX back to 1.
fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 || epoch == i32::MAX { 1 } else { epoch + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        ("t".to_string(), p)
    }

    fn pos(offset: i64) -> FetchPosition {
        FetchPosition {
            fetch_offset: offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    fn quiet(hw: i64) -> Answered {
        Answered { records_len: 0, error_code: 0, high_watermark: hw, log_start_offset: 0 }
    }

    /// A session of partitions 0..n, all answered with high watermark 10.
    fn session(cache: &mut FetchSessionCache, n: i32, now: u64) -> i32 {
        let changed: Vec<_> = (0..n).map(|p| (key(p), pos(0))).collect();
        assert_eq!(cache.begin(NO_SESSION, INITIAL_EPOCH, &changed, &[], now), Plan::Full);
        cache.create(changed.into_iter().map(|(k, p)| (k, p, quiet(10))).collect(), now)
    }

    fn incremental(plan: Plan) -> Vec<(PartitionKey, FetchPosition)> {
        match plan {
            Plan::Incremental { partitions, .. } => partitions,
            other => panic!("expected an incremental plan, got {other:?}"),
        }
    }

    #[test]
    fn a_full_request_creates_a_session_and_epochs_must_follow() {
        let mut cache = FetchSessionCache::new(10, SESSION_EVICTION_MS, 1);
        let id = session(&mut cache, 2, 0);
        assert_ne!(id, NO_SESSION);
        assert_eq!(cache.len(), 1);
        // Epoch 1 follows the creating request; the positions are the cached ones.
        let parts = incremental(cache.begin(id, 1, &[], &[], 1));
        assert_eq!(parts, vec![(key(0), pos(0)), (key(1), pos(0))]);
        // Repeating epoch 1 (a resent or reordered request) is refused.
        assert_eq!(cache.begin(id, 1, &[], &[], 2), Plan::Error(INVALID_FETCH_SESSION_EPOCH));
        assert!(matches!(cache.begin(id, 2, &[], &[], 2), Plan::Incremental { .. }));
        assert_eq!(cache.begin(id + 1, 3, &[], &[], 2), Plan::Error(FETCH_SESSION_ID_NOT_FOUND));
    }

    #[test]
    fn epoch_minus_one_is_sessionless_and_closes_the_named_session() {
        let mut cache = FetchSessionCache::new(10, SESSION_EVICTION_MS, 1);
        let id = session(&mut cache, 1, 0);
        assert_eq!(cache.begin(id, FINAL_EPOCH, &[], &[], 1), Plan::Sessionless);
        assert!(cache.is_empty());
        assert_eq!(cache.begin(id, 1, &[], &[], 1), Plan::Error(FETCH_SESSION_ID_NOT_FOUND));
    }

    #[test]
    fn a_full_request_naming_a_session_replaces_it() {
        let mut cache = FetchSessionCache::new(10, SESSION_EVICTION_MS, 1);
        let old = session(&mut cache, 1, 0);
        assert_eq!(cache.begin(old, INITIAL_EPOCH, &[], &[], 1), Plan::Full);
        assert!(cache.is_empty());
    }

    #[test]
    fn changed_partitions_update_added_ones_join_forgotten_ones_leave() {
        let mut cache = FetchSessionCache::new(10, SESSION_EVICTION_MS, 1);
        let id = session(&mut cache, 2, 0);
        let parts =
            incremental(cache.begin(id, 1, &[(key(1), pos(7)), (key(5), pos(3))], &[key(0)], 1));
        assert_eq!(parts, vec![(key(1), pos(7)), (key(5), pos(3))]);
        // Forgetting everything ends the session; that request is answered sessionless.
        assert_eq!(cache.begin(id, 2, &[], &[key(1), key(5)], 2), Plan::Sessionless);
        assert!(cache.is_empty());
    }

    #[test]
    fn unchanged_partitions_are_left_out_and_errors_are_sent_until_they_clear() {
        let mut cache = FetchSessionCache::new(10, SESSION_EVICTION_MS, 1);
        let id = session(&mut cache, 3, 0);
        incremental(cache.begin(id, 1, &[], &[], 1));
        let with_data = Answered { records_len: 100, ..quiet(10) };
        let error = Answered { error_code: 6, ..quiet(10) };
        let answered = [(key(0), quiet(10)), (key(1), with_data), (key(2), error)];
        assert_eq!(cache.filter(id, &answered), vec![false, true, true]);
        // Partition 1 returned records, so it moved to the end of the fetch order.
        let parts = incremental(cache.begin(id, 2, &[], &[], 2));
        assert_eq!(parts.iter().map(|(k, _)| k.1).collect::<Vec<_>>(), vec![0, 2, 1]);
        // The error cleared with the same high watermark: sent again (the client must learn
        // it cleared); a new high watermark is sent; an unchanged one is not.
        let answered = [(key(0), quiet(11)), (key(2), quiet(10)), (key(1), quiet(10))];
        assert_eq!(cache.filter(id, &answered), vec![true, true, false]);
        incremental(cache.begin(id, 3, &[], &[], 3));
        let answered = [(key(0), quiet(11)), (key(2), quiet(10)), (key(1), quiet(10))];
        assert_eq!(cache.filter(id, &answered), vec![false, false, false]);
    }

    #[test]
    fn a_full_cache_evicts_a_stale_session_first() {
        let mut cache = FetchSessionCache::new(2, 1000, 1);
        let a = session(&mut cache, 5, 0);
        let b = session(&mut cache, 5, 0);
        incremental(cache.begin(b, 1, &[], &[], 900));
        // Nothing is stale yet and nothing is old enough to lose its slot: declined.
        assert_eq!(session(&mut cache, 1, 500), NO_SESSION);
        // `a` was last used at 0: stale at 1001, evicted although it is the larger one.
        let c = session(&mut cache, 1, 1001);
        assert_ne!(c, NO_SESSION);
        assert_eq!(cache.evictions(), 1);
        assert_eq!(cache.begin(a, 1, &[], &[], 1002), Plan::Error(FETCH_SESSION_ID_NOT_FOUND));
        assert!(matches!(cache.begin(b, 2, &[], &[], 1002), Plan::Incremental { .. }));
    }

    #[test]
    fn a_bigger_session_evicts_an_old_smaller_one_and_a_smaller_one_does_not() {
        let mut cache = FetchSessionCache::new(2, 1000, 1);
        let small = session(&mut cache, 2, 0);
        let big = session(&mut cache, 8, 0);
        // Both in use (not stale) but older than the eviction time.
        incremental(cache.begin(small, 1, &[], &[], 1500));
        incremental(cache.begin(big, 1, &[], &[], 1500));
        assert_eq!(session(&mut cache, 2, 1600), NO_SESSION, "not larger than the smallest");
        let bigger = session(&mut cache, 3, 1600);
        assert_ne!(bigger, NO_SESSION);
        assert_eq!(cache.begin(small, 2, &[], &[], 1601), Plan::Error(FETCH_SESSION_ID_NOT_FOUND));
        assert!(matches!(cache.begin(big, 2, &[], &[], 1601), Plan::Incremental { .. }));
    }

    #[test]
    fn zero_slots_disable_sessions_and_ids_are_positive_and_distinct() {
        let mut none = FetchSessionCache::new(0, SESSION_EVICTION_MS, 1);
        assert_eq!(session(&mut none, 1, 0), NO_SESSION);
        let mut cache = FetchSessionCache::new(500, SESSION_EVICTION_MS, 7);
        let ids: std::collections::HashSet<i32> =
            (0..500).map(|_| session(&mut cache, 1, 0)).collect();
        assert_eq!(ids.len(), 500);
        assert!(ids.iter().all(|id| *id > 0));
    }

    #[test]
    fn epochs_wrap_to_one() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
