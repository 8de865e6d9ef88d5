//! The Raft log of one shard group: its part of the master's [`Journal`]. Reads are served
//! from the journal's memory; appends, votes and truncations are acknowledged once the
//! journal has flushed them, the committed and purged ids without a flush of their own.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::journal::{Change, Journal};
use super::{Entry, LogId, ShardRaft, Vote};

/// A shard's Raft log. Cheap to clone; a clone is also its reader.
#[derive(Clone)]
pub struct LogStore {
    journal: Journal,
    group: u32,
}

impl LogStore {
    pub(crate) fn new(journal: Journal, group: u32) -> LogStore {
        LogStore { journal, group }
    }

    /// A log in a journal of its own in memory, for simulations and tests: nothing reaches
    /// the disk.
    pub fn in_memory() -> LogStore {
        Journal::in_memory().log(0)
    }
}

fn io(err: crate::error::StoreError) -> std::io::Error {
    std::io::Error::other(err)
}

impl RaftLogReader<ShardRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        Ok(self.journal.read(self.group, |log| {
            log.entries.range(range).map(|(_, e)| e.clone()).collect()
        }))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(self.journal.read(self.group, |log| log.vote))
    }
}

impl RaftLogStorage<ShardRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<ShardRaft>, std::io::Error> {
        Ok(self.journal.read(self.group, |log| LogState {
            last_purged_log_id: log.purged,
            last_log_id: log.last_log_id(),
        }))
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        self.journal
            .change(self.group, Change::Vote(*vote))
            .await
            .map_err(io)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        self.journal
            .change_lazily(self.group, Change::Committed(committed))
            .map_err(io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(self.journal.read(self.group, |log| log.committed))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<ShardRaft>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.journal
            .append(self.group, entries.into_iter().collect(), callback)
            .map_err(io)
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), std::io::Error> {
        self.journal
            .change(self.group, Change::Truncate(last))
            .await
            .map_err(io)
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), std::io::Error> {
        self.journal
            .change_lazily(self.group, Change::Purge(upto))
            .map_err(io)
    }
}
