//! Shard logs in the layout before the journal: one redb file per group (`shard-N.raft.redb`),
//! with the entries by index and the vote, committed and purged ids by name. A master opened
//! on such a data directory moves each log into its journal once, then deletes the file.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::journal::{Change, Journal};
use super::{Entry, LogId, Vote, decode};
use crate::error::StoreError;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// Moves group `group`'s log from its own file at `path` into `journal`, if the file exists
/// and the journal holds nothing for the group yet; the file is deleted once the journal has
/// flushed the log. Tells whether a log was moved.
pub async fn import(path: &Path, journal: &Journal, group: u32) -> Result<bool, StoreError> {
    if !path.exists() {
        return Ok(false);
    }
    let empty = journal.read(group, |log| {
        log.vote.is_none() && log.purged.is_none() && log.entries.is_empty()
    });
    if empty {
        let (vote, committed, purged, entries) = read(path)?;
        if let Some(purged) = purged {
            journal.change_lazily(group, Change::Purge(purged))?;
        }
        journal.change_lazily(group, Change::Committed(committed))?;
        if !entries.is_empty() {
            journal.change(group, Change::Append(entries)).await?;
        }
        if let Some(vote) = vote {
            journal.change(group, Change::Vote(vote)).await?;
        }
        tracing::info!(group, file = %path.display(), "moved the shard's Raft log into the journal");
    }
    // Either just moved, or moved before a crash that kept the file.
    std::fs::remove_file(path)
        .map_err(|e| StoreError::Storage(format!("{}: {e}", path.display())))?;
    Ok(empty)
}

type Legacy = (Option<Vote>, Option<LogId>, Option<LogId>, Vec<Entry>);

fn read(path: &Path) -> Result<Legacy, StoreError> {
    let db = Database::open(path)?;
    let txn = db.begin_read()?;
    let state = txn.open_table(STATE)?;
    let vote = match state.get("vote")? {
        Some(bytes) => Some(decode::<Vote>("the vote", bytes.value())?),
        None => None,
    };
    let committed = match state.get("committed")? {
        Some(bytes) => decode::<Option<LogId>>("the committed id", bytes.value())?,
        None => None,
    };
    let purged = match state.get("purged")? {
        Some(bytes) => Some(decode::<LogId>("the purged id", bytes.value())?),
        None => None,
    };
    let mut entries = Vec::new();
    for item in txn.open_table(LOG)?.iter()? {
        let (index, bytes) = item?;
        entries.push(decode::<Entry>(
            &format!("log entry {}", index.value()),
            bytes.value(),
        )?);
    }
    Ok((vote, committed, purged, entries))
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::raft::{ShardRaft, encode};

    #[tokio::test]
    async fn a_log_in_its_own_file_moves_into_the_journal() {
        let dir = std::env::temp_dir().join(format!("shoal-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("shard-2.raft.redb");
        let id = |i| openraft::testing::log_id::<ShardRaft>(3, 1, i);
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                let mut log = txn.open_table(LOG).expect("log");
                for i in 5..=7 {
                    let bytes = encode(&Entry::new_blank(id(i))).expect("encode");
                    log.insert(i, bytes.as_slice()).expect("insert");
                }
                let mut state = txn.open_table(STATE).expect("state");
                let vote = encode(&Vote::new(3, 1)).expect("encode");
                state.insert("vote", vote.as_slice()).expect("vote");
                let purged = encode(&id(4)).expect("encode");
                state.insert("purged", purged.as_slice()).expect("purged");
            }
            txn.commit().expect("commit");
        }
        let journal = Journal::open(&dir.join("journal")).expect("journal");
        assert!(import(&path, &journal, 2).await.expect("import"));
        assert!(!path.exists(), "the old file is gone");
        journal.read(2, |log| {
            assert_eq!(log.vote, Some(Vote::new(3, 1)));
            assert_eq!(log.purged, Some(id(4)));
            assert_eq!(log.last_log_id(), Some(id(7)));
            assert_eq!(log.entries.len(), 3);
        });
        assert!(!import(&path, &journal, 2).await.expect("nothing to import"));
        drop(journal);
        let _ = std::fs::remove_dir_all(dir);
    }
}
