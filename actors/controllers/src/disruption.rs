//! The disruption controller: keeps each PodDisruptionBudget's status (how many of its pods
//! are healthy, how many must be, how many may be disrupted now) as Kubernetes' does, so
//! that evictions can be granted or refused against it.
//!
//! The core, [`budget_status`], reads a budget, the pods of its namespace and the workloads
//! that own them, and answers the status the budget should have. The actor lists them every
//! period and writes a status that changed through the status subresource, under the
//! controller manager's fence.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde_json::{Map, Value, json};
use shoal_core::client::call_ok;
use shoal_core::deletion::is_deleting;
use shoal_core::disruption::{DELETION_TIMEOUT_S, IntOrPercent, budget_covers, pod_is_ready};
use shoal_core::time::{format_time, parse_time};
use shoal_core::{ApiError, ApiRequest, Fence, Verb};

/// The workload kinds whose scale counts a budget's expected pods, as `(group, resource)`.
pub const SCALED: &[(&str, &str)] = &[
    ("apps", "replicasets"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("", "replicationcontrollers"),
];

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The owner reference marked `controller`, if any.
fn controller_of(object: &Value) -> Option<&Value> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
}

/// The workload whose scale a pod counts toward: its controller, or for a ReplicaSet that
/// a Deployment controls, the Deployment. Answers its uid and its replicas.
fn scale_of<'a>(
    pod: &Value,
    workloads: &'a BTreeMap<&str, &'a Value>,
) -> Result<(&'a str, i64), String> {
    let no_controller = || {
        format!(
            "found no controllers for pod {:?}",
            str_at(pod, "/metadata/name")
        )
    };
    let owner = controller_of(pod).ok_or_else(no_controller)?;
    let kind = owner["kind"].as_str().unwrap_or_default();
    if !matches!(kind, "ReplicaSet" | "StatefulSet" | "ReplicationController") {
        return Err(no_controller());
    }
    let mut workload = *workloads
        .get(owner["uid"].as_str().unwrap_or_default())
        .ok_or_else(no_controller)?;
    if kind == "ReplicaSet"
        && let Some(up) = controller_of(workload)
        && up["kind"] == "Deployment"
    {
        workload = workloads
            .get(up["uid"].as_str().unwrap_or_default())
            .ok_or_else(no_controller)?;
    }
    let replicas = workload
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    Ok((str_at(workload, "/metadata/uid"), replicas))
}

/// Whether the budget's expected pods are counted from its pods' controllers' replicas
/// (`maxUnavailable`, or `minAvailable` as a percentage) rather than from its pods.
pub fn counts_replicas(spec: &Value) -> bool {
    let set = |field: &str| spec.get(field).filter(|v| !v.is_null());
    set("maxUnavailable").is_some()
        || set("minAvailable")
            .and_then(|v| IntOrPercent::read(v).ok())
            .is_some_and(IntOrPercent::is_percent)
}

/// How many pods the budget expects and how many of them must be healthy.
fn expectations(spec: &Value, pods: &[&Value], workloads: &[Value]) -> Result<(i64, i64), String> {
    let read = |field: &str| {
        spec.get(field)
            .filter(|v| !v.is_null())
            .map(IntOrPercent::read)
            .transpose()
    };
    let (min, max) = (read("minAvailable")?, read("maxUnavailable")?);
    let scaled_total = || -> Result<i64, String> {
        let by_uid: BTreeMap<&str, &Value> = workloads
            .iter()
            .map(|w| (str_at(w, "/metadata/uid"), w))
            .collect();
        let mut counted = BTreeSet::new();
        let mut total = 0;
        for pod in pods {
            let (uid, replicas) = scale_of(pod, &by_uid)?;
            if counted.insert(uid) {
                total += replicas;
            }
        }
        Ok(total)
    };
    Ok(match (min, max) {
        (_, Some(max)) => {
            let expected = scaled_total()?;
            (expected, (expected - max.scaled(expected, true)).max(0))
        }
        (Some(min), None) if min.is_percent() => {
            let expected = scaled_total()?;
            (expected, min.scaled(expected, true))
        }
        (Some(min), None) => (pods.len() as i64, min.scaled(0, true)),
        (None, None) => (0, 0),
    })
}

/// The `DisruptionAllowed` condition, keeping its transition time while its status stays.
fn condition(
    old: &Value,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> Value {
    let previous = old
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "DisruptionAllowed");
    let since = match previous {
        Some(c) if c["status"] == status && c["lastTransitionTime"].is_string() => {
            c["lastTransitionTime"].clone()
        }
        _ => json!(format_time(now)),
    };
    json!({
        "type": "DisruptionAllowed",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}

/// The status `budget` should have, given every pod of its namespace and the workloads
/// there that can own them. When its expected pods cannot be counted (a pod no scalable
/// workload controls), it allows no disruption and says why (`SyncFailed`).
pub fn budget_status(budget: &Value, pods: &[Value], workloads: &[Value], now: Timestamp) -> Value {
    let old = budget.get("status").cloned().unwrap_or_else(|| json!({}));
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let spec = budget.get("spec").unwrap_or(&Value::Null);
    let covered: Vec<&Value> = pods.iter().filter(|p| budget_covers(budget, p)).collect();
    let (expected, desired) = match expectations(spec, &covered, workloads) {
        Ok(counts) => counts,
        Err(why) => {
            let mut status = old.as_object().cloned().unwrap_or_default();
            status.insert("disruptionsAllowed".into(), json!(0));
            status.insert("observedGeneration".into(), json!(generation));
            status.insert(
                "conditions".into(),
                json!([condition(
                    &old,
                    "False",
                    "SyncFailed",
                    &why,
                    generation,
                    now
                )]),
            );
            return Value::Object(status);
        }
    };
    // Evictions granted whose pods are still here, not yet marked, and not overdue.
    let recorded = old.get("disruptedPods").and_then(Value::as_object);
    let mut disrupted = Map::new();
    for pod in &covered {
        let name = str_at(pod, "/metadata/name");
        let Some(at) = recorded.and_then(|r| r.get(name)) else {
            continue;
        };
        let due =
            parse_time(at.as_str().unwrap_or_default()).map(|t| t.as_second() + DELETION_TIMEOUT_S);
        if !is_deleting(pod) && due.is_some_and(|due| due > now.as_second()) {
            disrupted.insert(name.to_owned(), at.clone());
        }
    }
    let healthy = covered
        .iter()
        .filter(|p| {
            !is_deleting(p)
                && !disrupted.contains_key(str_at(p, "/metadata/name"))
                && pod_is_ready(p)
        })
        .count() as i64;
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let (state, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let mut status = json!({
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [condition(&old, state, reason, "", generation, now)],
    });
    if !disrupted.is_empty() {
        status["disruptedPods"] = Value::Object(disrupted);
    }
    status
}

/// Messages of the disruption controller (local only).
#[derive(RactorMessage)]
pub enum DisruptionMsg {
    Tick,
}

/// What the controller starts from.
#[derive(Clone)]
pub struct DisruptionArgs {
    pub period: Duration,
    /// The controller manager's term; every write carries it.
    pub fence: Option<Fence>,
}

/// The disruption controller actor.
#[derive(Clone)]
pub struct Disruption;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn list(
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let list = call_ok(
        ApiRequest::new(Verb::List, group, "v1", resource, namespace, None),
        CALL_TIMEOUT,
    )
    .await?;
    Ok(match list.get("items") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    })
}

/// One pass: every budget's status brought up to date. Answers how many were written.
async fn sync(args: &DisruptionArgs) -> Result<usize, ApiError> {
    let budgets = list("policy", "poddisruptionbudgets", None).await?;
    let mut by_namespace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for budget in budgets {
        by_namespace
            .entry(str_at(&budget, "/metadata/namespace").to_owned())
            .or_default()
            .push(budget);
    }
    let mut written = 0;
    for (namespace, budgets) in by_namespace {
        let pods = list("", "pods", Some(&namespace)).await?;
        // The workloads are read only where a budget counts their replicas.
        let mut workloads = Vec::new();
        if budgets
            .iter()
            .any(|b| counts_replicas(b.get("spec").unwrap_or(&Value::Null)))
        {
            for (group, resource) in SCALED {
                workloads.extend(list(group, resource, Some(&namespace)).await?);
            }
        }
        let now = Timestamp::now();
        for budget in budgets {
            let status = budget_status(&budget, &pods, &workloads, now);
            if budget.get("status") == Some(&status) {
                continue;
            }
            let mut updated = budget.clone();
            updated["status"] = status;
            let name = str_at(&budget, "/metadata/name");
            let mut req = ApiRequest::new(
                Verb::Update,
                "policy",
                "v1",
                "poddisruptionbudgets",
                Some(&namespace),
                Some(name),
            )
            .with_body(&updated)
            .fenced(args.fence.clone());
            req.subresource = Some("status".into());
            match call_ok(req, CALL_TIMEOUT).await {
                Ok(_) => written += 1,
                // Changed (an eviction took a disruption) or gone meanwhile: the next pass
                // reads it again.
                Err(ApiError::Conflict(..) | ApiError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(written)
}

/// The controller's state: its settings.
pub struct DisruptionState {
    args: DisruptionArgs,
}

impl Actor for Disruption {
    type Msg = DisruptionMsg;
    type State = DisruptionState;
    type Arguments = DisruptionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DisruptionMsg>,
        args: DisruptionArgs,
    ) -> Result<DisruptionState, ActorProcessingErr> {
        myself.send_interval(args.period, || DisruptionMsg::Tick);
        Ok(DisruptionState { args })
    }

    async fn handle(
        &self,
        _myself: ActorRef<DisruptionMsg>,
        msg: DisruptionMsg,
        state: &mut DisruptionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DisruptionMsg::Tick => match sync(&state.args).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(budgets = n, "disruption budget statuses written"),
                Err(err) => tracing::debug!(error = %err, "the disruption pass failed; will retry"),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("a valid time")
    }

    fn pod(name: &str, ready: bool, owner: Option<(&str, &str)>) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "a", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let Some((kind, uid)) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": kind, "uid": uid, "name": "w", "controller": true}]);
        }
        p
    }

    fn budget(spec: Value) -> Value {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "web", "namespace": "a", "generation": 2}, "spec": spec})
    }

    #[test]
    fn a_minimum_count_allows_what_is_healthy_beyond_it() {
        let pods = [
            pod("a", true, None),
            pod("b", true, None),
            pod("c", false, None),
        ];
        let s = budget_status(&budget(json!({"minAvailable": 1})), &pods, &[], now());
        assert_eq!(s["currentHealthy"], 2);
        assert_eq!(s["desiredHealthy"], 1);
        assert_eq!(s["expectedPods"], 3);
        assert_eq!(s["disruptionsAllowed"], 1);
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][0]["reason"], "SufficientPods");
    }

    #[test]
    fn pods_of_other_namespaces_or_labels_and_marked_pods_do_not_count() {
        let mut other_ns = pod("x", true, None);
        other_ns["metadata"]["namespace"] = json!("b");
        let mut other_app = pod("y", true, None);
        other_app["metadata"]["labels"]["app"] = json!("db");
        let mut going = pod("z", true, None);
        going["metadata"]["deletionTimestamp"] = json!("2023-01-01T00:00:00Z");
        let pods = [other_ns, other_app, going, pod("a", true, None)];
        let s = budget_status(&budget(json!({"minAvailable": 1})), &pods, &[], now());
        assert_eq!(s["currentHealthy"], 1);
        assert_eq!(s["expectedPods"], 2);
        assert_eq!(s["disruptionsAllowed"], 0);
        assert_eq!(s["conditions"][0]["reason"], "InsufficientPods");
    }

    #[test]
    fn granted_evictions_count_as_disrupted_until_the_pod_goes_or_the_record_is_overdue() {
        let mut b = budget(json!({"minAvailable": 1}));
        let recent = format_time(Timestamp::from_second(now().as_second() - 10).expect("time"));
        let overdue = format_time(Timestamp::from_second(now().as_second() - 500).expect("time"));
        b["status"] = json!({"disruptedPods": {"a": recent, "b": overdue, "gone": recent}});
        let pods = [
            pod("a", true, None),
            pod("b", true, None),
            pod("c", true, None),
        ];
        let s = budget_status(&b, &pods, &[], now());
        assert_eq!(s["disruptedPods"], json!({"a": recent}));
        assert_eq!(s["currentHealthy"], 2);
        assert_eq!(s["disruptionsAllowed"], 1);
    }

    #[test]
    fn percentages_and_max_unavailable_count_the_controllers_replicas() {
        let deployment = json!({"metadata": {"uid": "d1"}, "spec": {"replicas": 4}});
        let rs = json!({"metadata": {"uid": "rs1", "ownerReferences": [{"kind": "Deployment", "uid": "d1", "controller": true}]}, "spec": {"replicas": 4}});
        let sts = json!({"metadata": {"uid": "s1"}, "spec": {"replicas": 2}});
        let workloads = [deployment, rs, sts];
        let pods = [
            pod("a", true, Some(("ReplicaSet", "rs1"))),
            pod("b", true, Some(("ReplicaSet", "rs1"))),
            pod("c", true, Some(("ReplicaSet", "rs1"))),
            pod("d", true, Some(("StatefulSet", "s1"))),
        ];
        let s = budget_status(
            &budget(json!({"maxUnavailable": 1})),
            &pods,
            &workloads,
            now(),
        );
        assert_eq!(s["expectedPods"], 6);
        assert_eq!(s["desiredHealthy"], 5);
        assert_eq!(s["disruptionsAllowed"], 0);
        let s = budget_status(
            &budget(json!({"minAvailable": "50%"})),
            &pods,
            &workloads,
            now(),
        );
        assert_eq!(s["desiredHealthy"], 3);
        assert_eq!(s["disruptionsAllowed"], 1);
        let s = budget_status(
            &budget(json!({"maxUnavailable": "25%"})),
            &pods,
            &workloads,
            now(),
        );
        assert_eq!(s["desiredHealthy"], 4);
    }

    #[test]
    fn pods_without_a_scalable_controller_fail_safe() {
        let mut b = budget(json!({"maxUnavailable": 1}));
        b["status"] = json!({"disruptionsAllowed": 3, "currentHealthy": 3});
        let pods = [pod("a", true, None)];
        let s = budget_status(&b, &pods, &[], now());
        assert_eq!(s["disruptionsAllowed"], 0);
        assert_eq!(s["currentHealthy"], 3);
        assert_eq!(s["conditions"][0]["reason"], "SyncFailed");
        assert!(
            s["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("found no controllers"))
        );
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let pods = [pod("a", true, None), pod("b", true, None)];
        let first = budget_status(&budget(json!({"minAvailable": 1})), &pods, &[], now());
        let mut b = budget(json!({"minAvailable": 1}));
        b["status"] = first.clone();
        let later = Timestamp::from_second(now().as_second() + 60).expect("time");
        assert_eq!(budget_status(&b, &pods, &[], later), first);
    }

    #[test]
    fn only_percentages_and_max_unavailable_count_replicas() {
        assert!(!counts_replicas(&json!({"minAvailable": 2})));
        assert!(counts_replicas(&json!({"minAvailable": "50%"})));
        assert!(counts_replicas(&json!({"maxUnavailable": 0})));
        assert!(!counts_replicas(&json!({})));
    }
}
