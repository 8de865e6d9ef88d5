//! Recording Events as Kubernetes components do: a repeat of the same event (same object,
//! type, reason and message) bumps the count and last-seen time of the stored Event instead
//! of making a new one.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::client::call_ok;
use crate::error::ApiError;
use crate::messages::{ApiRequest, Verb};
use crate::time::format_time;

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InvolvedObject {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl InvolvedObject {
    /// A Node, referred to as the kubelet and node controller do (its uid is its name).
    pub fn node(name: &str) -> InvolvedObject {
        InvolvedObject {
            api_version: "v1".into(),
            kind: "Node".into(),
            namespace: String::new(),
            name: name.into(),
            uid: name.into(),
        }
    }

    /// Where the Event is stored: the object's namespace, or `default` for cluster-scoped ones.
    pub fn event_namespace(&self) -> &str {
        if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }
}

/// One occurrence to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub object: InvolvedObject,
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    pub reason: String,
    pub message: String,
}

/// What to do for an occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Create a new Event with this name.
    Create { name: String },
    /// Bump the stored Event of this name to this count.
    Bump { name: String, count: u64 },
}

/// The pure part: remembers which events were recorded and decides create or bump.
#[derive(Default)]
pub struct Correlator {
    seen: HashMap<(InvolvedObject, &'static str, String, String), (String, u64)>,
}

/// The most occurrences a recorder remembers; older ones are forgotten and make new Events.
const MAX_REMEMBERED: usize = 4096;

impl Correlator {
    /// Decides for `occurrence` at `now`; the name of a new Event is `<object>.<hex nanos>`, as
    /// Kubernetes names them.
    pub fn decide(&mut self, occurrence: &Occurrence, now: Timestamp) -> Record {
        let key = (
            occurrence.object.clone(),
            occurrence.kind,
            occurrence.reason.clone(),
            occurrence.message.clone(),
        );
        if let Some((name, count)) = self.seen.get_mut(&key) {
            *count += 1;
            return Record::Bump {
                name: name.clone(),
                count: *count,
            };
        }
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        let name = format!("{}.{:x}", occurrence.object.name, now.as_nanosecond());
        self.seen.insert(key, (name.clone(), 1));
        Record::Create { name }
    }

    /// Forgets an occurrence whose Event could not be written, so the next one creates it.
    pub fn forget(&mut self, occurrence: &Occurrence) {
        self.seen.retain(|k, _| {
            !(k.0 == occurrence.object && k.2 == occurrence.reason && k.3 == occurrence.message)
        });
    }
}

/// The Event object for a first occurrence.
pub fn new_event(
    name: &str,
    occurrence: &Occurrence,
    component: &str,
    host: &str,
    now: Timestamp,
) -> Value {
    let o = &occurrence.object;
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": o.event_namespace()},
        "involvedObject": {"apiVersion": o.api_version, "kind": o.kind, "namespace": o.namespace, "name": o.name, "uid": o.uid},
        "type": occurrence.kind,
        "reason": occurrence.reason,
        "message": occurrence.message,
        "source": {"component": component, "host": host},
        "reportingComponent": component,
        "reportingInstance": host,
        "firstTimestamp": format_time(now),
        "lastTimestamp": format_time(now),
        "eventTime": Value::Null,
        "count": 1,
    })
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Records events for one component through the API.
pub struct Recorder {
    component: String,
    host: String,
    correlator: Correlator,
    fence: Option<crate::Fence>,
}

impl Recorder {
    /// A recorder for `component` running on `host`.
    pub fn new(component: &str, host: &str) -> Recorder {
        Recorder {
            component: component.into(),
            host: host.into(),
            correlator: Correlator::default(),
            fence: None,
        }
    }

    /// The same recorder writing under a leadership term (see [`crate::Fence`]).
    pub fn fenced(mut self, fence: Option<crate::Fence>) -> Recorder {
        self.fence = fence;
        self
    }

    /// Records one occurrence. Failures are returned, and the occurrence is forgotten so that
    /// the next one starts a fresh Event.
    pub async fn record(&mut self, occurrence: Occurrence) -> Result<(), ApiError> {
        let now = Timestamp::now();
        let result = match self.correlator.decide(&occurrence, now) {
            Record::Create { name } => self.create(&name, &occurrence, now).await,
            Record::Bump { name, count } => self.bump(&name, count, &occurrence, now).await,
        };
        if result.is_err() {
            self.correlator.forget(&occurrence);
        }
        result
    }

    async fn create(
        &self,
        name: &str,
        occurrence: &Occurrence,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let event = new_event(name, occurrence, &self.component, &self.host, now);
        let ns = occurrence.object.event_namespace();
        call_ok(
            ApiRequest::new(Verb::Create, "", "v1", "events", Some(ns), None)
                .with_body(&event)
                .fenced(self.fence.clone()),
            CALL_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    async fn bump(
        &self,
        name: &str,
        count: u64,
        occurrence: &Occurrence,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let ns = occurrence.object.event_namespace();
        let mut event = match call_ok(
            ApiRequest::new(Verb::Get, "", "v1", "events", Some(ns), Some(name)),
            CALL_TIMEOUT,
        )
        .await
        {
            Ok(e) => e,
            // Expired or deleted meanwhile: start it again under the same name.
            Err(ApiError::NotFound(_)) => return self.create(name, occurrence, now).await,
            Err(e) => return Err(e),
        };
        event["count"] = json!(count);
        event["lastTimestamp"] = json!(format_time(now));
        call_ok(
            ApiRequest::new(Verb::Update, "", "v1", "events", Some(ns), Some(name))
                .with_body(&event)
                .fenced(self.fence.clone()),
            CALL_TIMEOUT,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrence(reason: &str) -> Occurrence {
        Occurrence {
            object: InvolvedObject::node("n1"),
            kind: "Normal",
            reason: reason.into(),
            message: format!("Node n1 status is now: {reason}"),
        }
    }

    #[test]
    fn a_repeat_bumps_the_count_of_the_first_event() {
        let mut c = Correlator::default();
        let t = Timestamp::from_second(1_700_000_000).expect("valid");
        let Record::Create { name } = c.decide(&occurrence("NodeNotReady"), t) else {
            panic!("first is a create")
        };
        assert!(name.starts_with("n1."));
        assert_eq!(
            c.decide(&occurrence("NodeNotReady"), t),
            Record::Bump {
                name: name.clone(),
                count: 2
            }
        );
        assert_eq!(
            c.decide(&occurrence("NodeNotReady"), t),
            Record::Bump { name, count: 3 }
        );
        assert!(matches!(
            c.decide(&occurrence("NodeReady"), t),
            Record::Create { .. }
        ));
    }

    #[test]
    fn a_forgotten_occurrence_starts_again() {
        let mut c = Correlator::default();
        let t = Timestamp::from_second(1_700_000_000).expect("valid");
        c.decide(&occurrence("X"), t);
        c.forget(&occurrence("X"));
        assert!(matches!(
            c.decide(&occurrence("X"), t),
            Record::Create { .. }
        ));
    }

    #[test]
    fn node_events_live_in_default_and_decode_as_events() {
        let t = Timestamp::from_second(1_700_000_000).expect("valid");
        let e = new_event(
            "n1.abc",
            &occurrence("NodeReady"),
            "node-controller",
            "m",
            t,
        );
        assert_eq!(e["metadata"]["namespace"], "default");
        assert_eq!(e["involvedObject"]["uid"], "n1");
        assert_eq!(e["count"], 1);
    }
}
