//! Recovery: a node that (re)starts serves no client until it has caught up with the metadata
//! quorum, as a Kafka broker waits in RECOVERY before it enables request processing.
//!
//! Why: a restarted node replays the metadata it had on disk, which may be far behind the
//! quorum. Answered from that image, a Metadata request lists topics that were deleted and
//! leaders that moved, and a Produce can be taken as "leader" by a node whose leadership was
//! moved to another replica while it was down. The node has caught up once it sees its *own
//! registration* (this incarnation, unfenced) in its applied image, and has opened the replicas
//! of that image: the controller commits the registration after the restart, so the image
//! holding it holds everything committed before it too. Until then clients get
//! `UNAVAILABLE` over gRPC (`service/recovery_gate.rs`) and the Kafka listener does not
//! accept, so they ask another node or retry.
//!
//! The latch closes once per process: a serving node that later loses the quorum keeps serving
//! what it has, as Kafka brokers do; fencing and leader epochs guard that case.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::Broker;
use crate::quorum::Image;

/// The longest a client request waits for a recovering node before it is told `UNAVAILABLE`.
/// Short, so a client that could ask another node does; long enough to cover a restart's
/// usual catch-up (a registration round trip), so a single-node restart costs no error.
pub(crate) const RECOVERY_PATIENCE: Duration = Duration::from_secs(5);

impl Broker {
    /// Whether this node has caught up with the metadata quorum since it started and serves
    /// clients (see the module doc of `recovery.rs`).
    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Waits up to `patience` until [`Broker::is_serving`]; returns whether it is.
    pub async fn wait_serving(&self, patience: Duration) -> bool {
        let mut serving = self.serving.clone();
        // The guard `wait_for` returns is not `Send`: only its verdict leaves this block.
        let caught_up = async move { serving.wait_for(|on| *on).await.is_ok() };
        tokio::time::timeout(patience, caught_up).await.unwrap_or(false)
    }

    /// A receiver of the serving latch, which turns `true` once.
    pub fn serving_signal(&self) -> watch::Receiver<bool> {
        self.serving.clone()
    }

    /// The applied index of `image` if it shows this process registered and unfenced: the
    /// point this node must have reconciled to have caught up.
    pub(crate) fn registered_at(&self, image: &Image) -> Option<u64> {
        image
            .state
            .broker(self.config().node_id)
            .filter(|b| b.registration.incarnation == self.incarnation() && !b.fenced)
            .map(|_| image.applied)
    }
}

/// Closes the serving latch once this process is registered in the image it has reconciled
/// and the group coordinator is loaded. Ends then, when the broker is dropped, or at shutdown.
pub(crate) async fn latch(broker: Weak<Broker>, serving: watch::Sender<bool>) {
    let (mut images, mut reconciled, mut shutdown) = match broker.upgrade() {
        Some(b) => (b.quorum_log().image(), b.reconciled_signal(), b.shutdown_signal()),
        None => return,
    };
    loop {
        {
            let Some(broker) = broker.upgrade() else { return };
            let at = broker.registered_at(&images.borrow_and_update());
            let caught_up = at.is_some_and(|at| *reconciled.borrow_and_update() >= at);
            if caught_up && broker.group_coordinator().is_some() {
                tracing::info!(
                    node_id = broker.config().node_id,
                    "caught up with the metadata quorum; serving clients"
                );
                serving.send_replace(true);
                return;
            }
        }
        // The coordinator slot is rebuilt on a reconcile, so `reconciled` covers it too.
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return },
            changed = reconciled.changed() => if changed.is_err() { return },
            () = crate::broker::stopped(&mut shutdown) => return,
        }
    }
}
