//! The shard actor: serializes the writes of one shard, persists them, and fans committed
//! changes out to watchers. A restarted shard rebuilds everything from its database; watchers
//! of the old incarnation see their stream end and resume from their last version.
//!
//! Messages, in any order: `Get`, `List`, `Write`, `Watch`. Writes are applied one at a time,
//! in arrival order; a watch registered after a write never sees that write twice.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;

use crate::error::StoreError;
use crate::machine::{StoreEvent, Stored, WriteOp, WriteOutcome, check_watch_start};
use crate::persist::ShardDb;

/// The registry name of shard `n`'s actor.
pub fn shard_name(n: u32) -> String {
    format!("shard-{n}")
}

/// The process group of shard `n`.
pub fn shard_group(n: u32) -> String {
    format!("shard/{n}")
}

/// A shard's answer to a list: the entries under the prefix and the revision it was taken at.
pub type ListReply = Result<(Vec<(String, Stored)>, u64), StoreError>;

/// Messages of a shard (local only).
#[derive(RactorMessage)]
pub enum ShardMsg {
    Get(String, RpcReplyPort<Result<Option<Stored>, StoreError>>),
    /// Everything under a prefix, and the revision of the list.
    List(String, RpcReplyPort<ListReply>),
    Write(WriteOp, RpcReplyPort<Result<WriteOutcome, StoreError>>),
    /// Events under `prefix` after revision `from` (or from now, when `None`).
    Watch {
        prefix: String,
        from: Option<u64>,
        reply: RpcReplyPort<Result<(mpsc::Receiver<StoreEvent>, u64), StoreError>>,
    },
}

/// What a shard starts from.
#[derive(Clone)]
pub struct ShardArgs {
    pub db: ShardDb,
    /// Events retained for watches; older starts get 410 Gone.
    pub history_limit: u64,
    /// Events buffered per watcher before it is cut off as too slow.
    pub watch_queue: usize,
}

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<StoreEvent>,
}

/// The shard's state: its database and its watchers.
pub struct ShardState {
    db: ShardDb,
    history_limit: u64,
    watch_queue: usize,
    subscribers: Vec<Subscriber>,
}

/// The shard actor.
#[derive(Clone)]
pub struct Shard;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Storage(format!("storage task failed: {e}")))?
}

impl ShardState {
    /// Delivers an event to every watcher of its prefix; a full or closed queue drops the watcher.
    fn fan_out(&mut self, event: &StoreEvent) {
        self.subscribers.retain(|s| {
            if !event.key.starts_with(&s.prefix) {
                return !s.tx.is_closed();
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(shard = event.shard, prefix = %s.prefix, "watcher too slow; cutting it off");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    async fn watch(
        &mut self,
        prefix: String,
        from: Option<u64>,
    ) -> Result<(mpsc::Receiver<StoreEvent>, u64), StoreError> {
        let db = self.db.clone();
        let marks = blocking(move || db.marks()).await?;
        let start = from.unwrap_or(marks.revision);
        check_watch_start(start, marks.oldest_kept, marks.revision)?;
        let db = self.db.clone();
        let replay_prefix = prefix.clone();
        let backlog = if start < marks.revision {
            blocking(move || db.events_after(start, &replay_prefix)).await?
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::channel(self.watch_queue.max(backlog.len() + 1));
        for event in backlog {
            // The channel was sized for the whole backlog.
            let _ = tx.try_send(event);
        }
        self.subscribers.push(Subscriber { prefix, tx });
        Ok((rx, start))
    }
}

impl Actor for Shard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        ractor::pg::join(shard_group(args.db.shard()), vec![myself.get_cell()]);
        Ok(ShardState {
            db: args.db,
            history_limit: args.history_limit.max(1),
            watch_queue: args.watch_queue.max(1),
            subscribers: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Get(key, reply) => {
                let _ = reply.send(state.db.get(&key));
            }
            ShardMsg::List(prefix, reply) => {
                let _ = reply.send(state.db.list(&prefix));
            }
            ShardMsg::Write(op, reply) => {
                let db = state.db.clone();
                let limit = state.history_limit;
                let result = blocking(move || db.write(&op, limit)).await;
                let outcome = match result {
                    Ok((outcome, event)) => {
                        if let Some(event) = event {
                            state.fan_out(&event);
                        }
                        Ok(outcome)
                    }
                    Err(err) => Err(err),
                };
                let _ = reply.send(outcome);
            }
            ShardMsg::Watch {
                prefix,
                from,
                reply,
            } => {
                let result = state.watch(prefix, from).await;
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}
