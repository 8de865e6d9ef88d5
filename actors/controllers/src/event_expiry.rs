//! Event expiry: Events are kept for the cluster's event TTL after they were last seen, then
//! deleted (Kubernetes gives each Event an etcd lease of `--event-ttl`; the store here has no
//! leases, so the controller manager sweeps).

use std::time::Duration;

use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde_json::{Value, json};
use shoal_core::client::call_ok;
use shoal_core::time::parse_time;
use shoal_core::{ApiError, ApiRequest, Fence, Verb};

/// What the sweep sees of one Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When it was last seen: the latest of its timestamps, its series' last observation
    /// and its creation.
    pub last_seen: Option<Timestamp>,
}

impl EventView {
    /// Reads the sweep's fields from a core/v1 Event.
    pub fn from_event(event: &Value) -> Option<EventView> {
        let meta = event.get("metadata")?;
        let at = |pointer: &str| {
            event
                .pointer(pointer)
                .and_then(Value::as_str)
                .and_then(parse_time)
        };
        let last_seen = [
            "/lastTimestamp",
            "/eventTime",
            "/series/lastObservedTime",
            "/firstTimestamp",
            "/metadata/creationTimestamp",
        ]
        .iter()
        .filter_map(|p| at(p))
        .max();
        Some(EventView {
            namespace: meta.get("namespace")?.as_str()?.to_owned(),
            name: meta.get("name")?.as_str()?.to_owned(),
            uid: meta.get("uid")?.as_str()?.to_owned(),
            last_seen,
        })
    }
}

/// The pure core: the Events last seen longer than `ttl` before `now`. One without any time
/// is left alone (nothing says how old it is).
pub fn expired(events: &[EventView], now: Timestamp, ttl: Duration) -> Vec<&EventView> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    events
        .iter()
        .filter(|e| {
            e.last_seen
                .is_some_and(|t| now.as_millisecond().saturating_sub(t.as_millisecond()) > ttl_ms)
        })
        .collect()
}

/// Messages of the sweep (local only).
#[derive(RactorMessage)]
pub enum EventExpiryMsg {
    /// Look and delete once.
    Tick,
}

/// Arguments: how long Events are kept, how often to look, and the term to stamp writes with.
#[derive(Clone)]
pub struct EventExpiryArgs {
    pub ttl: Duration,
    pub period: Duration,
    pub fence: Option<Fence>,
}

/// The event expiry actor.
#[derive(Clone)]
pub struct EventExpiry;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn sweep(args: &EventExpiryArgs) -> Result<usize, ApiError> {
    let list = call_ok(
        ApiRequest::new(Verb::List, "", "v1", "events", None, None),
        CALL_TIMEOUT,
    )
    .await?;
    let views: Vec<EventView> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(EventView::from_event)
        .collect();
    let mut deleted = 0;
    for event in expired(&views, Timestamp::now(), args.ttl) {
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": event.uid}});
        let req = ApiRequest::new(
            Verb::Delete,
            "",
            "v1",
            "events",
            Some(&event.namespace),
            Some(&event.name),
        )
        .with_body(&options)
        .fenced(args.fence.clone());
        match call_ok(req, CALL_TIMEOUT).await {
            Ok(_) => deleted += 1,
            // Gone already, or replaced by a newer one of the same name.
            Err(ApiError::NotFound(_) | ApiError::Conflict(..)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(deleted)
}

/// The sweep's state: its settings.
pub struct EventExpiryState {
    args: EventExpiryArgs,
}

impl Actor for EventExpiry {
    type Msg = EventExpiryMsg;
    type State = EventExpiryState;
    type Arguments = EventExpiryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EventExpiryMsg>,
        args: EventExpiryArgs,
    ) -> Result<EventExpiryState, ActorProcessingErr> {
        myself.send_interval(args.period, || EventExpiryMsg::Tick);
        Ok(EventExpiryState { args })
    }

    async fn handle(
        &self,
        _myself: ActorRef<EventExpiryMsg>,
        msg: EventExpiryMsg,
        state: &mut EventExpiryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EventExpiryMsg::Tick => match sweep(&state.args).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "expired events deleted"),
                Err(err) => tracing::debug!(error = %err, "the event sweep failed; will retry"),
            },
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

    fn view(name: &str, last_seen: Option<i64>) -> EventView {
        EventView {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            last_seen: last_seen.map(t),
        }
    }

    #[test]
    fn events_go_once_last_seen_longer_than_the_ttl_ago() {
        let events = [
            view("old", Some(0)),
            view("edge", Some(3600)),
            view("fresh", Some(7000)),
            view("timeless", None),
        ];
        let gone: Vec<&str> = expired(&events, t(7200), Duration::from_secs(3600))
            .into_iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(gone, vec!["old"]);
    }

    #[test]
    fn the_latest_time_an_event_carries_counts() {
        let event = json!({
            "metadata": {"namespace": "default", "name": "e", "uid": "u", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "firstTimestamp": "2024-01-01T00:00:00Z",
            "lastTimestamp": "2024-01-01T05:00:00Z",
            "series": {"count": 3, "lastObservedTime": "2024-01-01T06:00:00.000000Z"},
        });
        let v = EventView::from_event(&event).expect("a view");
        assert_eq!(v.last_seen, parse_time("2024-01-01T06:00:00Z"));
        assert!(EventView::from_event(&json!({"metadata": {"name": "x"}})).is_none());
    }
}
