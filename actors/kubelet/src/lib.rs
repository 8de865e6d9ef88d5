//! The kubelet (DESIGN §7), first form: registers its Node with the machine's capacity and
//! identity, renews its Lease in `kube-node-lease` through actor messages, and keeps its
//! `Ready` condition posted.

pub mod agent;
pub mod machine;
pub mod objects;

pub use agent::{Kubelet, KubeletArgs};
