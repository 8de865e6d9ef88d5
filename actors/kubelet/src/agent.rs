//! The kubelet actor: registers the node (or takes over its existing Node object after a
//! restart, never making a second one), renews the lease on every tick and re-posts the
//! node's status every few ticks. Every call goes through the API server's actor.

use std::time::Duration;

use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde_json::Value;
use shoal_core::client::call_ok;
use shoal_core::events::{InvolvedObject, Occurrence, Recorder};
use shoal_core::{ApiError, ApiRequest, Verb};

use crate::machine::MachineFacts;
use crate::objects::{NodeIdentity, lease, new_node, node_status};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the kubelet looks at the pods bound to its node.
const POD_SYNC: Duration = Duration::from_secs(1);

/// Messages of the kubelet (local only).
#[derive(RactorMessage)]
pub enum KubeletMsg {
    /// Register if needed, renew the lease, post status when due.
    Tick,
    /// Look at the pods bound to the node.
    SyncPods,
}

/// What the kubelet starts from.
#[derive(Clone)]
pub struct KubeletArgs {
    pub identity: NodeIdentity,
    pub facts: MachineFacts,
    pub lease_duration_s: u32,
    pub renew_interval: Duration,
    /// Post the full node status every this many renewals.
    pub status_every: u32,
}

/// The kubelet's state; rebuilt from the API after a restart.
pub struct KubeletState {
    args: KubeletArgs,
    node_uid: Option<String>,
    ticks: u32,
    recorder: Recorder,
    /// Whether this incarnation has recorded its `Starting` event.
    announced: bool,
}

/// The kubelet actor.
#[derive(Clone)]
pub struct Kubelet;

async fn get(
    resource_group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    match call_ok(
        ApiRequest::new(
            Verb::Get,
            resource_group,
            "v1",
            resource,
            namespace,
            Some(name),
        ),
        CALL_TIMEOUT,
    )
    .await
    {
        Ok(v) => Ok(Some(v)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a stored Node's `Ready` condition is `True`.
fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

impl KubeletState {
    /// Creates the Node, or refreshes the status of the one that exists; returns its uid.
    async fn post_node(&mut self) -> Result<(), ApiError> {
        self.args.facts.container_runtime_version =
            crate::machine::container_runtime_version().await;
        let id = &self.args.identity;
        let now = Timestamp::now();
        let existing = get("", "nodes", None, &id.name).await?;
        let was_ready = existing.as_ref().is_some_and(is_ready);
        let node = match existing {
            None => {
                let created = call_ok(
                    ApiRequest::new(Verb::Create, "", "v1", "nodes", None, None)
                        .with_body(&new_node(id, &self.args.facts, now)),
                    CALL_TIMEOUT,
                )
                .await?;
                tracing::info!(node = %id.name, "node registered");
                created
            }
            Some(mut existing) => {
                existing["status"] = node_status(id, &self.args.facts, existing.get("status"), now);
                let mut req =
                    ApiRequest::new(Verb::Update, "", "v1", "nodes", None, Some(&id.name))
                        .with_body(&existing);
                req.subresource = Some("status".into());
                call_ok(req, CALL_TIMEOUT).await?
            }
        };
        self.node_uid = node
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if !was_ready {
            let ready = Occurrence {
                object: InvolvedObject::node(&self.args.identity.name),
                kind: "Normal",
                reason: "NodeReady".into(),
                message: format!("Node {} status is now: NodeReady", self.args.identity.name),
            };
            if let Err(err) = self.recorder.record(ready).await {
                tracing::debug!(error = %err, "recording NodeReady failed");
            }
        }
        Ok(())
    }

    async fn renew_lease(&self) -> Result<(), ApiError> {
        let name = &self.args.identity.name;
        let fresh = lease(
            name,
            self.node_uid.as_deref(),
            self.args.lease_duration_s,
            Timestamp::now(),
        );
        match get(
            "coordination.k8s.io",
            "leases",
            Some("kube-node-lease"),
            name,
        )
        .await?
        {
            None => {
                let req = ApiRequest::new(
                    Verb::Create,
                    "coordination.k8s.io",
                    "v1",
                    "leases",
                    Some("kube-node-lease"),
                    None,
                )
                .with_body(&fresh);
                call_ok(req, CALL_TIMEOUT).await?;
            }
            Some(mut existing) => {
                existing["spec"] = fresh["spec"].clone();
                if existing.pointer("/metadata/ownerReferences").is_none()
                    && let Some(refs) = fresh.pointer("/metadata/ownerReferences")
                {
                    existing["metadata"]["ownerReferences"] = refs.clone();
                }
                let req = ApiRequest::new(
                    Verb::Update,
                    "coordination.k8s.io",
                    "v1",
                    "leases",
                    Some("kube-node-lease"),
                    Some(name),
                )
                .with_body(&existing);
                call_ok(req, CALL_TIMEOUT).await?;
            }
        }
        Ok(())
    }

    /// Confirms the deletion of the node's pods marked for it ([`crate::pods`]).
    async fn sync_pods(&self) -> Result<(), ApiError> {
        let node = &self.args.identity.name;
        let mut list = ApiRequest::new(Verb::List, "", "v1", "pods", None, None);
        list.options.field_selector = Some(format!("spec.nodeName={node}"));
        // The watch cache's copy is enough: a mark it has not seen yet is seen next time.
        list.options.resource_version = Some("0".into());
        let listed = call_ok(list, CALL_TIMEOUT).await?;
        let pods = listed["items"].as_array().map_or(&[][..], Vec::as_slice);
        for pod in crate::pods::to_finish(node, pods) {
            let delete = ApiRequest::new(
                Verb::Delete,
                "",
                "v1",
                "pods",
                Some(&pod.namespace),
                Some(&pod.name),
            )
            .with_body(&pod.options());
            match call_ok(delete, CALL_TIMEOUT).await {
                Ok(_) => {
                    tracing::info!(pod = %pod.name, namespace = %pod.namespace, "pod deleted");
                }
                // Gone already, or replaced by another pod of the same name.
                Err(ApiError::NotFound(_) | ApiError::Conflict(..)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), ApiError> {
        if self.node_uid.is_none() || self.ticks.is_multiple_of(self.args.status_every.max(1)) {
            self.post_node().await?;
        }
        if !self.announced {
            let starting = Occurrence {
                object: InvolvedObject::node(&self.args.identity.name),
                kind: "Normal",
                reason: "Starting".into(),
                message: "Starting kubelet.".into(),
            };
            self.announced = self.recorder.record(starting).await.is_ok();
        }
        self.ticks = self.ticks.wrapping_add(1);
        self.renew_lease().await
    }
}

impl Actor for Kubelet {
    type Msg = KubeletMsg;
    type State = KubeletState;
    type Arguments = KubeletArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<KubeletMsg>,
        args: KubeletArgs,
    ) -> Result<KubeletState, ActorProcessingErr> {
        myself.send_interval(args.renew_interval, || KubeletMsg::Tick);
        myself.send_message(KubeletMsg::Tick)?;
        myself.send_interval(POD_SYNC, || KubeletMsg::SyncPods);
        let recorder = Recorder::new("kubelet", &args.identity.name);
        Ok(KubeletState {
            args,
            node_uid: None,
            ticks: 0,
            recorder,
            announced: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<KubeletMsg>,
        msg: KubeletMsg,
        state: &mut KubeletState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            KubeletMsg::Tick => {
                if let Err(err) = state.tick().await {
                    // The master may be restarting or unreachable; the next tick tries again.
                    tracing::debug!(error = %err, "heartbeat failed");
                }
            }
            KubeletMsg::SyncPods => {
                if let Err(err) = state.sync_pods().await {
                    tracing::debug!(error = %err, "pod sync failed");
                }
            }
        }
        Ok(())
    }
}
