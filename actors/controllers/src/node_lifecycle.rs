//! The node-lifecycle controller: turns lease expiry into the node's `Ready` condition
//! (`Unknown`, with reason and message) and a renewed lease back into `Ready=True`.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde_json::{Value, json};
use shoal_core::client::call_ok;
use shoal_core::events::{InvolvedObject, Occurrence, Recorder};
use shoal_core::time::{format_time, parse_time};
use shoal_core::{ApiRequest, Fence, Verb};

/// What the controller sees of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// The status of the `Ready` condition, if any.
    pub ready: Option<String>,
    /// When its lease was last renewed, if it has one.
    pub lease_renewed: Option<Timestamp>,
    /// When the node object was created: a node that registered moments ago may not have
    /// created its lease yet, and gets the grace period from its registration.
    pub created: Option<Timestamp>,
}

/// What the controller decides for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The lease expired: `Ready=Unknown`.
    MarkUnknown(String),
    /// The lease is being renewed again: `Ready=True`.
    MarkReady(String),
}

/// The pure core: for each node, whether its readiness must change given `now` and the grace
/// period a lease may go unrenewed. A node is given up on only when neither its lease nor its
/// registration falls within the grace period; it is brought back only by a renewed lease.
pub fn decide(nodes: &[NodeView], now: Timestamp, grace: Duration) -> Vec<Action> {
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let within = |t: Option<Timestamp>| {
        t.is_some_and(|t| now.as_millisecond() - t.as_millisecond() <= grace_ms)
    };
    let mut actions = Vec::new();
    for node in nodes {
        let fresh = within(node.lease_renewed);
        match (fresh, node.ready.as_deref()) {
            (false, Some("Unknown")) => {}
            (false, _) if within(node.created) => {}
            (false, _) => actions.push(Action::MarkUnknown(node.name.clone())),
            (true, Some("Unknown") | None) => actions.push(Action::MarkReady(node.name.clone())),
            (true, _) => {}
        }
    }
    actions
}

/// Sets the `Ready` condition of a node object; the transition time moves only when the
/// status changes.
pub fn set_ready(node: &mut Value, status: &str, reason: &str, message: &str, now: Timestamp) {
    let now_text = format_time(now);
    if !node["status"].is_object() {
        node["status"] = json!({});
    }
    if !node["status"]["conditions"].is_array() {
        node["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = node["status"]["conditions"].as_array_mut() else {
        return;
    };
    let fresh = json!({
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now_text, "lastTransitionTime": now_text,
    });
    match conditions.iter_mut().find(|c| c["type"] == "Ready") {
        Some(existing) => {
            let transition = if existing["status"] == status {
                existing["lastTransitionTime"].clone()
            } else {
                json!(now_text)
            };
            // The controller does not heartbeat: a node given up on keeps the kubelet's
            // last heartbeat, as Kubernetes shows it.
            let heartbeat = if status == "Unknown" && !existing["lastHeartbeatTime"].is_null() {
                existing["lastHeartbeatTime"].clone()
            } else {
                json!(now_text)
            };
            *existing = fresh;
            existing["lastTransitionTime"] = transition;
            existing["lastHeartbeatTime"] = heartbeat;
        }
        None => conditions.push(fresh),
    }
    if status == "Unknown" {
        for c in conditions.iter_mut().filter(|c| c["type"] != "Ready") {
            if c["status"] != "Unknown" {
                c["lastTransitionTime"] = json!(now_text);
            }
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
            c["message"] = json!("Kubelet stopped posting node status.");
        }
    }
}

/// Messages of the controller (local only).
#[derive(RactorMessage)]
pub enum NodeLifecycleMsg {
    /// Observe and act once.
    Tick,
}

/// Arguments: how long a lease may go unrenewed, and how often to look.
#[derive(Clone)]
pub struct NodeLifecycleArgs {
    pub grace: Duration,
    pub period: Duration,
    /// The controller manager's leadership term, stamped on every write.
    pub fence: Option<Fence>,
}

/// The controller's state: only its settings; everything else is read from the API each time.
pub struct NodeLifecycleState {
    grace: Duration,
    recorder: Recorder,
    fence: Option<Fence>,
}

/// The node-lifecycle controller actor.
#[derive(Clone)]
pub struct NodeLifecycle;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn observe() -> Result<(Vec<NodeView>, HashMap<String, Value>), shoal_core::ApiError> {
    let nodes = call_ok(
        ApiRequest::new(Verb::List, "", "v1", "nodes", None, None),
        CALL_TIMEOUT,
    )
    .await?;
    let leases = call_ok(
        ApiRequest::new(
            Verb::List,
            "coordination.k8s.io",
            "v1",
            "leases",
            Some("kube-node-lease"),
            None,
        ),
        CALL_TIMEOUT,
    )
    .await?;
    let renewed: HashMap<String, Timestamp> = leases["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l.pointer("/metadata/name")?.as_str()?.to_owned();
            let at = parse_time(l.pointer("/spec/renewTime")?.as_str()?)?;
            Some((name, at))
        })
        .collect();
    let mut objects = HashMap::new();
    let mut views = Vec::new();
    for node in nodes["items"].as_array().into_iter().flatten() {
        let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let ready = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["status"].as_str())
            .map(str::to_owned);
        views.push(NodeView {
            name: name.to_owned(),
            ready,
            lease_renewed: renewed.get(name).copied(),
            created: node
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(parse_time),
        });
        objects.insert(name.to_owned(), node.clone());
    }
    Ok((views, objects))
}

/// The Event that tells what an action did, in the node controller's words.
pub fn event_for(action: &Action) -> Occurrence {
    let (name, reason) = match action {
        Action::MarkUnknown(n) => (n, "NodeNotReady"),
        Action::MarkReady(n) => (n, "NodeReady"),
    };
    Occurrence {
        object: InvolvedObject::node(name),
        kind: "Normal",
        reason: reason.into(),
        message: format!("Node {name} status is now: {reason}"),
    }
}

async fn act(
    action: &Action,
    objects: &HashMap<String, Value>,
    now: Timestamp,
    fence: Option<&Fence>,
) -> Result<(), shoal_core::ApiError> {
    let (name, status, reason, message) = match action {
        Action::MarkUnknown(n) => (
            n,
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        ),
        Action::MarkReady(n) => (n, "True", "KubeletReady", "kubelet is posting ready status"),
    };
    let Some(mut node) = objects.get(name).cloned() else {
        return Ok(());
    };
    set_ready(&mut node, status, reason, message, now);
    let mut req = ApiRequest::new(Verb::Update, "", "v1", "nodes", None, Some(name))
        .with_body(&node)
        .fenced(fence.cloned());
    req.subresource = Some("status".into());
    call_ok(req, CALL_TIMEOUT).await?;
    tracing::info!(node = %name, ready = status, "node readiness changed");
    Ok(())
}

impl Actor for NodeLifecycle {
    type Msg = NodeLifecycleMsg;
    type State = NodeLifecycleState;
    type Arguments = NodeLifecycleArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeLifecycleMsg>,
        args: NodeLifecycleArgs,
    ) -> Result<NodeLifecycleState, ActorProcessingErr> {
        myself.send_interval(args.period, || NodeLifecycleMsg::Tick);
        Ok(NodeLifecycleState {
            grace: args.grace,
            recorder: Recorder::new("node-controller", "").fenced(args.fence.clone()),
            fence: args.fence,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<NodeLifecycleMsg>,
        msg: NodeLifecycleMsg,
        state: &mut NodeLifecycleState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeLifecycleMsg::Tick => {
                let (views, objects) = match observe().await {
                    Ok(seen) => seen,
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot observe nodes yet");
                        return Ok(());
                    }
                };
                let now = Timestamp::now();
                for action in decide(&views, now, state.grace) {
                    // A conflict means the node changed meanwhile; the next tick sees it.
                    if let Err(err) = act(&action, &objects, now, state.fence.as_ref()).await {
                        tracing::debug!(?action, error = %err, "node update failed; will retry");
                        continue;
                    }
                    if let Err(err) = state.recorder.record(event_for(&action)).await {
                        tracing::debug!(?action, error = %err, "recording the event failed");
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("valid")
    }

    fn view(ready: Option<&str>, renewed: Option<i64>) -> NodeView {
        NodeView {
            name: "n".into(),
            ready: ready.map(str::to_owned),
            lease_renewed: renewed.map(t),
            created: Some(t(-100)),
        }
    }

    const GRACE: Duration = Duration::from_secs(4);

    #[test]
    fn an_expired_lease_makes_a_ready_node_unknown() {
        assert_eq!(
            decide(&[view(Some("True"), Some(0))], t(5), GRACE),
            vec![Action::MarkUnknown("n".into())]
        );
    }

    #[test]
    fn a_fresh_lease_leaves_a_ready_node_alone() {
        assert!(decide(&[view(Some("True"), Some(0))], t(4), GRACE).is_empty());
    }

    #[test]
    fn a_node_without_a_lease_is_unknown_once() {
        assert_eq!(
            decide(&[view(Some("True"), None)], t(0), GRACE),
            vec![Action::MarkUnknown("n".into())]
        );
        assert!(decide(&[view(Some("Unknown"), None)], t(0), GRACE).is_empty());
    }

    #[test]
    fn a_node_that_just_registered_gets_the_grace_period_for_its_lease() {
        let new = NodeView {
            created: Some(t(0)),
            ..view(Some("True"), None)
        };
        assert!(decide(std::slice::from_ref(&new), t(3), GRACE).is_empty());
        assert_eq!(
            decide(&[new], t(5), GRACE),
            vec![Action::MarkUnknown("n".into())]
        );
    }

    #[test]
    fn a_renewed_lease_brings_an_unknown_node_back() {
        assert_eq!(
            decide(&[view(Some("Unknown"), Some(9))], t(10), GRACE),
            vec![Action::MarkReady("n".into())]
        );
    }

    #[test]
    fn the_transition_time_moves_only_on_change() {
        let mut node = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "old"}, {"type": "MemoryPressure", "status": "False"}]}});
        set_ready(&mut node, "True", "KubeletReady", "ok", t(1));
        assert_eq!(node["status"]["conditions"][0]["lastTransitionTime"], "old");
        let heartbeat = node["status"]["conditions"][0]["lastHeartbeatTime"].clone();
        set_ready(&mut node, "Unknown", "NodeStatusUnknown", "gone", t(2));
        assert_eq!(
            node["status"]["conditions"][0]["lastTransitionTime"],
            format_time(t(2))
        );
        // The controller does not heartbeat for the kubelet.
        assert_eq!(
            node["status"]["conditions"][0]["lastHeartbeatTime"],
            heartbeat
        );
        assert_eq!(node["status"]["conditions"][1]["status"], "Unknown");
    }
}
