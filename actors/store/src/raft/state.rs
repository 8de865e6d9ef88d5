//! The state machine of one shard replica: the shard database, the Raft bookkeeping kept in
//! the same transactions, snapshots, and the watch hub fed by every applied batch.

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::{
    Applied, Io, LogId, ShardRaft, Snapshot, SnapshotMeta, StoredMembership, decode, encode,
};
use crate::error::StoreError;
use crate::machine::Proposal;
use crate::persist::{Image, ShardDb};
use crate::watch::WatchHub;

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";

/// Applied batches are kept in memory over the shard database (the Raft log is durable
/// already, and replays whatever a crash loses); one in this many entries, or once this long
/// after the last, commits them all to the database, which bounds the replay after a crash
/// and the memory the batches hold. Building a snapshot commits them too. Each commit's
/// writes queue in front of the journal's flushes on the same disk, so commits are few
/// and large: one a second per shard raised the p99 of 16 clients' writes by a fifth.
const FLUSH_EVERY_ENTRIES: u64 = 10_000;
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// One lane for the background disk work of a process (commits of pending batches, snapshot
/// builds): run all at once, the shards' commits and snapshots starve the tasks that serve
/// requests of CPU (a run at 256 clients saw writes wait 0.3-0.7 s while 24 snapshots were
/// built together); one at a time, they take turns beside them.
static BACKGROUND: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn background_lane() -> std::sync::MutexGuard<'static, ()> {
    // The guarded value is empty: a panic elsewhere leaves nothing inconsistent behind.
    BACKGROUND
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// When the state machine's database was last flushed, and how many entries since.
#[derive(Clone, Debug)]
struct Flushes {
    at: std::time::Instant,
    entries: u64,
}

impl Flushes {
    /// A count and clock started part of the way into their first period, a different part
    /// for each of eight shards, so that the shards of a master do not all commit at once.
    fn staggered(shard: u32) -> Flushes {
        let part = u64::from(shard % 8);
        let now = std::time::Instant::now();
        Flushes {
            at: now
                .checked_sub(FLUSH_EVERY * part as u32 / 8)
                .unwrap_or(now),
            entries: FLUSH_EVERY_ENTRIES * part / 8,
        }
    }

    /// Counts `entries` and tells whether this batch is to be flushed.
    fn due(&mut self, entries: u64) -> bool {
        self.entries += entries;
        if self.entries >= FLUSH_EVERY_ENTRIES || self.at.elapsed() >= FLUSH_EVERY {
            self.entries = 0;
            self.at = std::time::Instant::now();
            true
        } else {
            false
        }
    }
}

/// A shard replica's state machine. Cheap to clone (the database and hub are shared).
#[derive(Clone)]
pub struct ShardMachine {
    db: ShardDb,
    hub: WatchHub,
    history_limit: u64,
    io: Io,
    /// Only the instance openraft applies through counts; clones start afresh.
    flushes: Flushes,
}

impl ShardMachine {
    /// A state machine over `db`, publishing to `hub`, keeping `history_limit` events.
    pub fn new(db: ShardDb, hub: WatchHub, history_limit: u64, io: Io) -> ShardMachine {
        let db_shard = db.shard();
        ShardMachine {
            db,
            hub,
            history_limit: history_limit.max(1),
            io,
            flushes: Flushes::staggered(db_shard),
        }
    }

    /// The shard database (for reads after a linearizable barrier).
    pub fn db(&self) -> &ShardDb {
        &self.db
    }

    /// How this machine runs its disk work.
    pub fn io(&self) -> Io {
        self.io
    }

    /// The watch hub.
    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    /// Commits the pending batches to the database without holding up the batches after
    /// them: on the blocking pool in a process, at once in a simulation. A failed commit is
    /// retried by the next; meanwhile the Raft log holds what it would have saved.
    fn commit_in_background(&self) {
        let db = self.db.clone();
        let commit = move || {
            let _lane = background_lane();
            if let Err(err) = db.commit_pending() {
                tracing::error!(shard = db.shard(), reason = %err, "committing applied writes failed");
            }
        };
        match self.io {
            Io::Inline => commit(),
            Io::Blocking => drop(tokio::task::spawn_blocking(commit)),
        }
    }

    fn read_applied(db: &ShardDb) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let applied = match db.raft_get(APPLIED)? {
            Some(bytes) => decode::<Option<LogId>>(APPLIED, &bytes)?,
            None => None,
        };
        let membership = match db.raft_get(MEMBERSHIP)? {
            Some(bytes) => decode::<StoredMembership>(MEMBERSHIP, &bytes)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }
}

/// The snapshot metadata that the Raft values `[APPLIED, MEMBERSHIP]` describe.
fn snapshot_meta(raft: &[Option<Vec<u8>>]) -> Result<SnapshotMeta, StoreError> {
    let applied = match raft.first().and_then(Option::as_ref) {
        Some(bytes) => decode::<Option<LogId>>(APPLIED, bytes)?,
        None => None,
    };
    let membership = match raft.get(1).and_then(Option::as_ref) {
        Some(bytes) => decode::<StoredMembership>(MEMBERSHIP, bytes)?,
        None => StoredMembership::default(),
    };
    Ok(SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
    })
}

/// Builds snapshots. A shard's snapshot is its committed database: building one commits
/// what is pending, durably, and answers the log id that commit reached, after which Raft
/// may purge the log up to it. No copy of the state is written; the state is read out when a
/// snapshot is sent ([`ShardMachine::get_current_snapshot`]), so that the cost of a snapshot
/// no longer grows with the size of the shard (a copy of every object per ten thousand
/// writes, written beside the journal, held up its flushes). The snapshot a build returns
/// therefore carries its metadata and no data: openraft keeps only the metadata of a build.
pub struct SnapshotBuilder {
    db: ShardDb,
    io: Io,
}

impl RaftSnapshotBuilder<ShardRaft> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        let db = self.db.clone();
        self.io
            .run(move || {
                let _lane = background_lane();
                let meta = snapshot_meta(&db.commit_for_snapshot(&[APPLIED, MEMBERSHIP])?)?;
                Ok(Snapshot {
                    meta,
                    snapshot: Vec::new(),
                })
            })
            .await
    }
}

impl RaftStateMachine<ShardRaft> for ShardMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        let db = self.db.clone();
        self.io.run(move || ShardMachine::read_applied(&db)).await
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), std::io::Error>
    where
        Strm:
            Stream<Item = Result<EntryResponder<ShardRaft>, std::io::Error>> + Unpin + OptionalSend,
    {
        let mut ops: Vec<Proposal> = Vec::new();
        // Per entry: whether it carried a write, and its responder.
        let mut slots = Vec::new();
        let mut last: Option<LogId> = None;
        let mut membership: Option<StoredMembership> = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            match entry.payload {
                EntryPayload::Normal(op) => {
                    slots.push((true, responder));
                    ops.push(op);
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    slots.push((false, responder));
                }
                EntryPayload::Blank => slots.push((false, responder)),
            }
            last = Some(entry.log_id);
        }
        if last.is_none() {
            return Ok(());
        }
        let mut raft = vec![(APPLIED, encode(&last).map_err(std::io::Error::other)?)];
        if let Some(m) = &membership {
            raft.push((MEMBERSHIP, encode(m).map_err(std::io::Error::other)?));
        }
        // The batch stays in memory over the database (reads of committed pages aside), so it
        // runs here.
        let results = self
            .db
            .apply_batch(&ops, &raft, self.history_limit, false)
            .map_err(std::io::Error::other)?;
        if self.flushes.due(slots.len() as u64) {
            self.commit_in_background();
        }
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(results.len());
        for result in results {
            outcomes.push(result.map(|(outcome, event)| {
                events.extend(event);
                outcome
            }));
        }
        self.hub.publish(&events);
        let mut outcomes = outcomes.into_iter();
        for (is_write, responder) in slots {
            let reply = if is_write {
                Applied::Write(
                    outcomes
                        .next()
                        .unwrap_or(Err(StoreError::Storage("a write lost its result".into()))),
                )
            } else {
                Applied::Nothing
            };
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            io: self.io,
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        let meta = meta.clone();
        let revision = self
            .io
            .run(move || {
                let image: Image = decode("snapshot", &data)?;
                db.import(
                    &image,
                    &[
                        (APPLIED, encode(&meta.last_log_id)?),
                        (MEMBERSHIP, encode(&meta.last_membership)?),
                    ],
                )?;
                Ok(image.revision)
            })
            .await?;
        self.hub.reset(revision);
        Ok(())
    }

    /// The state as of the last commit, once a snapshot has been built or installed: a
    /// snapshot at least as new as that one (the committed state never runs behind it), whose
    /// log entries Raft may already have purged.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, std::io::Error> {
        let db = self.db.clone();
        self.io
            .run(move || {
                if !db.snapshotted()? {
                    return Ok(None);
                }
                let _lane = background_lane();
                let (image, raft) = db.export(&[APPLIED, MEMBERSHIP])?;
                Ok(Some(Snapshot {
                    meta: snapshot_meta(&raft)?,
                    snapshot: encode(&image)?,
                }))
            })
            .await
    }
}
