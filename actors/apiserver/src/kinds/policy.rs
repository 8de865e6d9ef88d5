//! policy/v1 PodDisruptionBudget: its defaults, checks and columns, and the pure core of an
//! eviction (`POST pods/{name}/eviction`) that a budget covers.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use shoal_core::ApiError;
use shoal_core::disruption::{IntOrPercent, MAX_DISRUPTED_PODS, pod_is_ready};
use shoal_core::error::FieldCause;

use super::{AGE, Column, NAME, default_field, ensure_object, int_at, invalid, unsupported};
use crate::table::age;
use shoal_core::time::format_time;

const EVICTION_POLICIES: &[&str] = &["IfHealthyBudget", "AlwaysAllow"];
const SELECTOR_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];
const STATUS_COUNTS: &[&str] = &[
    "disruptionsAllowed",
    "currentHealthy",
    "desiredHealthy",
    "expectedPods",
];

/// Kubernetes writes a budget's status counts even when they are zero.
pub fn defaults(kind: &str, object: &mut Map<String, Value>) {
    if kind == "PodDisruptionBudget" {
        let status = ensure_object(object, "status");
        for count in STATUS_COUNTS {
            default_field(status, count, json!(0));
        }
    }
}

fn int_or_percent_causes(spec: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    let Some(value) = spec.get(field).filter(|v| !v.is_null()) else {
        return;
    };
    let path = format!("spec.{field}");
    match IntOrPercent::read(value) {
        Err(why) => causes.push(invalid(path, value, &why)),
        Ok(IntOrPercent::Int(n)) if n < 0 => {
            causes.push(invalid(path, value, "must be greater than or equal to 0"))
        }
        Ok(IntOrPercent::Percent(p)) if p < 0 => {
            causes.push(invalid(path, value, "must be greater than or equal to 0"))
        }
        Ok(IntOrPercent::Percent(p)) if p > 100 => {
            causes.push(invalid(path, value, "must not be greater than 100%"))
        }
        Ok(_) => {}
    }
}

fn selector_causes(selector: &Value, causes: &mut Vec<FieldCause>) {
    for (i, e) in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.selector.matchExpressions[{i}]");
        let operator = e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if e.get("key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            causes.push(super::required(format!("{path}.key")));
        }
        match operator {
            "In" | "NotIn" if values == 0 => causes.push(super::required(format!("{path}.values"))),
            "Exists" | "DoesNotExist" if values > 0 => causes.push(FieldCause {
                reason: "FieldValueForbidden",
                field: format!("{path}.values"),
                message:
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                        .into(),
            }),
            op if !SELECTOR_OPERATORS.contains(&op) => causes.push(unsupported(
                format!("{path}.operator"),
                op,
                SELECTOR_OPERATORS,
            )),
            _ => {}
        }
    }
}

/// The checks Kubernetes makes of a budget beyond its types.
pub fn validate(kind: &str, object: &Value, causes: &mut Vec<FieldCause>) {
    if kind != "PodDisruptionBudget" {
        return;
    }
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let set = |f: &str| spec.get(f).is_some_and(|v| !v.is_null());
    if set("minAvailable") && set("maxUnavailable") {
        causes.push(invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    int_or_percent_causes(spec, "minAvailable", causes);
    int_or_percent_causes(spec, "maxUnavailable", causes);
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        selector_causes(selector, causes);
    }
    if let Some(policy) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        && !EVICTION_POLICIES.contains(&policy)
    {
        causes.push(unsupported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            EVICTION_POLICIES,
        ));
    }
    for count in STATUS_COUNTS {
        let n = int_at(object, &format!("/status/{count}"));
        if n < 0 {
            causes.push(invalid(
                format!("status.{count}"),
                &json!(n),
                "must be greater than or equal to 0",
            ));
        }
    }
}

pub fn columns(kind: &str) -> Option<Vec<Column>> {
    (kind == "PodDisruptionBudget").then(|| {
        vec![
            NAME,
            Column(
                "Min Available",
                "string",
                0,
                "The minimum number of pods that must be available.",
            ),
            Column(
                "Max Unavailable",
                "string",
                0,
                "The maximum number of pods that may be unavailable.",
            ),
            Column(
                "Allowed Disruptions",
                "integer",
                0,
                "Calculated number of pods that may be disrupted at this time.",
            ),
            AGE,
        ]
    })
}

/// A count or percentage as kubectl prints it; `N/A` when unset.
fn shown(value: Option<&Value>) -> String {
    match value.filter(|v| !v.is_null()) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "N/A".into(),
    }
}

pub fn cells(kind: &str, object: &Value, now: Timestamp) -> Option<Vec<Value>> {
    (kind == "PodDisruptionBudget").then(|| {
        vec![
            json!(super::str_at(object, "/metadata/name")),
            json!(shown(object.pointer("/spec/minAvailable"))),
            json!(shown(object.pointer("/spec/maxUnavailable"))),
            json!(int_at(object, "/status/disruptionsAllowed")),
            json!(age(object, now)),
        ]
    })
}

/// What an eviction may do given the one budget that covers the pod.
#[derive(Debug, PartialEq)]
pub enum EvictionCheck {
    /// Delete the pod; the budget is not touched.
    Allow,
    /// Store this budget (one disruption fewer, the pod recorded as disrupted) and then
    /// delete the pod.
    Take(Value),
    /// Refused: the budget forbids it, for now or for good.
    Refuse(ApiError),
}

const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn too_many(message: String) -> EvictionCheck {
    EvictionCheck::Refuse(ApiError::TooManyRequests {
        message: VIOLATION.into(),
        causes: vec![FieldCause {
            reason: "DisruptionBudget",
            field: String::new(),
            message,
        }],
    })
}

/// The pure core of an eviction the budget covers, as Kubernetes decides it: an unhealthy
/// pod may go when the budget says so (`AlwaysAllow`, or enough healthy pods remain);
/// otherwise the eviction takes one of the budget's allowed disruptions, or is refused with
/// 429 while none is left (or the controller has not yet seen the budget's latest spec).
pub fn check_eviction(
    budget: &Value,
    pod_name: &str,
    pod: &Value,
    now: Timestamp,
) -> EvictionCheck {
    let status = budget.get("status").unwrap_or(&Value::Null);
    let count = |field: &str| int_at(status, &format!("/{field}"));
    let name = super::str_at(budget, "/metadata/name");
    if !pod_is_ready(pod) {
        let policy = budget
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str)
            .unwrap_or("IfHealthyBudget");
        let desired = count("desiredHealthy");
        if policy == "AlwaysAllow" || (count("currentHealthy") >= desired && desired > 0) {
            return EvictionCheck::Allow;
        }
    }
    if count("observedGeneration") < int_at(budget, "/metadata/generation") {
        return too_many(format!(
            "The disruption budget {name} is still being processed by the server."
        ));
    }
    let forbidden = |why: &str| {
        EvictionCheck::Refuse(ApiError::Forbidden(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: {why}"
        )))
    };
    let allowed = count("disruptionsAllowed");
    let disrupted = status
        .get("disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, Map::len);
    if allowed < 0 {
        return forbidden("pdb disruptions allowed is negative");
    }
    if disrupted > MAX_DISRUPTED_PODS {
        return forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        );
    }
    if allowed == 0 {
        return too_many(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            count("desiredHealthy"),
            count("currentHealthy")
        ));
    }
    let mut taken = budget.clone();
    if let Some(map) = taken.as_object_mut() {
        let status = ensure_object(map, "status");
        status.insert("disruptionsAllowed".into(), json!(allowed - 1));
        ensure_object(status, "disruptedPods").insert(pod_name.to_owned(), json!(format_time(now)));
    }
    EvictionCheck::Take(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("a valid time")
    }

    fn budget(status: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "a", "generation": 1},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
               "status": status})
    }

    fn pod(ready: bool) -> Value {
        json!({"metadata": {"name": "p", "namespace": "a", "labels": {"app": "web"}},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    fn refused(check: EvictionCheck) -> Value {
        match check {
            EvictionCheck::Refuse(err) => err.to_status(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn an_eviction_takes_an_allowed_disruption_and_records_the_pod() {
        let b = budget(
            json!({"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}),
        );
        match check_eviction(&b, "p", &pod(true), now()) {
            EvictionCheck::Take(taken) => {
                assert_eq!(taken["status"]["disruptionsAllowed"], 0);
                assert_eq!(taken["status"]["disruptedPods"]["p"], format_time(now()));
                assert_eq!(taken["status"]["currentHealthy"], 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_disruption_left_is_429_naming_the_budget() {
        let b = budget(
            json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}),
        );
        let st = refused(check_eviction(&b, "p", &pod(true), now()));
        assert_eq!(st["code"], 429);
        assert_eq!(st["reason"], "TooManyRequests");
        assert_eq!(st["message"], VIOLATION);
        assert_eq!(st["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            st["details"]["causes"][0]["message"],
            "The disruption budget web needs 1 healthy pods and has 1 currently"
        );
        assert!(st["details"]["causes"][0].get("field").is_none());
    }

    #[test]
    fn a_budget_the_controller_has_not_seen_refuses_for_now() {
        let mut b = budget(json!({"observedGeneration": 1, "disruptionsAllowed": 3}));
        b["metadata"]["generation"] = json!(2);
        let st = refused(check_eviction(&b, "p", &pod(true), now()));
        assert_eq!(st["code"], 429);
        assert!(
            st["details"]["causes"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("still being processed"))
        );
    }

    #[test]
    fn unhealthy_pods_go_while_enough_healthy_ones_remain() {
        let enough = budget(
            json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1}),
        );
        assert_eq!(
            check_eviction(&enough, "p", &pod(false), now()),
            EvictionCheck::Allow
        );
        let short = budget(
            json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 1}),
        );
        assert_eq!(
            refused(check_eviction(&short, "p", &pod(false), now()))["code"],
            429
        );
        let mut always = short.clone();
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert_eq!(
            check_eviction(&always, "p", &pod(false), now()),
            EvictionCheck::Allow
        );
    }

    #[test]
    fn a_negative_allowance_is_forbidden() {
        let b = budget(json!({"observedGeneration": 1, "disruptionsAllowed": -1}));
        assert_eq!(
            refused(check_eviction(&b, "p", &pod(true), now()))["code"],
            403
        );
    }

    #[test]
    fn budgets_are_checked_as_kubernetes_checks_them() {
        let check = |spec: Value| {
            let mut causes = Vec::new();
            validate("PodDisruptionBudget", &json!({"spec": spec}), &mut causes);
            causes.into_iter().map(|c| c.field).collect::<Vec<_>>()
        };
        assert!(check(json!({"minAvailable": 1, "selector": {}})).is_empty());
        assert!(check(json!({"maxUnavailable": "25%"})).is_empty());
        assert_eq!(
            check(json!({"minAvailable": 1, "maxUnavailable": 1})),
            ["spec"]
        );
        assert_eq!(check(json!({"minAvailable": -1})), ["spec.minAvailable"]);
        assert_eq!(
            check(json!({"maxUnavailable": "150%"})),
            ["spec.maxUnavailable"]
        );
        assert_eq!(
            check(json!({"minAvailable": "many"})),
            ["spec.minAvailable"]
        );
        assert_eq!(
            check(json!({"unhealthyPodEvictionPolicy": "Sometimes"})),
            ["spec.unhealthyPodEvictionPolicy"]
        );
        assert_eq!(
            check(json!({"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})),
            ["spec.selector.matchExpressions[0].values"]
        );
    }

    #[test]
    fn the_columns_show_unset_bounds_as_not_applicable() {
        let b = budget(json!({"disruptionsAllowed": 2}));
        let cells = cells("PodDisruptionBudget", &b, now()).expect("cells");
        assert_eq!(cells[1], "1");
        assert_eq!(cells[2], "N/A");
        assert_eq!(cells[3], 2);
    }
}
