//! Leader election for the cluster's singletons (the controller manager, the scheduler), as
//! Kubernetes does it: one `coordination.k8s.io/v1` Lease in `kube-system` per singleton.
//! Every master runs an [`Elector`]; the one holding the lease runs the singleton's actors,
//! the others wait.
//!
//! The lease alone cannot stop a holder that was deposed while it was slow: its late writes
//! would still land. So each term is a [`Fence`]: the lease's `leaseTransitions` when it was
//! acquired. A new holder raises its term on every store shard before it starts its actors,
//! and those actors stamp every write with it; the store refuses a write stamped with an older
//! term, wherever its key lives.
//!
//! Expiry is judged the way Kubernetes judges it, by how long the lease record has gone
//! unchanged on the observer's own monotonic clock, and also by the record's `renewTime`
//! against the observer's wall clock with [`CLOCK_SKEW`] to spare. The second rule matters when
//! the holder's master dies with the leadership of the lease's shard: the lease cannot be read
//! until that shard has a new leader, and a record first seen then would otherwise get a whole
//! lease duration again. Masters' clocks are assumed synchronized within that allowance; if
//! they are not, a standby may take over a live holder early, and the fence still keeps the
//! deposed holder's writes out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use serde_json::{Value, json};
use shoal_core::client::call_ok;
use shoal_core::supervisor::{ChildSpec, RestartIntensity, Supervisor, SupervisorArgs};
use shoal_core::time::{format_micro_time, parse_time};
use shoal_core::{ApiError, ApiRequest, Fence, Verb};
use tokio::time::Instant;

/// The namespace of every leader lease.
pub const NAMESPACE: &str = "kube-system";

/// How far apart masters' wall clocks may be for `renewTime` to count as evidence of expiry.
pub const CLOCK_SKEW: Duration = Duration::from_millis(250);

/// The time as an elector reads it: its monotonic clock (for how long a record has gone
/// unchanged) and its wall clock (for the record's own `renewTime`).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono_ms: u64,
    pub wall: Timestamp,
}

/// The lease record, as far as the election reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    /// `renewTime` as written: compared only for change, never as a clock.
    pub renew_time: Option<String>,
    pub duration_s: u64,
    pub transitions: u64,
}

impl LeaseRecord {
    /// Reads the election's fields from a Lease object.
    pub fn from_lease(lease: &Value) -> LeaseRecord {
        // The spec's fields are read loosely: a lease written by another tool still counts.
        let spec = &lease["spec"];
        LeaseRecord {
            holder: spec["holderIdentity"]
                .as_str()
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
            renew_time: spec["renewTime"].as_str().map(str::to_owned),
            duration_s: spec["leaseDurationSeconds"].as_u64().unwrap_or(0),
            transitions: spec["leaseTransitions"].as_u64().unwrap_or(0),
        }
    }
}

/// What a candidate has seen of the lease: the last record and when (on its own clock, in
/// milliseconds) that record was first seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub record: Option<LeaseRecord>,
    pub since_ms: u64,
}

/// What a candidate does on one look at the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is no lease: create it, held by us, at term `transitions`.
    Create { transitions: u64 },
    /// We hold it: renew it, at term `transitions` (raised past a term found superseded).
    Renew { transitions: u64 },
    /// It expired or was released: take it at the next term.
    Acquire { transitions: u64 },
    /// Someone else holds a live lease.
    Wait { holder: String },
}

/// The pure core of the election: given the lease as read now (`None`: there is none), what
/// this candidate does. `floor` is the lowest term this candidate may hold (one past a term
/// the store reported superseded). Updates `seen` with the record.
pub fn decide(
    me: &str,
    lease: Option<&LeaseRecord>,
    seen: &mut Observation,
    now: Now,
    floor: u64,
) -> Step {
    let now_ms = now.mono_ms;
    let Some(lease) = lease else {
        *seen = Observation {
            record: None,
            since_ms: now_ms,
        };
        return Step::Create { transitions: floor };
    };
    if seen.record.as_ref() != Some(lease) {
        *seen = Observation {
            record: Some(lease.clone()),
            since_ms: now_ms,
        };
    }
    let duration_ms = lease.duration_s.saturating_mul(1000);
    let unchanged_too_long = now_ms.saturating_sub(seen.since_ms) > duration_ms;
    let renewed_too_long_ago = lease
        .renew_time
        .as_deref()
        .and_then(parse_time)
        .is_some_and(|renewed| {
            let age = now.wall.as_millisecond() - renewed.as_millisecond();
            let allowed =
                i64::try_from(duration_ms + CLOCK_SKEW.as_millis() as u64).unwrap_or(i64::MAX);
            age > allowed
        });
    match lease.holder.as_deref() {
        Some(holder) if holder == me => Step::Renew {
            transitions: lease.transitions.max(floor),
        },
        Some(holder) if !unchanged_too_long && !renewed_too_long_ago => Step::Wait {
            holder: holder.to_owned(),
        },
        _ => Step::Acquire {
            transitions: (lease.transitions + 1).max(floor),
        },
    }
}

/// The lease object that a step writes: `existing` (keeping its metadata, so the write is a
/// compare-and-swap on its `resourceVersion`) held by `me` at `transitions`.
pub fn lease_object(
    name: &str,
    me: &str,
    duration_s: u64,
    transitions: u64,
    now: Timestamp,
    existing: Option<&Value>,
) -> Value {
    let mut lease = existing.cloned().unwrap_or_else(|| {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": NAMESPACE},
        })
    });
    let now_text = format_micro_time(now);
    let same_term = existing.is_some_and(|l| {
        l.pointer("/spec/holderIdentity").and_then(Value::as_str) == Some(me)
            && l.pointer("/spec/leaseTransitions").and_then(Value::as_u64) == Some(transitions)
    });
    let acquired = if same_term {
        existing
            .and_then(|l| l.pointer("/spec/acquireTime"))
            .cloned()
            .unwrap_or_else(|| json!(now_text))
    } else {
        json!(now_text)
    };
    lease["spec"] = json!({
        "holderIdentity": me,
        "leaseDurationSeconds": duration_s,
        "acquireTime": acquired,
        "renewTime": now_text,
        "leaseTransitions": transitions,
    });
    lease
}

/// Why raising a term failed.
#[derive(Debug, thiserror::Error)]
pub enum RaiseError {
    /// The store has seen a newer term of this fence already.
    #[error("term superseded by {0}")]
    Superseded(u64),
    #[error("{0}")]
    Failed(String),
}

/// The future of a term raise.
pub type RaiseFuture = Pin<Box<dyn Future<Output = Result<(), RaiseError>> + Send>>;
/// Raises a term on every store shard.
pub type Raise = Arc<dyn Fn(Fence) -> RaiseFuture + Send + Sync>;
/// The actors a leader runs, given its term.
pub type Singleton = Arc<dyn Fn(Fence) -> Vec<ChildSpec> + Send + Sync>;

/// What an elector campaigns for, and how.
#[derive(Clone)]
pub struct ElectorArgs {
    /// The lease's name in `kube-system`, e.g. `kube-controller-manager`.
    pub lease: String,
    /// This candidate's identity: unique per process, as `<master>_<random>`.
    pub identity: String,
    /// How long a lease lives unrenewed before a standby takes it.
    pub lease_duration: Duration,
    /// How long a leader keeps leading while its renewals fail.
    pub renew_deadline: Duration,
    /// How often to look at (and renew) the lease.
    pub retry_period: Duration,
    pub raise: Raise,
    pub singleton: Singleton,
}

/// Messages of an elector (local only).
#[derive(RactorMessage)]
pub enum ElectorMsg {
    Tick,
}

/// A term being led: its fence and the supervisor of the singleton's actors.
struct Leading {
    fence: Fence,
    actors: ActorCell,
}

/// An elector's state.
pub struct ElectorState {
    args: ElectorArgs,
    seen: Observation,
    floor: u64,
    leading: Option<Leading>,
    last_renewed: Instant,
    started: Instant,
}

/// Campaigns for one lease and runs the singleton while it holds it.
#[derive(Clone)]
pub struct Elector;

const CALL: Duration = Duration::from_secs(2);

fn lease_request(verb: Verb, name: Option<&str>) -> ApiRequest {
    ApiRequest::new(
        verb,
        "coordination.k8s.io",
        "v1",
        "leases",
        Some(NAMESPACE),
        name,
    )
}

impl ElectorState {
    fn fence_name(&self) -> String {
        format!("{NAMESPACE}/{}", self.args.lease)
    }

    async fn step_down(&mut self, why: &str) {
        if let Some(leading) = self.leading.take() {
            tracing::warn!(lease = %self.args.lease, term = leading.fence.token, why, "stepping down");
            leading.actors.stop_and_wait(None, Some(CALL)).await.ok();
        }
    }

    /// One look at the lease, and what follows from it.
    async fn tick(&mut self, myself: &ActorRef<ElectorMsg>) -> Result<(), ApiError> {
        let existing = match call_ok(lease_request(Verb::Get, Some(&self.args.lease)), CALL).await {
            Ok(lease) => Some(lease),
            Err(ApiError::NotFound(_)) => None,
            Err(err) => return Err(err),
        };
        let record = existing.as_ref().map(LeaseRecord::from_lease);
        let now = Now {
            mono_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            wall: Timestamp::now(),
        };
        let step = decide(
            &self.args.identity,
            record.as_ref(),
            &mut self.seen,
            now,
            self.floor,
        );
        let transitions = match step.clone() {
            Step::Wait { holder } => {
                if self.leading.is_some() {
                    self.step_down(&format!("{holder} holds the lease")).await;
                }
                return Ok(());
            }
            Step::Create { transitions }
            | Step::Renew { transitions }
            | Step::Acquire { transitions } => transitions,
        };
        let duration_s = self.args.lease_duration.as_secs().max(1);
        let lease = lease_object(
            &self.args.lease,
            &self.args.identity,
            duration_s,
            transitions,
            Timestamp::now(),
            existing.as_ref(),
        );
        let request = match existing {
            Some(_) => lease_request(Verb::Update, Some(&self.args.lease)),
            None => lease_request(Verb::Create, None),
        };
        let asked = Instant::now();
        call_ok(request.with_body(&lease), CALL).await?;
        tracing::debug!(lease = %self.args.lease, ?step, took = ?asked.elapsed(), "lease written");
        self.last_renewed = Instant::now();
        let fence = Fence {
            name: self.fence_name(),
            token: transitions,
        };
        if self
            .leading
            .as_ref()
            .is_some_and(|leading| leading.fence == fence)
        {
            return Ok(());
        }
        // A new term (or our first): no actor of an older one may keep writing.
        self.step_down("a new term begins").await;
        let asked = Instant::now();
        let raised = (self.args.raise)(fence.clone()).await;
        tracing::debug!(lease = %self.args.lease, term = fence.token, took = ?asked.elapsed(), ok = raised.is_ok(), "term raised");
        match raised {
            Ok(()) => {}
            Err(RaiseError::Superseded(newest)) => {
                // The lease was recreated or rolled back below a term the store has seen:
                // the next renewal moves past it.
                self.floor = newest + 1;
                return Ok(());
            }
            Err(RaiseError::Failed(why)) => return Err(ApiError::Unavailable(why)),
        }
        let children = (self.args.singleton)(fence.clone());
        let (actors, _) = Actor::spawn_linked(
            None,
            Supervisor,
            SupervisorArgs {
                children,
                intensity: RestartIntensity::new(20, Duration::from_secs(10)),
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| ApiError::Internal(format!("starting the singleton: {e}")))?;
        tracing::info!(lease = %self.args.lease, identity = %self.args.identity, term = fence.token, "became the leader");
        self.leading = Some(Leading {
            fence,
            actors: actors.get_cell(),
        });
        Ok(())
    }
}

impl Actor for Elector {
    type Msg = ElectorMsg;
    type State = ElectorState;
    type Arguments = ElectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ElectorMsg>,
        args: ElectorArgs,
    ) -> Result<ElectorState, ActorProcessingErr> {
        myself.send_interval(args.retry_period, || ElectorMsg::Tick);
        Ok(ElectorState {
            args,
            seen: Observation::default(),
            floor: 0,
            leading: None,
            last_renewed: Instant::now(),
            started: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ElectorMsg>,
        _msg: ElectorMsg,
        state: &mut ElectorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(err) = state.tick(&myself).await {
            tracing::debug!(lease = %state.args.lease, error = %err, "leader election round failed");
            if state.leading.is_some() && state.last_renewed.elapsed() > state.args.renew_deadline {
                state
                    .step_down("the lease could not be renewed in time")
                    .await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ElectorMsg>,
        event: SupervisionEvent,
        state: &mut ElectorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, _) | SupervisionEvent::ActorTerminated(cell, ..) =
            &event
            && state
                .leading
                .as_ref()
                .is_some_and(|l| l.actors.get_id() == cell.get_id())
        {
            // The singleton's supervisor gave up: lead again from scratch on the next look.
            tracing::warn!(lease = %state.args.lease, "the singleton stopped; it restarts with the next term check");
            state.leading = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_800_000_000;

    /// A lease renewed at `renew_ms` past the base time, by the wall clock.
    fn held(holder: &str, renew_ms: i64, transitions: u64) -> LeaseRecord {
        let at = Timestamp::from_millisecond(BASE * 1000 + renew_ms).expect("valid");
        LeaseRecord {
            holder: Some(holder.into()),
            renew_time: Some(format_micro_time(at)),
            duration_s: 1,
            transitions,
        }
    }

    /// Both clocks at `ms` past the base time.
    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall: Timestamp::from_millisecond(BASE * 1000 + ms as i64).expect("valid"),
        }
    }

    #[test]
    fn the_first_candidate_creates_the_lease() {
        let mut seen = Observation::default();
        assert_eq!(
            decide("a", None, &mut seen, at(0), 0),
            Step::Create { transitions: 0 }
        );
    }

    #[test]
    fn the_holder_renews_in_its_term() {
        let mut seen = Observation::default();
        assert_eq!(
            decide("a", Some(&held("a", 0, 3)), &mut seen, at(0), 0),
            Step::Renew { transitions: 3 }
        );
    }

    #[test]
    fn a_standby_waits_while_the_record_keeps_changing() {
        let mut seen = Observation::default();
        for i in 0..4 {
            let now = i * 900;
            assert_eq!(
                decide("b", Some(&held("a", now as i64, 0)), &mut seen, at(now), 0),
                Step::Wait { holder: "a".into() }
            );
        }
    }

    #[test]
    fn a_standby_takes_a_lease_unchanged_for_its_duration() {
        let mut seen = Observation::default();
        // Renewed by a clock far ahead of ours: only our own observation counts.
        let lease = held("a", 60_000, 4);
        assert!(matches!(
            decide("b", Some(&lease), &mut seen, at(5_000), 0),
            Step::Wait { .. }
        ));
        assert!(matches!(
            decide("b", Some(&lease), &mut seen, at(6_000), 0),
            Step::Wait { .. }
        ));
        assert_eq!(
            decide("b", Some(&lease), &mut seen, at(6_001), 0),
            Step::Acquire { transitions: 5 }
        );
    }

    #[test]
    fn a_record_first_seen_late_is_judged_by_its_renew_time() {
        // The lease could not be read for a while (its shard was electing a leader): the
        // record seen now was renewed 1.3 s ago by the wall clock.
        let mut seen = Observation::default();
        let lease = held("a", 0, 2);
        assert_eq!(
            decide("b", Some(&lease), &mut seen, at(1_300), 0),
            Step::Acquire { transitions: 3 }
        );
        // Within the duration and the skew allowance it is still live.
        let mut seen = Observation::default();
        assert!(matches!(
            decide("b", Some(&lease), &mut seen, at(1_200), 0),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut seen = Observation::default();
        let released = LeaseRecord {
            holder: None,
            ..held("a", 0, 2)
        };
        assert_eq!(
            decide("b", Some(&released), &mut seen, at(0), 0),
            Step::Acquire { transitions: 3 }
        );
    }

    #[test]
    fn a_superseded_term_is_left_behind() {
        let mut seen = Observation::default();
        assert_eq!(
            decide("a", Some(&held("a", 0, 0)), &mut seen, at(0), 8),
            Step::Renew { transitions: 8 }
        );
        assert_eq!(
            decide("a", None, &mut seen, at(0), 8),
            Step::Create { transitions: 8 }
        );
    }

    #[test]
    fn the_lease_object_keeps_its_metadata_and_acquire_time_within_a_term() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-01-01T00:00:01Z".parse().expect("time");
        let mut first = lease_object("kcm", "a_1", 1, 0, t0, None);
        first["metadata"]["resourceVersion"] = json!("12");
        let renewed = lease_object("kcm", "a_1", 1, 0, t1, Some(&first));
        assert_eq!(renewed["metadata"]["resourceVersion"], "12");
        assert_eq!(renewed["spec"]["acquireTime"], first["spec"]["acquireTime"]);
        assert_ne!(renewed["spec"]["renewTime"], first["spec"]["renewTime"]);
        let taken = lease_object("kcm", "b_2", 1, 1, t1, Some(&renewed));
        assert_eq!(taken["spec"]["acquireTime"], json!(format_micro_time(t1)));
        assert_eq!(taken["spec"]["leaseTransitions"], 1);
        assert_eq!(
            LeaseRecord::from_lease(&taken).holder.as_deref(),
            Some("b_2")
        );
    }
}
