//! One-for-one supervision with bounded restarts (DESIGN §1).
//!
//! A [`Supervisor`] starts its children in order, restarts one that stops or fails — alone,
//! after a short back-off — and gives up (stopping itself, so its own supervisor sees a failure)
//! when more than `max_restarts` restarts fall within `window`. Children rebuild their state
//! from the store, never from memory they lost.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use ractor_cluster::RactorMessage;
use tokio::time::Instant;

/// The future a child's spawn function returns.
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to start (and restart) one child: `spawn(supervisor)` must spawn the child linked to
/// `supervisor` under the spec's name.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub spawn: Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>,
}

impl ChildSpec {
    /// A spec from a name and a spawn function.
    pub fn new<F, Fut>(name: impl Into<String>, spawn: F) -> ChildSpec
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        ChildSpec {
            name: name.into(),
            spawn: Arc::new(move |cell| Box::pin(spawn(cell))),
        }
    }

    /// A spec that spawns `handler` with a copy of `args`, linked to the supervisor and
    /// registered under the spec's name: the usual child.
    pub fn actor<A>(name: impl Into<String>, handler: A, args: A::Arguments) -> ChildSpec
    where
        A: Actor + Clone + Sync,
        A::Arguments: Clone + Sync,
    {
        let name = name.into();
        let registered = name.clone();
        ChildSpec::new(name, move |supervisor: ActorCell| {
            let (name, handler, args) = (registered.clone(), handler.clone(), args.clone());
            async move {
                Ok(Actor::spawn_linked(Some(name), handler, args, supervisor)
                    .await?
                    .0
                    .get_cell())
            }
        })
    }

    /// A nested supervisor with these children and restart budget.
    pub fn supervisor(
        name: impl Into<String>,
        children: Vec<ChildSpec>,
        intensity: RestartIntensity,
    ) -> ChildSpec {
        ChildSpec::actor(
            name,
            Supervisor,
            SupervisorArgs {
                children,
                intensity,
            },
        )
    }
}

/// What to do after a child stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it after this delay.
    Restart(Duration),
    /// Too many restarts in the window: give up.
    GiveUp,
}

/// The restart budget: at most `max_restarts` in any `window`, with exponential back-off
/// between restarts that come close together. Pure: time is passed in.
#[derive(Clone, Debug)]
pub struct RestartIntensity {
    pub max_restarts: usize,
    pub window: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    recent: VecDeque<Instant>,
}

impl RestartIntensity {
    /// A budget of `max_restarts` per `window`.
    pub fn new(max_restarts: usize, window: Duration) -> RestartIntensity {
        RestartIntensity {
            max_restarts,
            window,
            first_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(2),
            recent: VecDeque::new(),
        }
    }

    /// Records a stop at `now` and decides. The first restart in a quiet window is immediate.
    pub fn on_stop(&mut self, now: Instant) -> RestartDecision {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max_restarts {
            return RestartDecision::GiveUp;
        }
        let earlier = self.recent.len();
        self.recent.push_back(now);
        if earlier == 0 {
            return RestartDecision::Restart(Duration::ZERO);
        }
        let factor = 1u32 << (earlier - 1).min(16);
        RestartDecision::Restart(
            self.first_backoff
                .saturating_mul(factor)
                .min(self.max_backoff),
        )
    }
}

/// Messages of the supervisor (local only).
#[derive(RactorMessage)]
pub enum SupervisorMsg {
    /// Start this child again (sent to itself after a back-off).
    Respawn(String),
    /// The names of the children that are running.
    Children(RpcReplyPort<Vec<String>>),
}

/// Arguments: the children, in start order, and the restart budget shared by them.
#[derive(Clone)]
pub struct SupervisorArgs {
    pub children: Vec<ChildSpec>,
    pub intensity: RestartIntensity,
}

/// The supervisor's state.
pub struct SupervisorState {
    specs: Vec<ChildSpec>,
    running: HashMap<String, ActorCell>,
    /// The budget shared by all children: too many restarts in all, and the supervisor gives up.
    intensity: RestartIntensity,
    /// Each child's own recent restarts, which set its back-off.
    per_child: HashMap<String, RestartIntensity>,
}

/// A one-for-one supervisor actor.
#[derive(Clone)]
pub struct Supervisor;

impl SupervisorState {
    fn name_of(&self, cell: &ActorCell) -> Option<String> {
        self.running
            .iter()
            .find(|(_, c)| c.get_id() == cell.get_id())
            .map(|(n, _)| n.clone())
    }
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    name: &str,
) -> Result<(), ActorProcessingErr> {
    let spec = state.specs.iter().find(|s| s.name == name).cloned();
    let Some(spec) = spec else { return Ok(()) };
    match (spec.spawn)(myself.get_cell()).await {
        Ok(cell) => {
            tracing::info!(child = %name, "started");
            state.running.insert(spec.name.clone(), cell);
            Ok(())
        }
        Err(err) => {
            tracing::warn!(child = %name, error = %err, "failed to start");
            schedule_restart(myself, state, name)
        }
    }
}

fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    name: &str,
) -> Result<(), ActorProcessingErr> {
    let now = Instant::now();
    let template = RestartIntensity::new(usize::MAX, state.intensity.window);
    let own = state
        .per_child
        .entry(name.to_owned())
        .or_insert(template)
        .on_stop(now);
    match (state.intensity.on_stop(now), own) {
        (RestartDecision::GiveUp, _) | (_, RestartDecision::GiveUp) => {
            Err(format!("child {name} restarted too often; giving up").into())
        }
        (RestartDecision::Restart(_), RestartDecision::Restart(delay)) => {
            tracing::info!(child = %name, delay_ms = delay.as_millis() as u64, "restarting");
            let name = name.to_owned();
            if delay.is_zero() {
                myself.send_message(SupervisorMsg::Respawn(name))?;
            } else {
                myself.send_after(delay, move || SupervisorMsg::Respawn(name));
            }
            Ok(())
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            specs: args.children,
            running: HashMap::new(),
            intensity: args.intensity,
            per_child: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let names: Vec<String> = state.specs.iter().map(|s| s.name.clone()).collect();
        for name in names {
            start_child(&myself, state, &name).await?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(Some("supervisor stopped".into()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Respawn(name) => {
                if !state.running.contains_key(&name) {
                    start_child(&myself, state, &name).await?;
                }
            }
            SupervisorMsg::Children(reply) => {
                let mut names: Vec<String> = state.running.keys().cloned().collect();
                names.sort();
                let _ = reply.send(names);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            _ => return Ok(()),
        };
        let Some(name) = state.name_of(&cell) else {
            return Ok(());
        };
        state.running.remove(&name);
        tracing::warn!(child = %name, reason = %why, "child stopped");
        schedule_restart(&myself, state, &name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_restart_is_immediate_then_backs_off() {
        let mut i = RestartIntensity::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(i.on_stop(t0), RestartDecision::Restart(Duration::ZERO));
        assert_eq!(
            i.on_stop(t0),
            RestartDecision::Restart(Duration::from_millis(25))
        );
        assert_eq!(
            i.on_stop(t0),
            RestartDecision::Restart(Duration::from_millis(50))
        );
    }

    #[test]
    fn too_many_restarts_in_the_window_give_up() {
        let mut i = RestartIntensity::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(matches!(i.on_stop(t0), RestartDecision::Restart(_)));
        }
        assert_eq!(
            i.on_stop(t0 + Duration::from_secs(1)),
            RestartDecision::GiveUp
        );
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let mut i = RestartIntensity::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        i.on_stop(t0);
        i.on_stop(t0);
        assert_eq!(
            i.on_stop(t0 + Duration::from_secs(11)),
            RestartDecision::Restart(Duration::ZERO)
        );
    }

    #[derive(Clone)]
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _myself: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn child(name: &str) -> Option<ActorCell> {
        ractor::registry::where_is(name)
    }

    #[tokio::test]
    async fn a_killed_child_is_restarted_under_its_name() {
        let spec = ChildSpec::actor("supervisor-test-restarted", Idle, ());
        let args = SupervisorArgs {
            children: vec![spec],
            intensity: RestartIntensity::new(5, Duration::from_secs(10)),
        };
        let (sup, _) = Actor::spawn(None, Supervisor, args).await.expect("spawns");
        wait_until("the child to start", || {
            child("supervisor-test-restarted").is_some()
        })
        .await;
        let first = child("supervisor-test-restarted").expect("started");
        first.kill();
        wait_until("a new incarnation", || {
            child("supervisor-test-restarted").is_some_and(|c| c.get_id() != first.get_id())
        })
        .await;
        sup.stop(None);
    }

    #[tokio::test]
    async fn a_supervisor_gives_up_after_too_many_restarts() {
        let spec = ChildSpec::actor("supervisor-test-meltdown", Idle, ());
        let args = SupervisorArgs {
            children: vec![spec],
            intensity: RestartIntensity::new(2, Duration::from_secs(10)),
        };
        let (_sup, handle) = Actor::spawn(None, Supervisor, args).await.expect("spawns");
        let mut kills = 0;
        while !handle.is_finished() {
            assert!(
                kills <= 3,
                "the supervisor restarted its child more than twice"
            );
            wait_until("the child to run", || {
                child("supervisor-test-meltdown").is_some() || handle.is_finished()
            })
            .await;
            if let Some(cell) = child("supervisor-test-meltdown") {
                let id = cell.get_id();
                cell.kill();
                kills += 1;
                wait_until("the child to go", || {
                    child("supervisor-test-meltdown").is_none_or(|c| c.get_id() != id)
                        || handle.is_finished()
                })
                .await;
            }
        }
        assert_eq!(
            kills, 3,
            "two restarts are allowed, the third stop gives up"
        );
    }
}
