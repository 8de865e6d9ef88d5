//! One local replica of a shard group: its Raft handle and state machine, and the rules for
//! serving a request: writes and linearizable reads on the leader (forwarded there when this
//! replica is not it), watches from the local applied state.

use std::time::Duration;

use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::net::{ClientOp, ClientReply, MemberChange, RaftRequest, RaftResponse, Router};
use super::{Applied, Member, NodeId, ShardMachine, ShardRaft, ShardRaftHandle};
use crate::error::StoreError;
use crate::machine::{Proposal, StoreEvent, Stored, WriteOutcome};

/// How long a request waits for a leader (an election, a forwarded call) before it fails
/// with `Unavailable`.
const PATIENCE: Duration = Duration::from_secs(4);
/// How long a forwarded request waits for the leader's answer: a leader that died keeps its
/// connection open until the transport's idle timeout, and a live one answers well within it.
const FORWARD: Duration = Duration::from_millis(600);
/// How long a watch from a version waits for this replica to reach it.
const CATCH_UP: Duration = Duration::from_secs(3);

/// A shard replica. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    group: u32,
    raft: ShardRaftHandle,
    machine: ShardMachine,
    router: Router,
}

/// One member of a group, as a replica sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub member: Member,
    pub voter: bool,
    pub leader: bool,
}

/// A group's membership, as a replica sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub group: u32,
    pub term: u64,
    pub members: Vec<MemberView>,
}

/// What one local attempt came to.
enum Attempt {
    Done(ClientReply),
    /// Not the leader: the leader if known.
    Forward(Option<(NodeId, Member)>),
    /// No quorum or leader yet: try again until the patience runs out.
    Retry,
}

fn forward_target<E>(err: &RaftError<ShardRaft, E>) -> Option<Option<(NodeId, Member)>>
where
    E: openraft::TryAsRef<openraft::error::ForwardToLeader<ShardRaft>> + std::fmt::Debug,
{
    let f = err.forward_to_leader()?;
    Some(match (&f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => Some((*id, node.clone())),
        _ => None,
    })
}

impl Replica {
    /// A replica of `group`.
    pub fn new(
        group: u32,
        raft: ShardRaftHandle,
        machine: ShardMachine,
        router: Router,
    ) -> Replica {
        Replica {
            group,
            raft,
            machine,
            router,
        }
    }

    /// The Raft handle.
    pub fn raft(&self) -> &ShardRaftHandle {
        &self.raft
    }

    /// The state machine.
    pub fn machine(&self) -> &ShardMachine {
        &self.machine
    }

    /// Applies `op` through the group's leader.
    pub async fn write(&self, op: Proposal, hops: u8) -> Result<WriteOutcome, StoreError> {
        match self.execute(ClientOp::Write(op), hops).await {
            ClientReply::Write(r) => r,
            _ => Err(StoreError::Storage(
                "a write got a reply of another kind".into(),
            )),
        }
    }

    /// The value at `key`, read linearizably.
    pub async fn get(&self, key: String, hops: u8) -> Result<Option<Stored>, StoreError> {
        match self.execute(ClientOp::Get(key), hops).await {
            ClientReply::Get(r) => r,
            _ => Err(StoreError::Storage(
                "a get got a reply of another kind".into(),
            )),
        }
    }

    /// Everything under `prefix` and the revision of the list, read linearizably.
    pub async fn list(
        &self,
        prefix: String,
        hops: u8,
    ) -> Result<(Vec<(String, Stored)>, u64), StoreError> {
        match self.execute(ClientOp::List(prefix), hops).await {
            ClientReply::List(r) => r,
            _ => Err(StoreError::Storage(
                "a list got a reply of another kind".into(),
            )),
        }
    }

    /// Serves `op` here if this replica leads, else on the leader (at most `hops` forwards).
    pub async fn execute(&self, op: ClientOp, hops: u8) -> ClientReply {
        self.execute_within(op, hops, PATIENCE).await
    }

    /// [`Replica::execute`], giving up after `patience` (at most the usual patience): for a
    /// request whose sender stops waiting then.
    pub async fn execute_within(&self, op: ClientOp, hops: u8, patience: Duration) -> ClientReply {
        let deadline = Instant::now() + patience.min(PATIENCE);
        let mut wait = Duration::from_millis(10);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return ClientReply::unavailable(&op, self.group);
            }
            match self.attempt(&op, remaining).await {
                Attempt::Done(reply) => return reply,
                Attempt::Forward(Some((id, member))) if id != *self.raft.node_id() && hops > 0 => {
                    let forwarded = self
                        .router
                        .forward(
                            (id, &member),
                            self.group,
                            op.clone(),
                            hops - 1,
                            remaining.min(FORWARD),
                        )
                        .await;
                    match forwarded {
                        Ok(reply) if !reply.is_unavailable() => return reply,
                        // A write that reached the leader may have been applied even though
                        // no answer came back: sending it again could apply it twice, or
                        // report a conflict with itself. Its outcome is unknown.
                        Ok(_) | Err(_) if matches!(op, ClientOp::Write(_)) => {
                            return ClientReply::unavailable(&op, self.group);
                        }
                        Ok(_) | Err(_) => {
                            if !self.pause(&mut wait, remaining).await {
                                return ClientReply::unavailable(&op, self.group);
                            }
                        }
                    }
                }
                Attempt::Forward(_) | Attempt::Retry => {
                    if !self.pause(&mut wait, remaining).await {
                        return ClientReply::unavailable(&op, self.group);
                    }
                }
            }
        }
    }

    /// Waits for the group's leadership to change, for at most `wait` (doubling from 10 ms
    /// to 200 ms across retries, and never past the deadline). False when the replica is
    /// stopping, and no leader will come.
    async fn pause(&self, wait: &mut Duration, remaining: Duration) -> bool {
        let span = (*wait).min(remaining);
        *wait = (*wait * 2).min(Duration::from_millis(200));
        let before = self.raft.metrics().borrow_watched().current_leader;
        let waited = self
            .raft
            .wait(Some(span))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != before,
                "a new leader",
            )
            .await;
        !matches!(waited, Err(openraft::metrics::WaitError::ShuttingDown))
    }

    /// Returns once this replica knows of a leader other than `from`, or after `within`.
    async fn leader_moves_from(&self, from: NodeId, within: Duration) {
        let _ = self
            .raft
            .wait(Some(within))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != from),
                "another leader",
            )
            .await;
    }

    /// The group's leader, when this replica knows it is another one.
    fn leader_elsewhere(&self) -> Option<(NodeId, Member)> {
        let watch = self.raft.metrics();
        let metrics = watch.borrow_watched();
        // A stopped replica's last metrics name a leader still: it answers for itself.
        metrics.running_state.as_ref().ok()?;
        let leader = metrics.current_leader.filter(|l| *l != metrics.id)?;
        let member = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, member.clone()))
    }

    async fn attempt(&self, op: &ClientOp, remaining: Duration) -> Attempt {
        // Asking the Raft core would only say what the metrics already tell.
        if let Some(leader) = self.leader_elsewhere() {
            return Attempt::Forward(Some(leader));
        }
        match op {
            ClientOp::Write(write) => {
                let result =
                    tokio::time::timeout(remaining, self.raft.client_write(write.clone())).await;
                match result {
                    Err(_) => {
                        Attempt::Done(ClientReply::Write(Err(StoreError::Unavailable(self.group))))
                    }
                    Ok(Ok(response)) => Attempt::Done(ClientReply::Write(match response.data {
                        Applied::Write(r) => r,
                        Applied::Nothing => {
                            Err(StoreError::Storage("a write applied as nothing".into()))
                        }
                    })),
                    // A discarded entry may or may not have committed through another
                    // leader: its outcome is unknown, so it is neither forwarded nor retried.
                    Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                        Attempt::Done(ClientReply::unavailable(op, self.group))
                    }
                    Ok(Err(err)) => match forward_target(&err) {
                        Some(target) => Attempt::Forward(target),
                        None => Attempt::Done(ClientReply::unavailable(op, self.group)),
                    },
                }
            }
            ClientOp::Get(_) | ClientOp::List(_) => {
                let barrier = tokio::time::timeout(
                    remaining,
                    self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
                )
                .await;
                match barrier {
                    Err(_) => Attempt::Retry,
                    Ok(Ok(_)) => Attempt::Done(self.read_local(op).await),
                    Ok(Err(err)) => match forward_target(&err) {
                        Some(target) => Attempt::Forward(target),
                        None => match err {
                            RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)) => {
                                Attempt::Retry
                            }
                            _ => Attempt::Done(ClientReply::unavailable(op, self.group)),
                        },
                    },
                }
            }
        }
    }

    async fn read_local(&self, op: &ClientOp) -> ClientReply {
        let db = self.machine.db().clone();
        let io = self.machine.io();
        match op.clone() {
            ClientOp::Get(key) => {
                ClientReply::Get(io.run(move || db.get(&key)).await.map_err(storage))
            }
            ClientOp::List(prefix) => {
                ClientReply::List(io.run(move || db.list(&prefix)).await.map_err(storage))
            }
            ClientOp::Write(_) => ClientReply::unavailable(op, self.group),
        }
    }

    /// The group's membership and leader as this replica last saw them, sorted by name.
    pub fn view(&self) -> GroupView {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members: Vec<MemberView> = membership
            .nodes()
            .map(|(id, member)| MemberView {
                member: member.clone(),
                voter: voters.contains(id),
                leader: metrics.current_leader == Some(*id),
            })
            .collect();
        members.sort_by(|a, b| a.member.name.cmp(&b.member.name));
        GroupView {
            group: self.group,
            term: metrics.current_term,
            members,
        }
    }

    /// Whether the group's membership, as this replica sees it, is joint: a change between its
    /// two steps, or one that its leader's loss of the leadership cut short there. A joint
    /// group needs a majority of the old voters and of the new ones.
    pub fn joint(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            > 1
    }

    /// Finishes a joint membership change here, on the leader: the empty change is openraft's
    /// own second step.
    pub async fn finish_joint(
        &self,
    ) -> Result<(), RaftError<ShardRaft, ClientWriteError<ShardRaft>>> {
        self.raft
            .change_membership(
                openraft::ChangeMembers::AddVoterIds(Default::default()),
                false,
            )
            .await
            .map(drop)
    }

    /// Applies a membership change on the group's leader (forwarding there), waiting up to a
    /// minute for a new member to catch up. Adding a member that is already a voter, or
    /// removing one that is not there, changes nothing.
    pub async fn change_members(&self, change: MemberChange, hops: u8) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut wait = Duration::from_millis(10);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!(
                    "shard {}: no leader accepted the change",
                    self.group
                ));
            }
            let result = tokio::time::timeout(remaining, self.change_here(&change)).await;
            let target = match result {
                Err(_) => return Err(format!("shard {}: the change timed out", self.group)),
                Ok(Ok(())) => return Ok(()),
                // The previous change (its joint phase) is still being committed: this one
                // goes next.
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    openraft::error::ChangeMembershipError::InProgress(_),
                )))) => None,
                Ok(Err(err)) => match forward_target(&err) {
                    Some(target) => target,
                    None => return Err(format!("shard {}: {err}", self.group)),
                },
            };
            match target {
                // Forwarded as far as it may go, to a replica that does not lead: the caller,
                // which may still forward or retry, is told at once. (A leader handing its
                // leadership over names the new one before that one knows it leads; the new
                // one then sends the change back, and waiting here for a leader that is
                // already known would hold the first caller for the whole deadline.)
                Some((id, member)) if id != *self.raft.node_id() && hops == 0 => {
                    return Err(format!(
                        "shard {}: {} leads it, and the change was forwarded as far as it may go",
                        self.group, member.name
                    ));
                }
                Some((id, member)) if id != *self.raft.node_id() => {
                    let request = RaftRequest::Members {
                        group: self.group,
                        change: change.clone(),
                        hops: hops - 1,
                    };
                    // A leader whose process is gone leaves its connection open until the
                    // transport's idle timeout; the group elects another sooner, and the
                    // change then goes there. (The forward may not be bounded by time
                    // alone: a change that adds a member waits for it to catch up.)
                    let answered = tokio::select! {
                        sent = self.router.send(&member, &request, remaining) => Some(sent),
                        () = self.leader_moves_from(id, remaining) => None,
                    };
                    if let Some(Ok(RaftResponse::Members(result))) = answered {
                        return result;
                    }
                }
                _ => {}
            }
            if !self.pause(&mut wait, remaining).await {
                return Err(format!("shard {}: the replica is stopping", self.group));
            }
        }
    }

    async fn change_here(
        &self,
        change: &MemberChange,
    ) -> Result<(), RaftError<ShardRaft, ClientWriteError<ShardRaft>>> {
        // A change whose leader lost the leadership between its two steps leaves the group
        // joint, and its joint voters look like members already: the leader finishes that
        // change first; a replica that does not lead is told whom to forward to.
        if self.joint() {
            self.finish_joint().await?;
        }
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let named = |name: &str| -> std::collections::BTreeSet<NodeId> {
            membership
                .nodes()
                .filter(|(_, m)| m.name == name)
                .map(|(id, _)| *id)
                .collect()
        };
        match change {
            MemberChange::Add { id, member } => {
                let stale: std::collections::BTreeSet<NodeId> = named(&member.name)
                    .into_iter()
                    .filter(|old| old != id)
                    .collect();
                if !voters.contains(id) {
                    self.raft.add_learner(*id, member.clone(), true).await?;
                    self.raft
                        .change_membership(
                            openraft::ChangeMembers::AddVoterIds([*id].into()),
                            false,
                        )
                        .await?;
                }
                if !stale.is_empty() {
                    self.raft
                        .change_membership(openraft::ChangeMembers::RemoveVoters(stale), false)
                        .await?;
                }
                Ok(())
            }
            MemberChange::Remove { name } => {
                let gone = named(name);
                if gone.is_empty() {
                    return Ok(());
                }
                self.raft
                    .change_membership(openraft::ChangeMembers::RemoveVoters(gone), false)
                    .await?;
                Ok(())
            }
        }
    }

    /// Watches `prefix` on this replica after revision `from` (or from now), waiting a while
    /// for the replica to reach `from` first.
    pub async fn watch(
        &self,
        prefix: String,
        from: Option<u64>,
    ) -> Result<(mpsc::Receiver<StoreEvent>, u64), StoreError> {
        let hub = self.machine.hub().clone();
        if let Some(from) = from {
            hub.caught_up(from, CATCH_UP).await;
        }
        let db = self.machine.db().clone();
        self.machine
            .io()
            .run(move || hub.subscribe(&db, prefix, from))
            .await
            .map_err(storage)
    }
}

fn storage(err: std::io::Error) -> StoreError {
    match err.get_ref().and_then(|e| e.downcast_ref::<StoreError>()) {
        Some(store) => store.clone(),
        None => StoreError::Storage(err.to_string()),
    }
}
