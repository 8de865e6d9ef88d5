//! Controllers (DESIGN §6): each a pure core, `observed state (+ now) -> actions`, in a thin
//! actor shell that observes through the API and acts through it.

pub mod apiserver_identity;
pub mod disruption;
pub mod event_expiry;
pub mod garbage_collector;
pub mod leader;
pub mod node_lifecycle;

pub use garbage_collector::{GarbageCollector, GarbageCollectorArgs};
pub use leader::{Elector, ElectorArgs};
pub use node_lifecycle::{NodeLifecycle, NodeLifecycleArgs};
