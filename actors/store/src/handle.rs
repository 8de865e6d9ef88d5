//! [`Store`]: the store's interface (DESIGN §4) over the shard actors. Callers never see shards:
//! a key goes to its shard, a list or a watch spans all of them under a composite version.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use ractor::{ActorRef, rpc::CallResult};
use shoal_core::{CompositeVersion, shard_for};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::StoreError;
use crate::machine::{Fence, Proposal, StoreEvent, Stored, WriteOp, WriteOutcome};
use crate::shard::{ShardMsg, shard_group};

/// A handle to the store. Cheap to clone; finds the shard actors by process group on every
/// call, so it keeps working across shard restarts.
#[derive(Clone, Debug)]
pub struct Store {
    shards: u32,
    call_timeout: Duration,
    /// How long a call waits for a restarting shard to come back.
    restart_wait: Duration,
}

impl Store {
    /// A handle for a store of `shards` shards.
    pub fn new(shards: u32) -> Store {
        Store {
            shards: shards.max(1),
            call_timeout: Duration::from_secs(10),
            restart_wait: Duration::from_secs(2),
        }
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    fn shard_ref(&self, shard: u32) -> Option<ActorRef<ShardMsg>> {
        ractor::pg::get_local_members(&shard_group(shard))
            .into_iter()
            .next()
            .map(ActorRef::from)
    }

    /// Sends one request to a shard, waiting out a restart for up to `restart_wait`.
    async fn call<T: Send + 'static>(
        &self,
        shard: u32,
        make: impl Fn(ractor::RpcReplyPort<Result<T, StoreError>>) -> ShardMsg,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.restart_wait;
        loop {
            if let Some(actor) = self.shard_ref(shard) {
                match actor.call(&make, Some(self.call_timeout)).await {
                    Ok(CallResult::Success(result)) => return result,
                    Ok(CallResult::Timeout) => return Err(StoreError::Unavailable(shard)),
                    // The shard stopped while we asked: wait for its restart.
                    Ok(CallResult::SenderError) | Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(shard));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The value at `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let key = key.to_owned();
        self.call(shard_for(&key, self.shards), |r| {
            ShardMsg::Get(key.clone(), r)
        })
        .await
    }

    /// Every value under `prefix`, sorted by key, and the composite version of the list.
    pub async fn list(
        &self,
        prefix: &str,
    ) -> Result<(Vec<(String, Stored)>, CompositeVersion), StoreError> {
        let calls = (0..self.shards).map(|n| {
            let prefix = prefix.to_owned();
            async move { self.call(n, |r| ShardMsg::List(prefix.clone(), r)).await }
        });
        let results = futures::future::join_all(calls).await;
        let mut items = Vec::new();
        let mut revisions = Vec::with_capacity(results.len());
        for result in results {
            let (mut part, rev) = result?;
            items.append(&mut part);
            revisions.push(rev);
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((items, CompositeVersion { revisions }))
    }

    /// Applies one unfenced write to the key's shard.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.write_fenced(op, None).await
    }

    /// Applies one write to the key's shard, refused if `fence` is a superseded term.
    pub async fn write_fenced(
        &self,
        op: WriteOp,
        fence: Option<Fence>,
    ) -> Result<WriteOutcome, StoreError> {
        let shard = shard_for(op.key(), self.shards);
        let proposal = Proposal::Write { op, fence };
        self.call(shard, |r| ShardMsg::Write(proposal.clone(), r))
            .await
    }

    /// Begins a leadership term on every shard: once this returns, every write fenced by an
    /// older term of the same name is refused, wherever its key lives. Fails with
    /// [`StoreError::Fenced`] when a newer term has already begun.
    pub async fn raise_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        let calls = (0..self.shards).map(|n| {
            let proposal = Proposal::RaiseFence(fence.clone());
            async move { self.call(n, |r| ShardMsg::Write(proposal.clone(), r)).await }
        });
        for result in futures::future::join_all(calls).await {
            result?;
        }
        Ok(())
    }

    /// Watches every change under `prefix` after `from` (each shard from its own revision), or
    /// from now when `from` is `None`.
    pub async fn watch(
        &self,
        prefix: &str,
        from: Option<&CompositeVersion>,
    ) -> Result<StoreWatch, StoreError> {
        let mut receivers = Vec::with_capacity(self.shards as usize);
        let mut revisions = Vec::with_capacity(self.shards as usize);
        for n in 0..self.shards {
            let start = from.and_then(|c| c.revisions.get(n as usize).copied());
            let prefix = prefix.to_owned();
            let (rx, at) = self
                .call(n, |reply| ShardMsg::Watch {
                    prefix: prefix.clone(),
                    from: start,
                    reply,
                })
                .await?;
            receivers.push(rx);
            revisions.push(at);
        }
        Ok(StoreWatch {
            receivers,
            position: CompositeVersion { revisions },
            next: 0,
            ended: HashMap::new(),
        })
    }
}

/// A merged watch over every shard. It yields events in commit order per shard and ends as
/// soon as any shard's stream ends (that shard restarted or cut the watcher off): the caller
/// then resumes from [`StoreWatch::position`].
pub struct StoreWatch {
    receivers: Vec<mpsc::Receiver<StoreEvent>>,
    position: CompositeVersion,
    next: usize,
    ended: HashMap<usize, ()>,
}

impl StoreWatch {
    /// The version up to which events have been yielded: resuming from it misses nothing and
    /// repeats nothing.
    pub fn position(&self) -> &CompositeVersion {
        &self.position
    }
}

impl Stream for StoreWatch {
    type Item = StoreEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StoreEvent>> {
        if !self.ended.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.receivers.len();
        for i in 0..n {
            let idx = (self.next + i) % n;
            match self.receivers[idx].poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    self.next = (idx + 1) % n;
                    if let Some(slot) = self.position.revisions.get_mut(event.shard as usize) {
                        *slot = (*slot).max(event.rev);
                    }
                    return Poll::Ready(Some(event));
                }
                Poll::Ready(None) => {
                    self.ended.insert(idx, ());
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}
