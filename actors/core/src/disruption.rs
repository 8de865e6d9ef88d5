//! What the API server's eviction and the disruption controller both read of pods and
//! PodDisruptionBudgets (policy/v1): which pods a budget covers, which are healthy, and how
//! its `minAvailable` / `maxUnavailable` scale.

use serde_json::Value;

use crate::selector::{label_selector_matches, labels_of};

/// How long an eviction's entry in `status.disruptedPods` counts the pod as disrupted
/// before the pod's deletion is no longer expected (Kubernetes' `DeletionTimeout`).
pub const DELETION_TIMEOUT_S: i64 = 120;

/// The most evictions a budget records before its controller confirms them.
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// Whether the budget covers the pod: same namespace, and its selector (present; policy/v1
/// reads an empty one as every pod of the namespace, a missing one as none) matches.
pub fn budget_covers(budget: &Value, pod: &Value) -> bool {
    let ns = |o: &Value| {
        o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match budget.pointer("/spec/selector").filter(|s| !s.is_null()) {
        Some(selector) => {
            ns(budget) == ns(pod) && label_selector_matches(selector, &labels_of(pod))
        }
        None => false,
    }
}

/// Whether the pod's `Ready` condition is `True`.
pub fn pod_is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `minAvailable` / `maxUnavailable`: a count, or a percentage of the expected pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOrPercent {
    Int(i64),
    Percent(i64),
}

impl IntOrPercent {
    /// Reads the JSON form: a number, or a string `"N%"` (a string of digits alone is a
    /// number too, as Kubernetes reads it).
    pub fn read(value: &Value) -> Result<IntOrPercent, String> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .map(IntOrPercent::Int)
                .ok_or_else(|| format!("{n} is not an integer")),
            Value::String(s) => {
                if let Some(p) = s.strip_suffix('%') {
                    p.parse::<i64>()
                        .map(IntOrPercent::Percent)
                        .map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}"))
                } else {
                    s.parse::<i64>()
                        .map(IntOrPercent::Int)
                        .map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}"))
                }
            }
            other => Err(format!("{other} is neither a number nor a percentage")),
        }
    }

    /// The value for `total` pods: a percentage rounded up or down as asked.
    pub fn scaled(self, total: i64, round_up: bool) -> i64 {
        match self {
            IntOrPercent::Int(n) => n,
            IntOrPercent::Percent(p) if round_up => (p * total + 99).div_euclid(100),
            IntOrPercent::Percent(p) => (p * total).div_euclid(100),
        }
    }

    pub fn is_percent(self) -> bool {
        matches!(self, IntOrPercent::Percent(_))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_budget_covers_the_pods_of_its_namespace_its_selector_picks() {
        let pod = json!({"metadata": {"namespace": "a", "labels": {"app": "web"}}});
        let budget = |ns: &str, selector: Value| json!({"metadata": {"namespace": ns}, "spec": {"selector": selector}});
        assert!(budget_covers(
            &budget("a", json!({"matchLabels": {"app": "web"}})),
            &pod
        ));
        assert!(budget_covers(&budget("a", json!({})), &pod));
        assert!(!budget_covers(&budget("a", Value::Null), &pod));
        assert!(!budget_covers(&budget("b", json!({})), &pod));
        assert!(!budget_covers(
            &budget("a", json!({"matchLabels": {"app": "db"}})),
            &pod
        ));
    }

    #[test]
    fn readiness_is_the_ready_condition() {
        assert!(pod_is_ready(
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        ));
        assert!(!pod_is_ready(
            &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
        ));
        assert!(!pod_is_ready(&json!({"status": {"phase": "Running"}})));
    }

    #[test]
    fn counts_and_percentages_scale_as_kubernetes_scales_them() {
        assert_eq!(IntOrPercent::read(&json!(2)), Ok(IntOrPercent::Int(2)));
        assert_eq!(IntOrPercent::read(&json!("3")), Ok(IntOrPercent::Int(3)));
        assert_eq!(
            IntOrPercent::read(&json!("50%")),
            Ok(IntOrPercent::Percent(50))
        );
        assert!(IntOrPercent::read(&json!("half")).is_err());
        assert!(IntOrPercent::read(&json!(true)).is_err());
        assert_eq!(IntOrPercent::Percent(50).scaled(3, true), 2);
        assert_eq!(IntOrPercent::Percent(50).scaled(3, false), 1);
        assert_eq!(IntOrPercent::Int(4).scaled(3, true), 4);
    }
}
