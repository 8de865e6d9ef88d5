//! The Raft log of one shard in its own redb file: entries by index, and the vote, the last
//! committed and the last purged log ids. Appends and votes are durable before openraft is
//! told; the committed id is saved without a flush of its own (it rides on the next append's),
//! since a lost one is only re-learnt from the leader.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Entry, Io, LogId, ShardRaft, Vote, decode, encode};
use crate::error::StoreError;

/// index → the encoded entry.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// `vote`, `committed`, `purged` → encoded values.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// A shard's Raft log. Cheap to clone; a clone is also its reader.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    io: Io,
}

impl LogStore {
    /// Opens (or creates) the log file at `path`.
    pub fn open(path: &Path) -> Result<LogStore, StoreError> {
        LogStore::with_db(Database::create(path)?, Io::Blocking)
    }

    /// A log in memory, for simulations and tests: nothing reaches the disk.
    pub fn in_memory() -> Result<LogStore, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        LogStore::with_db(db, Io::Inline)
    }

    fn with_db(db: Database, io: Io) -> Result<LogStore, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(STATE)?;
        txn.commit()?;
        Ok(LogStore {
            db: Arc::new(db),
            io,
        })
    }

    fn read_state<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(STATE)?;
        let found = table.get(key)?;
        found.map(|g| decode(key, g.value())).transpose()
    }

    fn write_state<T: serde::Serialize>(
        db: &Database,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StoreError> {
        let bytes = encode(value)?;
        let mut txn = db.begin_write()?;
        if !durable {
            txn.set_durability(redb::Durability::None)?;
        }
        txn.open_table(STATE)?.insert(key, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    async fn state<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, std::io::Error> {
        let db = self.db.clone();
        self.io.run(move || LogStore::read_state(&db, key)).await
    }

    async fn set_state<T: serde::Serialize + Send + 'static>(
        &self,
        key: &'static str,
        value: T,
        durable: bool,
    ) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        self.io
            .run(move || LogStore::write_state(&db, key, &value, durable))
            .await
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<ShardRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        let db = self.db.clone();
        let range = bounds(&range);
        self.io
            .run(move || {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOG)?;
                let mut out = Vec::new();
                for item in table.range::<u64>(range)? {
                    let (index, bytes) = item?;
                    out.push(decode::<Entry>(
                        &format!("log entry {}", index.value()),
                        bytes.value(),
                    )?);
                }
                Ok(out)
            })
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        self.state("vote").await
    }
}

impl RaftLogStorage<ShardRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<ShardRaft>, std::io::Error> {
        let db = self.db.clone();
        self.io
            .run(move || {
                let purged: Option<LogId> = LogStore::read_state(&db, "purged")?;
                let txn = db.begin_read()?;
                let table = txn.open_table(LOG)?;
                let last = match table.last()? {
                    Some((index, bytes)) => Some(
                        decode::<Entry>(&format!("log entry {}", index.value()), bytes.value())?
                            .log_id,
                    ),
                    None => purged,
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id: last,
                })
            })
            .await
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        self.set_state("vote", *vote, true).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        self.set_state("committed", committed, false).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(self.state::<Option<LogId>>("committed").await?.flatten())
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
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((
                entry.log_id.index,
                encode(&entry).map_err(std::io::Error::other)?,
            ));
        }
        let db = self.db.clone();
        let result = self
            .io
            .run(move || {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(LOG)?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice())?;
                    }
                }
                txn.commit()?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                callback.io_completed(Err(std::io::Error::other(err.to_string())));
                Err(err)
            }
        }
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        self.io
            .run(move || {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(LOG)?;
                    match last {
                        Some(id) => table.retain_in((id.index + 1).., |_, _| false)?,
                        None => table.retain(|_, _| false)?,
                    }
                }
                txn.commit()?;
                Ok(())
            })
            .await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        self.io
            .run(move || {
                let bytes = encode(&upto)?;
                let txn = db.begin_write()?;
                {
                    txn.open_table(STATE)?.insert("purged", bytes.as_slice())?;
                    txn.open_table(LOG)?
                        .retain_in(..=upto.index, |_, _| false)?;
                }
                txn.commit()?;
                Ok(())
            })
            .await
    }
}
