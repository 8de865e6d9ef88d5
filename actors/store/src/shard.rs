//! The shard actor: owns this master's replica of one shard group (DESIGN §4). It starts the
//! group's Raft node over the shard's log and database, registers it with the [`RaftHost`] so
//! other masters reach it, and serves the store's requests: writes and linearizable reads go
//! through the leader, watches come from the local applied state.
//!
//! A restarted shard stops the Raft node of its previous incarnation and starts a new one
//! from the same files; watchers of the old incarnation see their stream end and resume
//! from their last version.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;

use crate::error::StoreError;
use crate::machine::{Proposal, StoreEvent, Stored, WriteOutcome};
use crate::persist::ShardDb;
use crate::raft::{
    GroupNetwork, Io, LogStore, Member, NodeId, RaftHost, Replica, Router, Runtime, ShardMachine,
};
use crate::watch::WatchHub;

/// The registry name of shard `n`'s actor.
pub fn shard_name(n: u32) -> String {
    format!("shard-{n}")
}

/// The process group of shard `n`.
pub fn shard_group(n: u32) -> String {
    format!("shard/{n}")
}

/// How many times a request made through a shard actor may be forwarded between masters
/// looking for the leader.
pub const FORWARD_HOPS: u8 = 2;

/// A shard's answer to a list: the entries under the prefix and the revision it was taken at.
pub type ListReply = Result<(Vec<(String, Stored)>, u64), StoreError>;

/// Messages of a shard (local only).
#[derive(RactorMessage)]
pub enum ShardMsg {
    Get(String, RpcReplyPort<Result<Option<Stored>, StoreError>>),
    /// Everything under a prefix, and the revision of the list.
    List(String, RpcReplyPort<ListReply>),
    Write(Proposal, RpcReplyPort<Result<WriteOutcome, StoreError>>),
    /// Events under `prefix` after revision `from` (or from now, when `None`).
    Watch {
        prefix: String,
        from: Option<u64>,
        reply: RpcReplyPort<Result<(mpsc::Receiver<StoreEvent>, u64), StoreError>>,
    },
}

/// The Raft timing of every shard group: heartbeats every 80 ms, elections (after a
/// pre-vote) after 250 to 500 ms of silence. A voter keeps honouring the old leader's lease
/// (the longest election timeout) before it votes anew, so a dead leader is replaced within
/// about a second; a
/// snapshot every 10,000 entries (up to 15,000 once staggered per replica), keeping 1,000
/// entries behind it for followers that lag a little. A snapshot is a durable commit of the
/// shard's database; the log entries it lets go of are what the journal holds in memory.
pub fn raft_config() -> Result<Arc<openraft::Config>, StoreError> {
    let config = openraft::Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: 80,
        election_timeout_min: 250,
        election_timeout_max: 500,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1000,
        // Above the staggered snapshot thresholds (up to one and a half times the policy's).
        replication_lag_threshold: 20_000,
        // A replica that stopped hearing from its leader first asks whether the others would
        // vote for it, and raises its term only if a quorum would: one that was away, or cut
        // off from the leader alone, does not depose a leader the rest still follow when it
        // comes back.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| StoreError::Storage(format!("raft configuration: {e}")))
}

/// `config` with its snapshot threshold moved up by a part of itself that differs by group
/// and member, so that the replicas of a master, and of a group, do not all build their
/// snapshots at the same moment under an even load.
fn staggered(config: &Arc<openraft::Config>, group: u32, id: NodeId) -> Arc<openraft::Config> {
    let openraft::SnapshotPolicy::LogsSinceLast(every) = config.snapshot_policy else {
        return config.clone();
    };
    let spread = (every / 2).max(1);
    let offset = (u64::from(group).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id) % spread;
    Arc::new(openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(every + offset),
        ..(**config).clone()
    })
}

/// What a shard starts from.
#[derive(Clone)]
pub struct ShardArgs {
    pub group: u32,
    /// This master's Raft id and address.
    pub id: NodeId,
    pub member: Member,
    pub db: ShardDb,
    pub log: LogStore,
    pub router: Router,
    pub host: RaftHost,
    pub config: Arc<openraft::Config>,
    /// Events retained for watches; older starts get 410 Gone.
    pub history_limit: u64,
    /// Events buffered per watcher before it is cut off as too slow.
    pub watch_queue: usize,
    /// Whether an empty group starts as a cluster of this master alone (the first master);
    /// a joining master waits to be added by the leader instead.
    pub bootstrap: bool,
    pub io: Io,
    /// Seeds the Raft node's randomness; each incarnation draws a new one from it.
    pub seed: u64,
}

/// The shard's state: its replica.
pub struct ShardState {
    replica: Replica,
    host: RaftHost,
    group: u32,
}

/// The shard actor.
#[derive(Clone)]
pub struct Shard;

/// Starts this master's replica of `args.group` (stopping a predecessor left running) and
/// registers it with the host.
pub async fn start_replica(args: &ShardArgs) -> Result<Replica, ActorProcessingErr> {
    if let Some(old) = args.host.remove(args.group) {
        // The previous incarnation died without stopping its node.
        let _ = old.raft().shutdown().await;
        old.machine().hub().close();
    }
    let db = args.db.clone();
    let revision = args.io.run(move || Ok(db.marks()?.revision)).await?;
    let hub = WatchHub::new(revision, args.watch_queue);
    let machine = ShardMachine::new(args.db.clone(), hub, args.history_limit, args.io);
    let network = GroupNetwork {
        router: args.router.clone(),
        group: args.group,
    };
    // Every task the node spawns inherits a seed derived from this one; its calls made from
    // other tasks (writes, reads, votes) spawn nothing.
    let raft = Runtime::scope(
        args.seed,
        openraft::Raft::new(
            args.id,
            staggered(&args.config, args.group, args.id),
            network,
            args.log.clone(),
            machine.clone(),
        ),
    )
    .await?;
    if args.bootstrap && !raft.is_initialized().await? {
        let members = BTreeMap::from([(args.id, args.member.clone())]);
        raft.initialize(members).await?;
    }
    let replica = Replica::new(args.group, raft, machine, args.router.clone());
    args.host.insert(args.group, replica.clone());
    Ok(replica)
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
        let replica = start_replica(&args).await?;
        ractor::pg::join(shard_group(args.group), vec![myself.get_cell()]);
        Ok(ShardState {
            replica,
            host: args.host,
            group: args.group,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardMsg>,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        state.host.remove(state.group);
        let _ = state.replica.raft().shutdown().await;
        state.replica.machine().hub().close();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        let replica = state.replica.clone();
        // Requests run beside the mailbox: Raft batches concurrent writes, and a request
        // waiting for a leader holds up no other.
        match msg {
            ShardMsg::Get(key, reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(replica.get(key, FORWARD_HOPS).await);
                });
            }
            ShardMsg::List(prefix, reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(replica.list(prefix, FORWARD_HOPS).await);
                });
            }
            ShardMsg::Write(op, reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(replica.write(op, FORWARD_HOPS).await);
                });
            }
            ShardMsg::Watch {
                prefix,
                from,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(replica.watch(prefix, from).await);
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(config: &openraft::Config) -> u64 {
        match config.snapshot_policy {
            openraft::SnapshotPolicy::LogsSinceLast(n) => n,
            openraft::SnapshotPolicy::Never => panic!("no snapshots"),
        }
    }

    #[test]
    fn snapshot_thresholds_are_spread_over_groups_and_members() {
        let config = raft_config().expect("config");
        let base = threshold(&config);
        let mut seen = std::collections::BTreeSet::new();
        for group in 0..8 {
            for id in [1, 2, 3, 0x1234_5678_9abc] {
                let staggered = staggered(&config, group, id);
                let n = threshold(&staggered);
                assert!(
                    (base..base + base / 2).contains(&n),
                    "group {group}, member {id}: {n}"
                );
                assert!(n < config.replication_lag_threshold);
                assert!((*staggered).clone().validate().is_ok());
                seen.insert(n);
            }
        }
        assert!(seen.len() >= 24, "only {} distinct thresholds", seen.len());
    }
}
