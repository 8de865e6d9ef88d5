//! What each workload and network kind adds to the common handling of objects: its
//! defaults, its checks, and its columns in `kubectl get` (kubectl-contract §5.2, §9.3).

pub mod events;
pub mod network;
pub mod policy;
pub mod workloads;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use shoal_core::error::FieldCause;

/// [`roundtrip`] for the kind a resource serves, whichever group it is in.
pub fn roundtrip_of(
    info: &crate::resources::ResourceInfo,
    object: &Value,
) -> Option<Result<Value, serde_json::Error>> {
    match info.view {
        Some(events::View::EventsV1) => Some(
            k8s_openapi::api::events::v1::Event::deserialize(object).and_then(serde_json::to_value),
        ),
        None => roundtrip(info.kind, object),
    }
}

/// The object read into the `k8s-openapi` type of `kind` and written back: what Kubernetes
/// keeps of it (fields the kind does not have are gone). `None` for a kind not modelled.
pub fn roundtrip(kind: &str, object: &Value) -> Option<Result<Value, serde_json::Error>> {
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::batch::v1 as batch;
    use k8s_openapi::api::coordination::v1 as coordination;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    use k8s_openapi::api::policy::v1 as policy;
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(
        v: &Value,
    ) -> Result<Value, serde_json::Error> {
        T::deserialize(v).and_then(|typed| serde_json::to_value(typed))
    }
    Some(match kind {
        "Namespace" => through::<core::Namespace>(object),
        "Node" => through::<core::Node>(object),
        "Pod" => through::<core::Pod>(object),
        "ConfigMap" => through::<core::ConfigMap>(object),
        "Secret" => through::<core::Secret>(object),
        "ServiceAccount" => through::<core::ServiceAccount>(object),
        "Event" => through::<core::Event>(object),
        "Service" => through::<core::Service>(object),
        "Endpoints" => through::<core::Endpoints>(object),
        "ReplicationController" => through::<core::ReplicationController>(object),
        "Deployment" => through::<apps::Deployment>(object),
        "ReplicaSet" => through::<apps::ReplicaSet>(object),
        "DaemonSet" => through::<apps::DaemonSet>(object),
        "StatefulSet" => through::<apps::StatefulSet>(object),
        "ControllerRevision" => through::<apps::ControllerRevision>(object),
        "Job" => through::<batch::Job>(object),
        "CronJob" => through::<batch::CronJob>(object),
        "Lease" => through::<coordination::Lease>(object),
        "EndpointSlice" => through::<discovery::EndpointSlice>(object),
        "Eviction" => through::<policy::Eviction>(object),
        "Scale" => through::<k8s_openapi::api::autoscaling::v1::Scale>(object),
        "PodDisruptionBudget" => through::<policy::PodDisruptionBudget>(object),
        _ => return None,
    })
}

/// One table column: name, type, priority (1 = only with `-o wide`) and description.
pub struct Column(pub &'static str, pub &'static str, pub u8, pub &'static str);

pub(crate) const NAME: Column = Column(
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
pub(crate) const AGE: Column = Column("Age", "string", 0, "The age of the object.");
pub(crate) const CONTAINERS: Column = Column(
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
);
pub(crate) const IMAGES: Column = Column(
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Sets `key` when it is missing or null.
pub(crate) fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

/// The object at `key`, made an empty object first when it is missing or not an object.
pub(crate) fn ensure_object<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
) -> &'a mut Map<String, Value> {
    let entry = parent.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    match entry {
        Value::Object(map) => map,
        // Just replaced by an object above.
        _ => unreachable!("entry is an object"),
    }
}

pub(crate) fn required(field: impl Into<String>) -> FieldCause {
    FieldCause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

pub(crate) fn invalid(field: impl Into<String>, value: &Value, why: &str) -> FieldCause {
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    FieldCause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {shown}: {why}"),
    }
}

pub(crate) fn unsupported(field: impl Into<String>, value: &str, valid: &[&str]) -> FieldCause {
    let valid: Vec<String> = valid.iter().map(|v| format!("{v:?}")).collect();
    FieldCause {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            valid.join(", ")
        ),
    }
}

/// A string map (labels, a selector, a node selector) as its entries.
pub(crate) fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `k=v,k2=v2`, sorted by key, as Kubernetes formats a label set; empty when there is none.
pub(crate) fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `metav1.LabelSelector` in the string form of `kubectl get -o wide` and `Scale`:
/// `matchLabels` as `k=v`, then each expression (`k in (a,b)`, `k notin (a)`, `k`, `!k`).
/// Empty for an empty selector.
pub(crate) fn format_selector(selector: &Value) -> String {
    let mut parts: Vec<String> = string_map(selector.get("matchLabels"))
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = str_at(e, "/key");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match str_at(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        });
    }
    parts.join(",")
}

pub(crate) use shoal_core::selector::label_selector_matches as selector_matches;

/// `<none>` for an empty cell, as kubectl prints it.
pub(crate) fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_as_kubectl_prints_them() {
        let s = json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "x", "operator": "Exists"},
            {"key": "y", "operator": "DoesNotExist"},
        ]});
        assert_eq!(
            format_selector(&s),
            "a=1,b=2,tier in (web,api),env notin (dev),x,!y"
        );
        assert_eq!(format_selector(&json!({})), "");
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let s = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ]});
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_matches(
            &s,
            &labels(&[("app", "web"), ("tier", "fe")])
        ));
        assert!(!selector_matches(&s, &labels(&[("app", "web")])));
        assert!(!selector_matches(
            &s,
            &labels(&[("app", "web"), ("tier", "fe"), ("canary", "1")])
        ));
        assert!(!selector_matches(
            &s,
            &labels(&[("app", "db"), ("tier", "fe")])
        ));
    }
}
