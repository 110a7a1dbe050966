//! The controller as an oracle that is always up: one [`MetadataState`] applied in order is the
//! committed metadata log (the Raft quorum under it is simulated in the crate root). It runs the
//! real [`Controller`] (session fencing), `elect_leaders` and `alter_partition`, and sends its
//! latest committed image to every node over the lossy network, so a node's view is delayed
//! and possibly stale, but never out of order (a node ignores an older version).

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;
use strom_quorum::controller::{RegistrationError, alter_partition, place_partitions};
use strom_quorum::{
    BrokerRegistration, Controller, ControllerConfig, MetadataRecord, MetadataState, NodeId,
    TopicRecord,
};

use super::node::{CONTROLLER, Ctx, Event, MIN_INSYNC, Msg, TOPIC, assignment};

/// Broker session timeout of the simulated controller.
pub const SESSION_TIMEOUT_MS: u64 = 1_500;

/// The controller and the committed metadata.
#[derive(Debug)]
pub struct ControllerSim {
    state: MetadataState,
    version: usize,
    image: Arc<MetadataState>,
    controller: Controller,
    nodes: Vec<NodeId>,
    next_tick: u64,
    next_broadcast: u64,
}

/// A broker's registration in the simulation.
pub fn registration(node_id: NodeId, incarnation: u64) -> BrokerRegistration {
    BrokerRegistration {
        node_id,
        address: format!("sim-{node_id}:9092"),
        kafka_address: None,
        incarnation,
    }
}

impl ControllerSim {
    /// Brokers `nodes` registered (incarnation 1) and the topic created with RF = all of them.
    pub fn new(nodes: &[NodeId]) -> ControllerSim {
        let mut state = MetadataState::default();
        for &n in nodes {
            state
                .apply(&MetadataRecord::RegisterBroker(registration(n, 1)))
                .expect("a fresh registration applies");
        }
        let partitions =
            place_partitions(&state, 0, 1, nodes.len() as i32).expect("every broker is live");
        let mut configs = BTreeMap::new();
        configs.insert("min.insync.replicas".to_string(), MIN_INSYNC.to_string());
        state
            .apply(&MetadataRecord::CreateTopic(TopicRecord {
                name: TOPIC.into(),
                topic_id: "sim".into(),
                configs,
                partitions,
            }))
            .expect("a new topic applies");
        ControllerSim {
            image: Arc::new(state.clone()),
            state,
            version: 1,
            controller: Controller::new(
                ControllerConfig { session_timeout_ms: SESSION_TIMEOUT_MS },
                0,
            ),
            nodes: nodes.to_vec(),
            next_tick: 0,
            next_broadcast: 0,
        }
    }

    /// The latest committed image and its version.
    pub fn image(&self) -> (usize, Arc<MetadataState>) {
        (self.version, self.image.clone())
    }

    /// The committed state.
    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    fn commit(&mut self, records: Vec<MetadataRecord>, ctx: &mut Ctx<'_>) {
        let mut changed = false;
        for r in records {
            match self.state.apply(&r) {
                Ok(()) => {
                    changed = true;
                    ctx.events.push(Event::Trace(format!("commit {}", describe(&r))));
                }
                Err(e) => ctx.events.push(Event::Violation(format!(
                    "the controller wrote a record that does not apply: {r:?}: {e}"
                ))),
            }
        }
        if changed {
            self.version += 1;
            self.image = Arc::new(self.state.clone());
        }
    }

    /// A broker asks to shut down (Kafka's controlled shutdown): fenced now, leadership moved.
    pub fn controlled_shutdown(&mut self, node: NodeId, ctx: &mut Ctx<'_>) {
        let records = self.controller.on_controlled_shutdown(&self.state, node);
        self.commit(records, ctx);
    }

    /// Session expiry and image broadcast.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        if ctx.now >= self.next_tick {
            self.next_tick = ctx.now + 50;
            let records = self.controller.tick(&self.state, ctx.now);
            self.commit(records, ctx);
        }
        if ctx.now >= self.next_broadcast {
            self.next_broadcast = ctx.now + ctx.rng.random_range(20..80);
            for &n in &self.nodes {
                let msg = Msg::Image { version: self.version, image: self.image.clone() };
                ctx.out.push((CONTROLLER, n, msg));
            }
        }
    }

    /// A message from a node.
    pub fn on_message(&mut self, from: NodeId, msg: Msg, ctx: &mut Ctx<'_>) {
        match msg {
            Msg::Heartbeat { incarnation } => self.on_heartbeat(from, incarnation, ctx),
            Msg::AlterPartition { change } => {
                let result = alter_partition(
                    &self.state,
                    TOPIC,
                    0,
                    from,
                    change.leader_epoch.get(),
                    change.partition_epoch,
                    change.isr.clone(),
                );
                let result = match result {
                    Ok(change) => {
                        if let Some(c) = change {
                            self.commit(vec![MetadataRecord::PartitionChange(c)], ctx);
                        }
                        Ok(assignment(self.state.partition(TOPIC, 0).expect("the topic exists")))
                    }
                    Err(e) => {
                        ctx.events
                            .push(Event::Trace(format!("refuse isr change from n{from}: {e}")));
                        Err(e)
                    }
                };
                ctx.out.push((
                    CONTROLLER,
                    from,
                    Msg::AlterPartitionResponse { asked: change, result },
                ));
            }
            _ => {}
        }
    }

    fn on_heartbeat(&mut self, node: NodeId, incarnation: u64, ctx: &mut Ctx<'_>) {
        // Every heartbeat carries the registration, as strom-broker's does; a new incarnation
        // is refused until the old one is fenced.
        match self.controller.on_register(&self.state, registration(node, incarnation), ctx.now) {
            Ok(records) => self.commit(records, ctx),
            Err(RegistrationError::DuplicateRegistration { .. }) => {}
            Err(e) => ctx.events.push(Event::Trace(format!("registration of n{node}: {e}"))),
        }
    }
}

fn describe(r: &MetadataRecord) -> String {
    match r {
        MetadataRecord::RegisterBroker(b) => {
            format!("register n{} incarnation {}", b.node_id, b.incarnation)
        }
        MetadataRecord::FenceBroker { node_id } => format!("fence n{node_id}"),
        MetadataRecord::UnfenceBroker { node_id } => format!("unfence n{node_id}"),
        MetadataRecord::PartitionChange(c) => format!(
            "partition leader {} epoch {} isr {:?} partition epoch {}",
            c.leader, c.leader_epoch, c.isr, c.partition_epoch
        ),
        other => format!("{other:?}"),
    }
}
