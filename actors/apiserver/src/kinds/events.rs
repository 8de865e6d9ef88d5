//! events.k8s.io/v1 Events: a second form of the core/v1 Events the store holds. As in
//! Kubernetes, both groups read and write one copy of each Event; the forms differ in the
//! names of their fields (`note` is `message`, `regarding` is `involvedObject`, …), so an
//! Event written through either group is read through both.

use serde_json::{Map, Value, json};
use shoal_core::ApiError;
use shoal_core::error::FieldCause;

use super::{invalid, required, str_at};
use crate::resources::{self, ResourceInfo};

/// A resource served as another form of another resource's stored objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// events.k8s.io/v1 Event over core/v1 Event.
    EventsV1,
}

/// The top-level fields that differ: (events.k8s.io/v1 name, core/v1 name).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Kubernetes' limits on an events.k8s.io Event's strings (bytes).
const SHORT_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

fn rename(object: Value, api_version: &str, from_view: bool) -> Value {
    let Value::Object(map) = object else {
        return object;
    };
    let mut out = Map::with_capacity(map.len());
    for (key, value) in map {
        let renamed = RENAMED
            .iter()
            .find(|(view, stored)| if from_view { *view } else { *stored } == key)
            .map(|(view, stored)| if from_view { *stored } else { *view });
        out.insert(renamed.map_or(key, str::to_owned), value);
    }
    out.insert("apiVersion".into(), json!(api_version));
    Value::Object(out)
}

impl View {
    /// The resource whose stored objects this one shows.
    pub fn stored(self) -> &'static ResourceInfo {
        match self {
            View::EventsV1 => resources::find("", "v1", "events")
                .expect("core/v1 events are in RESOURCES (a test checks it)"),
        }
    }

    /// A stored object in this form.
    pub fn to_view(self, stored: Value) -> Value {
        match self {
            View::EventsV1 => rename(stored, "events.k8s.io/v1", false),
        }
    }

    /// An object of this form as it is stored.
    pub fn to_stored(self, view: Value) -> Value {
        match self {
            View::EventsV1 => {
                let mut stored = rename(view, "v1", true);
                // The core form always has the object an Event is about, if only empty.
                if let Some(map) = stored.as_object_mut() {
                    super::default_field(map, "involvedObject", json!({}));
                }
                stored
            }
        }
    }

    /// [`View::to_view`] of stored JSON.
    pub fn view_bytes(self, stored: &[u8]) -> Result<Vec<u8>, ApiError> {
        let value: Value = serde_json::from_slice(stored)
            .map_err(|e| ApiError::Internal(format!("a stored object is not JSON: {e}")))?;
        serde_json::to_vec(&self.to_view(value)).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// [`View::to_stored`] of JSON in this form.
    pub fn stored_bytes(self, view: &[u8]) -> Result<Vec<u8>, ApiError> {
        let value: Value = serde_json::from_slice(view)
            .map_err(|e| ApiError::Internal(format!("an object to store is not JSON: {e}")))?;
        serde_json::to_vec(&self.to_stored(value)).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// What Kubernetes checks of an Event created through events.k8s.io/v1, beyond what
    /// the core form checks: the fields the new API requires, and none of the deprecated
    /// ones it only keeps for Events written through core/v1.
    pub fn create_causes(self, event: &Value) -> Vec<FieldCause> {
        let View::EventsV1 = self;
        let mut causes = Vec::new();
        if str_at(event, "/eventTime").is_empty() {
            causes.push(required("eventTime"));
        }
        let kind = str_at(event, "/type");
        if kind != "Normal" && kind != "Warning" {
            causes.push(invalid(
                "type",
                &json!(kind),
                &format!("has invalid value: {kind}"),
            ));
        }
        for field in [
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ] {
            if event.get(field).is_some_and(|v| !v.is_null()) {
                causes.push(invalid(field, &json!(""), "needs to be unset"));
            }
        }
        if !str_at(event, "/deprecatedSource/component").is_empty()
            || !str_at(event, "/deprecatedSource/host").is_empty()
        {
            causes.push(invalid("deprecatedSource", &json!(""), "needs to be unset"));
        }
        for (field, limit) in [
            ("reportingController", usize::MAX),
            ("reportingInstance", SHORT_LIMIT),
            ("action", SHORT_LIMIT),
            ("reason", SHORT_LIMIT),
        ] {
            let value = str_at(event, &format!("/{field}"));
            if value.is_empty() {
                causes.push(required(field));
            } else if value.len() > limit {
                causes.push(invalid(
                    field,
                    &json!(""),
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if str_at(event, "/note").len() > NOTE_LIMIT {
            causes.push(invalid(
                "note",
                &json!(""),
                &format!("can have at most {NOTE_LIMIT} characters"),
            ));
        }
        let namespace = str_at(event, "/metadata/namespace");
        let regarding = str_at(event, "/regarding/namespace");
        if !regarding.is_empty() && !namespace.is_empty() && regarding != namespace {
            causes.push(invalid(
                "regarding.namespace",
                &json!(regarding),
                "does not match event.namespace",
            ));
        }
        if let Some(series) = event.get("series").filter(|s| !s.is_null()) {
            if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
                causes.push(invalid("series.count", &json!(""), "should be at least 2"));
            }
            if str_at(series, "/lastObservedTime").is_empty() {
                causes.push(required("series.lastObservedTime"));
            }
        }
        causes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_event() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Pulled",
            "message": "image pulled",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:01:00Z",
            "count": 3,
            "type": "Normal",
            "reportingComponent": "kubelet",
            "reportingInstance": "n1",
        })
    }

    #[test]
    fn the_core_events_are_served() {
        assert_eq!(View::EventsV1.stored().group, "");
        assert_eq!(View::EventsV1.stored().kind, "Event");
        assert!(View::EventsV1.stored().view.is_none());
    }

    #[test]
    fn a_core_event_reads_in_the_new_form_and_goes_back_unchanged() {
        let view = View::EventsV1.to_view(core_event());
        assert_eq!(view["apiVersion"], "events.k8s.io/v1");
        assert_eq!(view["note"], "image pulled");
        assert_eq!(view["regarding"]["name"], "web");
        assert_eq!(view["reportingController"], "kubelet");
        assert_eq!(view["deprecatedSource"]["host"], "n1");
        assert_eq!(view["deprecatedCount"], 3);
        assert_eq!(view["deprecatedFirstTimestamp"], "2026-01-01T00:00:00Z");
        for gone in ["message", "involvedObject", "source", "count"] {
            assert!(view.get(gone).is_none(), "{gone} is renamed");
        }
        assert_eq!(View::EventsV1.to_stored(view), core_event());
    }

    #[test]
    fn an_event_without_its_object_is_stored_with_an_empty_one() {
        let stored = View::EventsV1.to_stored(json!({"metadata": {"name": "e"}, "note": "n"}));
        assert_eq!(stored["involvedObject"], json!({}));
        assert_eq!(stored["message"], "n");
    }

    #[test]
    fn the_new_form_requires_what_kubernetes_requires() {
        let good = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "type": "Normal",
            "reportingController": "example.com/ctl",
            "reportingInstance": "ctl-1",
            "action": "Sync",
            "reason": "Synced",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        });
        assert!(View::EventsV1.create_causes(&good).is_empty());
        let mut bad = good.clone();
        bad["type"] = json!("Odd");
        bad["deprecatedCount"] = json!(2);
        bad["note"] = json!("x".repeat(1025));
        bad["regarding"]["namespace"] = json!("other");
        bad["series"] = json!({"count": 1});
        bad.as_object_mut().map(|m| m.remove("action"));
        bad.as_object_mut().map(|m| m.remove("eventTime"));
        let fields: Vec<String> = View::EventsV1
            .create_causes(&bad)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "eventTime",
                "type",
                "deprecatedCount",
                "action",
                "note",
                "regarding.namespace",
                "series.count",
                "series.lastObservedTime",
            ]
        );
    }
}
