//! Raft traffic between masters, independent of how bytes travel: the request and response
//! types, the [`Wire`] a transport provides (QUIC streams in a process, an in-memory switch in
//! a simulation), the [`Router`] that openraft-multi's adapter drives for every shard group
//! over one wire, and the [`RaftHost`] that answers requests for the local replicas.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory};
use openraft_multi::GroupRouter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::replica::Replica;
use super::traffic::{Counters, Traffic};
use super::{Member, NodeId, ShardRaft, Snapshot, SnapshotMeta, Vote, decode, encode};
use super::{feed, lane};
use crate::error::StoreError;
use crate::machine::{Proposal, Stored, WriteOutcome};

/// A future a wire returns.
pub type WireFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// How Raft bytes reach another master: one request, one response, each on a stream of its
/// own so that no group or snapshot waits behind another.
pub trait Wire: Send + Sync + 'static {
    /// Sends `request` to `to` and returns its response, or why there is none.
    fn call(&self, to: &Member, request: Vec<u8>, timeout: Duration) -> WireFuture;
}

/// A request a replica makes on the shard's behalf to a leader: writes and linearizable
/// reads go to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientOp {
    Write(Proposal),
    Get(String),
    List(String),
}

/// What a [`ClientOp`] answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientReply {
    Write(Result<WriteOutcome, StoreError>),
    Get(Result<Option<Stored>, StoreError>),
    List(Result<(Vec<(String, Stored)>, u64), StoreError>),
}

/// A client request on its way to its group's leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forward {
    pub group: u32,
    pub op: ClientOp,
    /// How many more times it may be forwarded.
    pub hops: u8,
    /// How long its sender waits for the answer, in milliseconds. The receiver gives up by
    /// then too: a request its sender no longer waits for is not served (a read) or
    /// proposed (a write) seconds later, when its sender has long reported it unavailable.
    pub patience_ms: u32,
}

impl Forward {
    pub fn new(group: u32, op: ClientOp, hops: u8, patience: Duration) -> Forward {
        Forward {
            group,
            op,
            hops,
            patience_ms: u32::try_from(patience.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// How long the receiver may take over it.
    pub fn patience(&self) -> Duration {
        Duration::from_millis(u64::from(self.patience_ms))
    }
}

/// A change to who replicates the shard groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MemberChange {
    /// Add a master as a voter (first as a learner that catches up); any older member of
    /// the same name (a master that lost its data) is removed.
    Add { id: NodeId, member: Member },
    /// Remove the master of this name.
    Remove { name: String },
}

/// Everything one master asks another about a shard group.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Appends of several groups, from their leader here to one follower (see
    /// [`super::lane`]), in the order they were sent.
    Appends(Vec<(u32, AppendEntriesRequest<ShardRaft>)>),
    Vote(u32, VoteRequest<ShardRaft>),
    PreVote(u32, VoteRequest<ShardRaft>),
    Snapshot {
        group: u32,
        vote: Vote,
        meta: SnapshotMeta,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// One client request, from a caller outside the masters.
    Client(Forward),
    Members {
        group: u32,
        change: MemberChange,
        hops: u8,
    },
    TransferLeader(u32, TransferLeaderRequest<ShardRaft>),
    /// Client requests forwarded to the leaders of their groups (see [`super::lane`]).
    Clients(Vec<Forward>),
}

/// The answers, in the order of [`RaftRequest`]. `Err` is the remote's reason in words (its
/// replica is stopping or missing).
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    /// One answer per append, in the request's order.
    Appends(Vec<Result<AppendEntriesResponse<ShardRaft>, String>>),
    Vote(Result<VoteResponse<ShardRaft>, String>),
    Snapshot(Result<SnapshotResponse<ShardRaft>, String>),
    Client(ClientReply),
    Members(Result<(), String>),
    TransferLeader(Result<TransferLeaderResponse<ShardRaft>, String>),
    /// One reply per client request, in the request's order.
    Clients(Vec<ClientReply>),
}

/// The local replicas, by group, answering requests from other masters.
#[derive(Clone, Default)]
pub struct RaftHost {
    replicas: Arc<RwLock<HashMap<u32, Replica>>>,
    counters: Arc<Counters>,
}

impl RaftHost {
    /// A host with no replicas yet.
    pub fn new() -> RaftHost {
        RaftHost::default()
    }

    /// The replica of `group`, if it runs here.
    pub fn replica(&self, group: u32) -> Option<Replica> {
        let map = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        map.get(&group).cloned()
    }

    /// Registers `replica` for its group, returning the one it replaces.
    pub fn insert(&self, group: u32, replica: Replica) -> Option<Replica> {
        let mut map = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        map.insert(group, replica)
    }

    /// Removes the replica of `group`.
    pub fn remove(&self, group: u32) -> Option<Replica> {
        let mut map = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        map.remove(&group)
    }

    /// Every local replica.
    pub fn all(&self) -> Vec<(u32, Replica)> {
        let map = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.iter().map(|(g, r)| (*g, r.clone())).collect();
        all.sort_by_key(|(g, _)| *g);
        all
    }

    /// What this host has answered since it started.
    pub fn traffic(&self) -> Traffic {
        self.counters.read()
    }

    /// Answers one encoded request; the reply is encoded too.
    pub async fn handle(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let request: RaftRequest = decode("raft request", request).map_err(|e| e.to_string())?;
        self.counters.count(&request);
        let response = self.dispatch(request).await?;
        encode(&response).map_err(|e| e.to_string())
    }

    async fn execute(&self, request: Forward) -> ClientReply {
        let patience = request.patience();
        match self.replica(request.group) {
            Some(replica) => {
                replica
                    .execute_within(request.op, request.hops, patience)
                    .await
            }
            None => ClientReply::unavailable(&request.op, request.group),
        }
    }

    async fn dispatch(&self, request: RaftRequest) -> Result<RaftResponse, String> {
        let missing = |g: u32| format!("shard {g} has no replica here");
        Ok(match request {
            RaftRequest::Appends(appends) => {
                // The groups' replicas take their appends side by side; all of them usually
                // become durable with the same journal flush.
                let answers = appends.into_iter().map(|(group, rpc)| async move {
                    let replica = self.replica(group).ok_or_else(|| missing(group))?;
                    replica
                        .raft()
                        .append_entries(rpc)
                        .await
                        .map_err(|e| e.to_string())
                });
                RaftResponse::Appends(futures::future::join_all(answers).await)
            }
            RaftRequest::Vote(group, rpc) => {
                let replica = self.replica(group).ok_or_else(|| missing(group))?;
                RaftResponse::Vote(replica.raft().vote(rpc).await.map_err(|e| e.to_string()))
            }
            RaftRequest::PreVote(group, rpc) => {
                let replica = self.replica(group).ok_or_else(|| missing(group))?;
                RaftResponse::Vote(
                    replica
                        .raft()
                        .pre_vote(rpc)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            RaftRequest::Snapshot {
                group,
                vote,
                meta,
                data,
            } => {
                let replica = self.replica(group).ok_or_else(|| missing(group))?;
                let snapshot = Snapshot {
                    meta,
                    snapshot: data,
                };
                RaftResponse::Snapshot(
                    replica
                        .raft()
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            RaftRequest::Client(request) => RaftResponse::Client(self.execute(request).await),
            RaftRequest::Clients(requests) => {
                // Proposed side by side, they usually commit together.
                let replies = requests.into_iter().map(|r| self.execute(r));
                RaftResponse::Clients(futures::future::join_all(replies).await)
            }
            RaftRequest::Members {
                group,
                change,
                hops,
            } => {
                let replica = self.replica(group).ok_or_else(|| missing(group))?;
                RaftResponse::Members(replica.change_members(change, hops).await)
            }
            RaftRequest::TransferLeader(group, req) => {
                let replica = self.replica(group).ok_or_else(|| missing(group))?;
                RaftResponse::TransferLeader(
                    replica
                        .raft()
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
        })
    }
}

impl ClientReply {
    /// Whether the reply says only that the shard could not be reached.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientReply::Write(Err(StoreError::Unavailable(_)))
                | ClientReply::Get(Err(StoreError::Unavailable(_)))
                | ClientReply::List(Err(StoreError::Unavailable(_)))
        )
    }

    /// The reply for `op` when the shard can't be reached.
    pub fn unavailable(op: &ClientOp, group: u32) -> ClientReply {
        let err = StoreError::Unavailable(group);
        match op {
            ClientOp::Write(_) => ClientReply::Write(Err(err)),
            ClientOp::Get(_) => ClientReply::Get(Err(err)),
            ClientOp::List(_) => ClientReply::List(Err(err)),
        }
    }
}

/// Where each member is reached; shared by the router and its lanes.
#[derive(Clone, Default)]
pub(super) struct Members(Arc<RwLock<HashMap<NodeId, Member>>>);

impl Members {
    pub(super) fn learn(&self, id: NodeId, member: Member) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(id, member);
    }

    pub(super) fn get(&self, id: NodeId) -> Option<Member> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(&id).cloned()
    }
}

/// Sends one request to `to` over `wire` and decodes its response.
pub(super) async fn call(
    wire: &dyn Wire,
    to: &Member,
    request: &RaftRequest,
    timeout: Duration,
) -> Result<RaftResponse, String> {
    let bytes = encode(request).map_err(|e| e.to_string())?;
    let reply = wire.call(to, bytes, timeout).await?;
    decode("raft response", &reply).map_err(|e| e.to_string())
}

/// Sends the Raft RPCs of every group over one [`Wire`] (openraft-multi's router).
#[derive(Clone)]
pub struct Router {
    wire: Arc<dyn Wire>,
    /// Who each member is, for members the caller has not been told about in a membership.
    members: Members,
    /// The queue of appends to each member, started on first use.
    appends: Lanes<lane::Appends>,
    /// The queue of client requests forwarded to each member, started on first use.
    forwards: Lanes<lane::Forwards>,
}

type Lanes<F> = Arc<Mutex<HashMap<NodeId, mpsc::UnboundedSender<lane::Queued<F>>>>>;

impl Router {
    /// A router over `wire`.
    pub fn new(wire: Arc<dyn Wire>) -> Router {
        Router {
            wire,
            members: Members::default(),
            appends: Arc::default(),
            forwards: Arc::default(),
        }
    }

    /// Queues `item` on the lane to `target` (starting the lane if there is none) and waits
    /// for its answer.
    async fn through_lane<F: lane::Freight>(
        &self,
        lanes: &Lanes<F>,
        target: NodeId,
        item: F::Item,
        timeout: Duration,
    ) -> Result<F::Answer, String> {
        let (reply, answer) = oneshot::channel();
        let queued = lane::Queued {
            item,
            timeout,
            reply,
        };
        {
            let mut lanes = lanes.lock().unwrap_or_else(|p| p.into_inner());
            let start = || lane::start::<F>(self.wire.clone(), self.members.clone(), target);
            let lane = lanes.entry(target).or_insert_with(start);
            if let Err(mpsc::error::SendError(queued)) = lane.send(queued) {
                // The lane's task is gone (its runtime shut down): start a new one.
                *lane = start();
                lane.send(queued)
                    .map_err(|_| "the lane stopped".to_owned())?;
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the lane stopped".to_owned()))
    }

    /// Forwards a client request for `group` to its leader `id` at `member`, in one message
    /// with the others queued for that master.
    pub async fn forward(
        &self,
        (id, member): (NodeId, &Member),
        group: u32,
        op: ClientOp,
        hops: u8,
        timeout: Duration,
    ) -> Result<ClientReply, String> {
        if self.members.get(id).as_ref() != Some(member) {
            self.members.learn(id, member.clone());
        }
        let item = Forward::new(group, op, hops, timeout);
        self.through_lane(&self.forwards, id, item, timeout).await
    }

    /// Remembers where `id` is reached.
    pub fn learn(&self, id: NodeId, member: Member) {
        self.members.learn(id, member);
    }

    /// Sends one request to `to` and decodes its response.
    pub async fn send(
        &self,
        to: &Member,
        request: &RaftRequest,
        timeout: Duration,
    ) -> Result<RaftResponse, String> {
        call(self.wire.as_ref(), to, request, timeout).await
    }

    /// Sends one Raft RPC to `target` and picks its answer out of the response. Every failure
    /// (no address, no answer, a refusal, a mismatched reply) is "unreachable" to openraft,
    /// which then backs off.
    async fn ask<T>(
        &self,
        target: NodeId,
        request: RaftRequest,
        option: &RPCOption,
        pick: impl FnOnce(RaftResponse) -> Option<Result<T, String>>,
    ) -> Result<T, Unreachable<ShardRaft>> {
        let member = self.members.get(target).ok_or_else(|| {
            Unreachable::from_string(format!("member {target} has no known address"))
        })?;
        let response = self
            .send(&member, &request, option.soft_ttl())
            .await
            .map_err(Unreachable::from_string)?;
        pick(response)
            .ok_or_else(|| Unreachable::from_string("a reply of the wrong kind"))?
            .map_err(Unreachable::from_string)
    }
}

impl GroupRouter<ShardRaft, u32> for Router {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &self,
        target: NodeId,
        group: u32,
        rpc: AppendEntriesRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.through_lane(&self.appends, target, (group, rpc), option.soft_ttl())
            .await
            .map_err(|why| RPCError::Unreachable(Unreachable::from_string(why)))
    }

    async fn vote(
        &self,
        target: NodeId,
        group: u32,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.ask(target, RaftRequest::Vote(group, rpc), &option, vote_reply)
            .await
            .map_err(RPCError::Unreachable)
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group: u32,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.ask(
            target,
            RaftRequest::PreVote(group, rpc),
            &option,
            vote_reply,
        )
        .await
        .map_err(RPCError::Unreachable)
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group: u32,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>> {
        let request = RaftRequest::Snapshot {
            group,
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let send = self.ask(target, request, &option, |r| match r {
            RaftResponse::Snapshot(r) => Some(r),
            _ => None,
        });
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result.map_err(StreamingError::Unreachable),
        }
    }

    async fn transfer_leader(
        &self,
        target: NodeId,
        group: u32,
        req: TransferLeaderRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<ShardRaft>, RPCError<ShardRaft>> {
        let request = RaftRequest::TransferLeader(group, req);
        self.ask(target, request, &option, |r| match r {
            RaftResponse::TransferLeader(r) => Some(r),
            _ => None,
        })
        .await
        .map_err(RPCError::Unreachable)
    }

    fn backoff(&self) -> Option<openraft::network::Backoff> {
        Some(openraft::network::Backoff::new(std::iter::repeat(
            Duration::from_millis(100),
        )))
    }
}

fn vote_reply(r: RaftResponse) -> Option<Result<VoteResponse<ShardRaft>, String>> {
    match r {
        RaftResponse::Vote(r) => Some(r),
        _ => None,
    }
}

/// Makes the per-target network clients of one group; openraft asks for one per peer.
#[derive(Clone)]
pub struct GroupNetwork {
    pub router: Router,
    pub group: u32,
}

impl RaftNetworkFactory<ShardRaft> for GroupNetwork {
    type Network = GroupLink;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        self.router.learn(target, node.clone());
        GroupLink {
            router: self.router.clone(),
            target,
            group: self.group,
        }
    }
}

/// One group's network client for one peer, over the shared [`Router`] (openraft-multi's
/// router), with the stream of appends going through [`feed`](super::feed).
pub struct GroupLink {
    router: Router,
    target: NodeId,
    group: u32,
}

impl RaftNetworkV2<ShardRaft> for GroupLink {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.router
            .append_entries(self.target, self.group, rpc, option)
            .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, feed::Answer>, RPCError<ShardRaft>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<ShardRaft>> + OptionalSend + Unpin + 'static,
    {
        let (router, target, group) = (self.router.clone(), self.target, self.group);
        let send = move |rpc| {
            let (router, option) = (router.clone(), option.clone());
            async move { router.append_entries(target, group, rpc, option).await }
        };
        let answers: BoxStream<'s, feed::Answer> = Box::pin(feed::feed(input, send, feed::HOLD));
        Box::pin(std::future::ready(Ok(answers)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.router.vote(self.target, self.group, rpc, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.router
            .pre_vote(self.target, self.group, rpc, option)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>> {
        self.router
            .full_snapshot(self.target, self.group, vote, snapshot, cancel, option)
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.router
            .transfer_leader(self.target, self.group, req, option)
            .await
    }

    fn backoff(&self) -> Option<openraft::network::Backoff> {
        GroupRouter::backoff(&self.router)
    }
}
