//! The pods bound to the kubelet's node, and the deletions it ends. A pod's deletion is
//! graceful (the API server marks it, with a grace period) until the kubelet has stopped its
//! containers and confirms it with a delete of no grace period for that pod's uid. This
//! kubelet starts no containers, so a marked pod has nothing left to stop: its deletion is
//! confirmed as soon as the kubelet sees the mark.

use serde_json::{Value, json};

/// One pod whose deletion the kubelet confirms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Finish {
    /// The `DeleteOptions` that confirm it: no grace period left, and only this pod (not
    /// another made since under the same name).
    pub fn options(&self) -> Value {
        json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        })
    }
}

fn text<'a>(pod: &'a Value, pointer: &str) -> &'a str {
    pod.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The pods of `pods` bound to `node` that are marked for deletion.
pub fn to_finish(node: &str, pods: &[Value]) -> Vec<Finish> {
    pods.iter()
        .filter(|p| text(p, "/spec/nodeName") == node)
        .filter(|p| !text(p, "/metadata/deletionTimestamp").is_empty())
        .map(|p| Finish {
            namespace: text(p, "/metadata/namespace").to_owned(),
            name: text(p, "/metadata/name").to_owned(),
            uid: text(p, "/metadata/uid").to_owned(),
        })
        .filter(|f| !f.name.is_empty() && !f.uid.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, deleting: bool) -> Value {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node},
        });
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:30Z");
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        }
        pod
    }

    #[test]
    fn only_this_nodes_pods_marked_for_deletion_are_finished() {
        let pods = [
            pod("running", "n1", false),
            pod("leaving", "n1", true),
            pod("elsewhere", "n2", true),
        ];
        let finished = to_finish("n1", &pods);
        assert_eq!(
            finished,
            [Finish {
                namespace: "default".into(),
                name: "leaving".into(),
                uid: "uid-leaving".into(),
            }]
        );
        assert_eq!(finished[0].options()["gracePeriodSeconds"], 0);
        assert_eq!(finished[0].options()["preconditions"]["uid"], "uid-leaving");
        assert!(to_finish("n3", &pods).is_empty());
    }
}
