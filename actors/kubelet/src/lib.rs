//! The kubelet (DESIGN §7), first form: registers its Node with the machine's capacity and
//! identity, renews its Lease in `kube-node-lease` through actor messages, and keeps its
//! `Ready` condition posted, and confirms the deletion of the pods bound to its node.

pub mod agent;
pub mod machine;
pub mod objects;
pub mod pods;

pub use agent::{Kubelet, KubeletArgs};

use shoal_core::supervisor::ChildSpec;

/// The kubelet as a supervised child named `kubelet`.
pub fn child_spec(args: KubeletArgs) -> ChildSpec {
    ChildSpec::actor("kubelet", Kubelet, args)
}
