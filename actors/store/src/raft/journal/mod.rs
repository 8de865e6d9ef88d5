//! One Raft journal per master, shared by all of its shard groups.
//!
//! Every group's log lives in memory (the entries not yet purged behind a snapshot, the vote,
//! the committed and purged ids) and every change to it is appended, as one framed record, to
//! the journal's current segment file. A single writer thread takes whatever records are
//! queued and makes them durable at once: one direct, synchronous `write` where the file
//! system takes it, a `write` and an `fdatasync` otherwise. The groups share their flushes
//! (group commit), where a log per group would cost one flush per group and per batch.
//!
//! - A record is `[length: u32][crc32: u32][bincode payload]`, little-endian. Segments are
//!   zeroed in advance, so a zero length marks the end of what was written.
//! - Appends, votes and truncations are acknowledged only once flushed. The committed and
//!   purged ids are not written on their own: their records wait in memory and go out in front
//!   of the next flushed one (or when the journal closes). A leader learns a new committed id
//!   after every flush, so writing it in a pass of its own would cost the writer a `write` per
//!   flush; a lost one is re-learnt (from the leader, or by purging again).
//! - The memory image is changed and the record queued under one lock, so the file's record
//!   order is the order of the changes. Every record sets or removes values by key, so
//!   replaying records on top of a state that already holds them gives that state again.
//! - When a segment has grown past [`SEGMENT_BYTES`], the writer starts the next one with a
//!   checkpoint of every group's memory image, flushes it, and deletes the older segments.
//! - On opening, the segments are replayed in order. A record that is cut short or fails its
//!   checksum can only be the tail of the last, unacknowledged write, and is dropped (the rest
//!   of the segment is zeroed); anywhere else it is corruption and the journal refuses to open.

mod file;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::IOFlushed;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{Entry, LogId, ShardRaft, Vote};
use crate::error::StoreError;
use file::{RecordRef, Segment, frame, io_error, list_segments, lock_dir, replay};
use writer::Writer;

/// A segment is zeroed to this size in advance; past it, the writer moves on to the next.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// One group's log as the journal holds it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupLog {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub entries: BTreeMap<u64, Entry>,
}

impl GroupLog {
    /// Makes one change. Each sets or removes values by key, so a change applied again to a
    /// log that already has it (and any later ones) changes nothing.
    fn apply(&mut self, change: Change) {
        match change {
            Change::Append(entries) => {
                for entry in entries {
                    self.entries.insert(entry.log_id.index, entry);
                }
            }
            Change::Truncate(after) => {
                let from = after.map_or(0, |id| id.index + 1);
                drop(self.entries.split_off(&from));
            }
            Change::Purge(upto) => {
                if self.purged.is_none_or(|p| p.index < upto.index) {
                    self.purged = Some(upto);
                }
                self.entries = self.entries.split_off(&(upto.index + 1));
            }
            Change::Vote(vote) => self.vote = Some(vote),
            Change::Committed(committed) => self.committed = committed,
        }
    }

    /// The id of the last entry, or the last purged one when there is none.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.purged)
    }
}

/// A change to one group's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Change {
    Append(Vec<Entry>),
    /// Removes the entries after this id (all of them when `None`).
    Truncate(Option<LogId>),
    /// Removes the entries up to this id, which becomes the last purged one.
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
}

impl Change {
    /// Whether the change is acknowledged only once flushed.
    fn durable(&self) -> bool {
        matches!(
            self,
            Change::Append(_) | Change::Truncate(_) | Change::Vote(_)
        )
    }
}

/// What a queued record waits for.
enum Done {
    /// Nothing: it is not acknowledged.
    Nothing,
    /// openraft's callback for an append.
    Flushed(IOFlushed<ShardRaft>),
    /// A task awaiting a vote or a truncation.
    Wake(oneshot::Sender<Result<(), String>>),
}

impl Done {
    fn complete(self, result: Result<(), String>) {
        match self {
            Done::Nothing => {}
            Done::Flushed(callback) => callback.io_completed(result.map_err(std::io::Error::other)),
            Done::Wake(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

struct Job {
    frame: Vec<u8>,
    durable: bool,
    done: Done,
}

/// Where changes go after memory.
enum Sink {
    /// Nowhere: a journal in memory, for simulations and tests.
    Memory,
    Disk(Sender<Job>),
}

pub(super) struct Shared {
    /// Every group's log. A change is made and its record queued under this lock, so the
    /// queue's order is the order of the changes.
    pub(super) groups: Mutex<BTreeMap<u32, GroupLog>>,
    /// The records of changes not flushed on their own (committed and purged ids), in order,
    /// waiting for the next record that is. Taken only while `groups` is held.
    waiting: Mutex<Vec<u8>>,
    sink: Sink,
}

/// A master's journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    /// A journal in memory: nothing reaches a disk, and every change is acknowledged at once
    /// on the calling task (which keeps a deterministic simulation deterministic).
    pub fn in_memory() -> Journal {
        Journal::with(BTreeMap::new(), Sink::Memory)
    }

    fn with(groups: BTreeMap<u32, GroupLog>, sink: Sink) -> Journal {
        Journal {
            shared: Arc::new(Shared {
                groups: Mutex::new(groups),
                waiting: Mutex::new(Vec::new()),
                sink,
            }),
        }
    }

    /// Opens (or creates) the journal in `dir`, replaying what it holds, and starts its
    /// writer thread. One process at a time may hold a journal open.
    pub fn open(dir: &Path) -> Result<Journal, StoreError> {
        Journal::open_sized(dir, SEGMENT_BYTES)
    }

    /// [`Journal::open`] with segments of `size` bytes.
    fn open_sized(dir: &Path, size: u64) -> Result<Journal, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let lock = lock_dir(dir)?;
        let mut older = list_segments(dir)?;
        let mut groups = BTreeMap::new();
        let count = older.len();
        let mut end = 0;
        for (i, (_, path)) in older.iter().enumerate() {
            end = replay(path, &mut groups, i + 1 == count)?;
        }
        let segment = match older.pop() {
            Some((seq, _)) => Segment::resume(dir, seq, end, size)?,
            None => Segment::create(dir, 1, size)?,
        };
        let (tx, rx) = channel();
        let journal = Journal::with(groups, Sink::Disk(tx));
        Writer::start(
            dir,
            segment,
            size,
            older.into_iter().map(|(_, path)| path).collect(),
            Arc::downgrade(&journal.shared),
            lock,
            rx,
        )?;
        Ok(journal)
    }

    /// Group `group`'s log (empty if the journal has none).
    pub fn log(&self, group: u32) -> super::LogStore {
        super::LogStore::new(self.clone(), group)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, GroupLog>> {
        self.shared.lock()
    }

    /// Reads group `group`'s log.
    pub(crate) fn read<T>(&self, group: u32, f: impl FnOnce(&GroupLog) -> T) -> T {
        let groups = self.lock();
        match groups.get(&group) {
            Some(log) => f(log),
            None => f(&GroupLog::default()),
        }
    }

    /// Makes `change` to group `group`'s log in memory and queues its record; `done` is told
    /// once the record is durable. A change that is not flushed (and tells no one) waits in
    /// memory for the next one that is.
    fn submit(&self, group: u32, change: Change, done: Done) -> Result<(), StoreError> {
        let durable = change.durable();
        let Sink::Disk(queue) = &self.shared.sink else {
            self.lock().entry(group).or_default().apply(change);
            done.complete(Ok(()));
            return Ok(());
        };
        let record = frame(&RecordRef::Change {
            group,
            change: &change,
        })?;
        let mut groups = self.lock();
        groups.entry(group).or_default().apply(change);
        let mut waiting = self.shared.waiting();
        if !durable && matches!(done, Done::Nothing) {
            waiting.extend_from_slice(&record);
            return Ok(());
        }
        let frame = if waiting.is_empty() {
            record
        } else {
            let mut bytes = std::mem::take(&mut *waiting);
            bytes.extend_from_slice(&record);
            bytes
        };
        drop(waiting);
        let job = Job {
            frame,
            durable,
            done,
        };
        if let Err(lost) = queue.send(job) {
            drop(groups);
            lost.0
                .done
                .complete(Err("the journal writer has stopped".into()));
            return Err(StoreError::Storage("the journal writer has stopped".into()));
        }
        Ok(())
    }

    /// Makes a change and returns once it is durable.
    pub(crate) async fn change(&self, group: u32, change: Change) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(group, change, Done::Wake(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(StoreError::Storage(why)),
            Err(_) => Err(StoreError::Storage("the journal writer has stopped".into())),
        }
    }

    /// Makes a change without waiting for it to reach the disk: its record goes out with the
    /// next flushed one.
    pub(crate) fn change_lazily(&self, group: u32, change: Change) -> Result<(), StoreError> {
        self.submit(group, change, Done::Nothing)
    }

    /// Appends entries; `callback` is told once they are durable.
    pub(crate) fn append(
        &self,
        group: u32,
        entries: Vec<Entry>,
        callback: IOFlushed<ShardRaft>,
    ) -> Result<(), StoreError> {
        self.submit(group, Change::Append(entries), Done::Flushed(callback))
    }
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, Vec<u8>> {
        // Bytes are only appended or taken whole under this lock: a panic leaves them whole.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, GroupLog>> {
        // A panic while the lock was held left no half-made change (each is made whole before
        // its record is queued), so the logs are usable.
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Shared {
    /// Hands the records still waiting for a flush to the writer, which writes them before it
    /// stops (the channel closes behind them).
    fn drop(&mut self) {
        let waiting = std::mem::take(&mut *self.waiting());
        if let Sink::Disk(queue) = &self.sink
            && !waiting.is_empty()
        {
            let _ = queue.send(Job {
                frame: waiting,
                durable: false,
                done: Done::Nothing,
            });
        }
    }
}
