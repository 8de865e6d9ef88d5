//! The Node and Lease objects the kubelet posts: pure builders, time passed in.

use jiff::Timestamp;
use serde_json::{Value, json};
use shoal_core::time::{format_micro_time, format_time};

use crate::machine::MachineFacts;

/// The Kubernetes version the kubelet reports.
pub const KUBELET_VERSION: &str = concat!("v1.32.0-shoal.", env!("CARGO_PKG_VERSION"));

/// Pods a node accepts, as Kubernetes' default.
const MAX_PODS: u32 = 110;

/// Who the node is.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub name: String,
    pub address: String,
    /// Adds `node-role.kubernetes.io/control-plane`.
    pub control_plane: bool,
}

/// The node's labels, as the kubelet sets them.
pub fn labels(id: &NodeIdentity, facts: &MachineFacts) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": id.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": facts.architecture,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": facts.architecture,
    });
    if id.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    labels
}

/// The node's status: capacity, identity and a fresh `Ready=True` heartbeat. `previous` is the
/// stored status, whose condition transition times are kept when nothing changed.
pub fn node_status(
    id: &NodeIdentity,
    facts: &MachineFacts,
    previous: Option<&Value>,
    now: Timestamp,
) -> Value {
    let now_text = format_time(now);
    let memory_ki = facts.memory_bytes / 1024;
    let capacity = json!({"cpu": facts.cpus.to_string(), "memory": format!("{memory_ki}Ki"), "pods": MAX_PODS.to_string()});
    let transition = |kind: &str, status: &str| -> Value {
        previous
            .and_then(|p| p["conditions"].as_array())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == kind && c["status"] == status)
            })
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| json!(now_text))
    };
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now_text, "lastTransitionTime": transition(kind, status)})
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": id.address}, {"type": "Hostname", "address": id.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": facts.machine_id,
            "systemUUID": facts.machine_id,
            "bootID": facts.boot_id,
            "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image,
            "containerRuntimeVersion": facts.container_runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": facts.architecture,
        },
    })
}

/// A new Node object.
pub fn new_node(id: &NodeIdentity, facts: &MachineFacts, now: Timestamp) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": id.name, "labels": labels(id, facts), "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {},
        "status": node_status(id, facts, None, now),
    })
}

/// The node's Lease, renewed at `now` and owned by its Node.
pub fn lease(name: &str, node_uid: Option<&str>, duration_s: u32, now: Timestamp) -> Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": duration_s, "renewTime": format_micro_time(now)},
    });
    if let Some(uid) = node_uid {
        lease["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
    }
    lease
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> MachineFacts {
        MachineFacts {
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            architecture: "amd64".into(),
            ..Default::default()
        }
    }

    fn id() -> NodeIdentity {
        NodeIdentity {
            name: "n1".into(),
            address: "127.0.0.2".into(),
            control_plane: true,
        }
    }

    #[test]
    fn a_new_node_reports_capacity_and_is_ready() {
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let node = new_node(&id(), &facts(), now);
        assert_eq!(node["status"]["capacity"]["cpu"], "2");
        assert_eq!(node["status"]["capacity"]["memory"], "4194304Ki");
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(
            node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
            ""
        );
        assert_eq!(node["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(node["status"]["conditions"][3]["status"], "True");
        // The object decodes as a Kubernetes Node.
        serde_json::from_value::<k8s_openapi::api::core::v1::Node>(node).expect("a valid Node");
    }

    #[test]
    fn a_heartbeat_keeps_the_transition_time() {
        let t0 = Timestamp::from_second(1_700_000_000).expect("valid");
        let t1 = Timestamp::from_second(1_700_000_100).expect("valid");
        let first = node_status(&id(), &facts(), None, t0);
        let second = node_status(&id(), &facts(), Some(&first), t1);
        assert_eq!(
            second["conditions"][3]["lastTransitionTime"],
            format_time(t0)
        );
        assert_eq!(
            second["conditions"][3]["lastHeartbeatTime"],
            format_time(t1)
        );
    }

    #[test]
    fn the_lease_names_its_holder_and_owner() {
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let l = lease("n1", Some("uid-1"), 40, now);
        assert_eq!(l["spec"]["holderIdentity"], "n1");
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        serde_json::from_value::<k8s_openapi::api::coordination::v1::Lease>(l)
            .expect("a valid Lease");
    }
}
