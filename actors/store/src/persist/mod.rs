//! A shard's persistence in redb: objects, the event history that watches replay, and the
//! revision counter.
//!
//! Applied batches are kept in memory ([`Pending`]) on top of the database and committed to it
//! together, in one durable transaction, when a batch asks for it (the Raft state machine does
//! so every ten thousand entries, every ten seconds and for each snapshot; the Raft log,
//! durable already, replays what a crash loses). Every read sees the database and the
//! pending changes as one state.

mod pending;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::machine::{
    EventKind, Plan, Proposal, StoreEvent, Stored, WriteOp, WriteOutcome, check_fence, plan,
};
use pending::{Layers, Pending, Reader};

/// key → revision (8 bytes, big-endian) followed by the value.
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// revision → the event committed at it.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `revision`: the last committed revision; `oldest_kept`: the oldest revision still in EVENTS.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Raft's view of this state: the last applied log id, the last applied membership and the
/// current snapshot, as opaque bytes owned by the Raft layer, changed in the same transaction
/// as the objects they describe.
const RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft");
/// Whether a Raft snapshot has been built or installed: [`SNAPSHOTTED`] is present once one
/// has. The snapshot itself is the committed database, whose Raft values give its metadata,
/// so nothing else is stored. (Older versions kept the snapshot's metadata under the same
/// key, and a copy of its data under `data`, which opening a database drops; before that,
/// both were among the RAFT values.)
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const SNAPSHOTTED: &str = "meta";
/// Where RAFT held the snapshot before it had a table of its own.
const OLD_SNAPSHOT_KEYS: [&str; 2] = ["snapshot_meta", "snapshot_data"];
/// fence name → the newest leadership term the shard has seen for it.
const FENCES: TableDefinition<&str, u64> = TableDefinition::new("fences");

#[derive(Serialize, Deserialize)]
struct EventRecord {
    kind: EventKind,
    key: String,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

fn encode_object(rev: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&rev.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_object(bytes: &[u8]) -> Result<Stored, StoreError> {
    if bytes.len() < 8 {
        return Err(StoreError::Storage(
            "object record shorter than its revision".into(),
        ));
    }
    let (rev, value) = bytes.split_at(8);
    let mut rev_bytes = [0u8; 8];
    rev_bytes.copy_from_slice(rev);
    Ok(Stored {
        rev: u64::from_be_bytes(rev_bytes),
        value: Arc::new(value.to_vec()),
    })
}

fn encode_event(kind: EventKind, key: &str, value: &[u8]) -> Vec<u8> {
    let record = EventRecord {
        kind,
        key: key.to_owned(),
        value: value.to_vec(),
    };
    // A struct of an enum, a string and bytes always encodes.
    bincode::serde::encode_to_vec(&record, bincode::config::standard()).unwrap_or_default()
}

fn decode_event(shard: u32, rev: u64, bytes: &[u8]) -> Result<StoreEvent, StoreError> {
    let (record, _): (EventRecord, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| StoreError::Storage(format!("event {rev} is corrupt: {e}")))?;
    Ok(StoreEvent {
        shard,
        rev,
        kind: record.kind,
        key: record.key,
        value: Arc::new(record.value),
    })
}

/// The revisions a shard has reached and still remembers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    pub revision: u64,
    /// Events from this revision on are retained; a watch from `oldest_kept - 1` still works.
    pub oldest_kept: u64,
}

/// A shard's whole state as a snapshot carries it: objects in their stored form and the
/// retained event history, so watches resume across a snapshot exactly as before it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub revision: u64,
    pub oldest_kept: u64,
    #[serde(with = "crate::bytes::keyed")]
    pub objects: Vec<(String, Vec<u8>)>,
    #[serde(with = "crate::bytes::keyed")]
    pub events: Vec<(u64, Vec<u8>)>,
    /// The newest term per fence name, so that a replica restored from a snapshot refuses
    /// exactly what the others refuse.
    pub fences: Vec<(String, u64)>,
}

/// Raft bookkeeping values read back, one per key asked for.
pub type RaftValues = Vec<Option<Vec<u8>>>;

/// One shard's database. Cheap to clone; methods that reach the database block on disk.
#[derive(Clone)]
pub struct ShardDb {
    db: Arc<Database>,
    shard: u32,
    pending: Arc<RwLock<Layers>>,
    /// Held by the one commit of pending changes that may run at a time.
    committing: Arc<std::sync::Mutex<()>>,
}

/// The committed marks as a read transaction sees them.
fn read_marks(txn: &redb::ReadTransaction) -> Result<Marks, StoreError> {
    let meta = txn.open_table(META)?;
    Ok(Marks {
        revision: meta.get("revision")?.map(|g| g.value()).unwrap_or(0),
        oldest_kept: meta.get("oldest_kept")?.map(|g| g.value()).unwrap_or(1),
    })
}

impl ShardDb {
    /// Opens (or creates) the shard's database file.
    pub fn open(path: &Path, shard: u32) -> Result<ShardDb, StoreError> {
        ShardDb::with_db(Database::create(path)?, shard)
    }

    /// A shard database in memory, for simulations and tests.
    pub fn in_memory(shard: u32) -> Result<ShardDb, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        ShardDb::with_db(db, shard)
    }

    fn with_db(db: Database, shard: u32) -> Result<ShardDb, StoreError> {
        let txn = db.begin_write()?;
        {
            txn.open_table(OBJECTS)?;
            txn.open_table(EVENTS)?;
            let mut raft = txn.open_table(RAFT)?;
            let mut snapshot = txn.open_table(SNAPSHOT)?;
            if raft.remove(OLD_SNAPSHOT_KEYS[0])?.is_some() {
                snapshot.insert(SNAPSHOTTED, [].as_slice())?;
            }
            raft.remove(OLD_SNAPSHOT_KEYS[1])?;
            snapshot.remove("data")?;
            txn.open_table(FENCES)?;
            let mut meta = txn.open_table(META)?;
            if meta.get("oldest_kept")?.is_none() {
                meta.insert("oldest_kept", 1)?;
                meta.insert("revision", 0)?;
            }
        }
        txn.commit()?;
        Ok(ShardDb {
            db: Arc::new(db),
            shard,
            pending: Arc::default(),
            committing: Arc::default(),
        })
    }

    fn pending(&self) -> RwLockReadGuard<'_, Layers> {
        // Pending changes are made whole before the lock is let go (a batch's are staged
        // first), so a panic elsewhere leaves them consistent.
        self.pending
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pending_mut(&self) -> RwLockWriteGuard<'_, Layers> {
        self.pending
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shard's index.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The current revision and the oldest retained one.
    pub fn marks(&self) -> Result<Marks, StoreError> {
        let pending = self.pending();
        match pending.marks() {
            Some(marks) => Ok(marks),
            None => read_marks(&self.db.begin_read()?),
        }
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let pending = self.pending();
        if let Some(found) = pending.object(key) {
            return found.as_deref().map(decode_object).transpose();
        }
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let found = table.get(key)?;
        found.map(|g| decode_object(g.value())).transpose()
    }

    /// Every key under `prefix`, in key order, with the revision the list was taken at.
    pub fn list(&self, prefix: &str) -> Result<(Vec<(String, Stored)>, u64), StoreError> {
        let pending = self.pending();
        let txn = self.db.begin_read()?;
        let revision = match pending.marks() {
            Some(marks) => marks.revision,
            None => read_marks(&txn)?.revision,
        };
        let table = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        // The pending changes under the prefix, the newer layer's winning.
        let mut overlay: BTreeMap<&String, &Option<Vec<u8>>> = BTreeMap::new();
        let layers: Vec<&Pending> = pending.newest_first().collect();
        for layer in layers.into_iter().rev() {
            overlay.extend(
                layer
                    .objects
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(k, _)| k.starts_with(prefix)),
            );
        }
        let mut changed = overlay.into_iter().peekable();
        for entry in table.range(prefix..)? {
            let (k, v) = entry?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            // Pending keys before this one are new; one equal to it replaces it.
            while let Some((pk, pv)) = changed.next_if(|(pk, _)| pk.as_str() < key) {
                if let Some(bytes) = pv {
                    out.push((pk.clone(), decode_object(bytes)?));
                }
            }
            match changed.next_if(|(pk, _)| pk.as_str() == key) {
                Some((_, Some(bytes))) => out.push((key.to_owned(), decode_object(bytes)?)),
                Some((_, None)) => {}
                None => out.push((key.to_owned(), decode_object(v.value())?)),
            }
        }
        for (pk, pv) in changed {
            if let Some(bytes) = pv {
                out.push((pk.clone(), decode_object(bytes)?));
            }
        }
        Ok((out, revision))
    }

    /// Applies one write durably. Keeps at most `history_limit` events.
    pub fn write(
        &self,
        op: &WriteOp,
        history_limit: u64,
    ) -> Result<(WriteOutcome, Option<StoreEvent>), StoreError> {
        let proposal = Proposal::write(op.clone());
        let mut results =
            self.apply_batch(std::slice::from_ref(&proposal), &[], history_limit, true)?;
        // One op in, one result out.
        results
            .pop()
            .unwrap_or(Err(StoreError::Storage("no result".into())))
    }

    /// Applies `proposals` in order, together with the Raft bookkeeping in `raft` (key,
    /// bytes). A write that fails its own checks (conflict, missing key, a superseded term)
    /// changes nothing and gets its error in the result; the outer error means the disk failed
    /// and nothing was applied. A fence raise answers with the shard's unchanged revision.
    ///
    /// The batch is kept in memory with those before it; a `durable` batch commits them all to
    /// the database in one durable transaction.
    #[allow(clippy::type_complexity)]
    pub fn apply_batch(
        &self,
        proposals: &[Proposal],
        raft: &[(&str, Vec<u8>)],
        history_limit: u64,
        durable: bool,
    ) -> Result<Vec<Result<(WriteOutcome, Option<StoreEvent>), StoreError>>, StoreError> {
        let mut pending = self.pending_mut();
        // Put back once the batch is staged; an error drops it, and the next batch opens anew.
        let reader = match pending.reader.take() {
            Some(reader) => reader,
            None => Reader::open(&self.db)?,
        };
        let committed_objects = &reader.objects;
        let committed_fences = &reader.fences;
        let marks = match pending.marks() {
            Some(marks) => marks,
            None => read_marks(&reader.txn)?,
        };
        let mut revision = marks.revision;
        let mut oldest_kept = marks.oldest_kept;
        // This batch's changes, staged apart so that a failed read leaves nothing half made.
        let mut stage = Pending::default();
        let fence_of =
            |stage: &Pending, pending: &Layers, name: &str| -> Result<Option<u64>, StoreError> {
                if let Some(token) = stage
                    .fences
                    .get(name)
                    .copied()
                    .or_else(|| pending.fence(name))
                {
                    return Ok(Some(token));
                }
                Ok(committed_fences.get(name)?.map(|g| g.value()))
            };
        let mut results = Vec::with_capacity(proposals.len());
        for proposal in proposals {
            let (op, fence) = match proposal {
                Proposal::Write { op, fence } => (op, fence.as_ref()),
                Proposal::RaiseFence(fence) => {
                    let newest = fence_of(&stage, &pending, &fence.name)?;
                    results.push(check_fence(fence, newest).map(|token| {
                        stage.fences.insert(fence.name.clone(), token);
                        (
                            WriteOutcome {
                                rev: revision,
                                previous: None,
                                changed: false,
                            },
                            None,
                        )
                    }));
                    continue;
                }
            };
            if let Some(fence) = fence {
                let newest = fence_of(&stage, &pending, &fence.name)?;
                match check_fence(fence, newest) {
                    Ok(token) if Some(token) != newest => {
                        stage.fences.insert(fence.name.clone(), token);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        results.push(Err(err));
                        continue;
                    }
                }
            }
            let key = op.key();
            let current = match stage.objects.get(key).or_else(|| pending.object(key)) {
                Some(found) => found.as_deref().map(decode_object).transpose()?,
                None => committed_objects
                    .get(key)?
                    .map(|g| decode_object(g.value()))
                    .transpose()?,
            };
            let decision = match plan(op, current.as_ref()) {
                Ok(decision) => decision,
                Err(err) => {
                    results.push(Err(err));
                    continue;
                }
            };
            let rev = revision + 1;
            let (kind, value) = match decision {
                Plan::Unchanged => {
                    let at = current.as_ref().map_or(revision, |c| c.rev);
                    results.push(Ok((
                        WriteOutcome {
                            rev: at,
                            previous: current,
                            changed: false,
                        },
                        None,
                    )));
                    continue;
                }
                Plan::Put { value, kind } => {
                    stage
                        .objects
                        .insert(key.to_owned(), Some(encode_object(rev, &value)));
                    (kind, value)
                }
                Plan::Remove => {
                    stage.objects.insert(key.to_owned(), None);
                    let last = current
                        .as_ref()
                        .map(|c| c.value.as_ref().clone())
                        .unwrap_or_default();
                    (EventKind::Deleted, last)
                }
            };
            stage.events.insert(rev, encode_event(kind, key, &value));
            revision = rev;
            if rev >= oldest_kept + history_limit {
                oldest_kept = rev + 1 - history_limit;
            }
            let event = StoreEvent {
                shard: self.shard,
                rev,
                kind,
                key: key.to_owned(),
                value: Arc::new(value),
            };
            results.push(Ok((
                WriteOutcome {
                    rev,
                    previous: current,
                    changed: true,
                },
                Some(event),
            )));
        }
        pending.reader = Some(reader);
        stage.marks = Some(Marks {
            revision,
            oldest_kept,
        });
        for (key, bytes) in raft {
            stage.raft.insert((*key).to_owned(), bytes.clone());
        }
        pending.active.absorb(stage);
        drop(pending);
        if durable {
            self.commit_pending()?;
        }
        Ok(results)
    }

    /// The Raft bookkeeping stored under `key`.
    pub fn raft_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let pending = self.pending();
        if let Some(bytes) = pending.newest_first().find_map(|l| l.raft.get(key)) {
            return Ok(Some(bytes.clone()));
        }
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RAFT)?;
        Ok(table.get(key)?.map(|g| g.value().to_vec()))
    }

    /// Whether a snapshot has been built or installed.
    pub fn snapshotted(&self) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOT)?;
        Ok(table.get(SNAPSHOTTED)?.is_some())
    }

    /// Makes everything pending durable, records (once) that a snapshot exists, and returns
    /// the Raft bookkeeping under `raft_keys` as the commit left it: the state a snapshot
    /// built now stands for.
    pub fn commit_for_snapshot(&self, raft_keys: &[&str]) -> Result<RaftValues, StoreError> {
        self.commit_pending()?;
        if !self.snapshotted()? {
            let txn = self.db.begin_write()?;
            txn.open_table(SNAPSHOT)?
                .insert(SNAPSHOTTED, [].as_slice())?;
            txn.commit()?;
        }
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RAFT)?;
        raft_keys
            .iter()
            .map(|key| Ok(table.get(*key)?.map(|g| g.value().to_vec())))
            .collect()
    }

    /// The whole state (objects, retained history, marks) and the Raft bookkeeping under
    /// `raft_keys`, read at one point in time.
    pub fn export(&self, raft_keys: &[&str]) -> Result<(Image, RaftValues), StoreError> {
        // The database alone is a consistent state (a commit writes the Raft values with the
        // changes they describe), and with everything pending committed, a current one.
        self.commit_pending()?;
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let revision = meta.get("revision")?.map(|g| g.value()).unwrap_or(0);
        let oldest_kept = meta.get("oldest_kept")?.map(|g| g.value()).unwrap_or(1);
        let mut objects = Vec::new();
        for entry in txn.open_table(OBJECTS)?.iter()? {
            let (k, v) = entry?;
            objects.push((k.value().to_owned(), v.value().to_vec()));
        }
        let mut events = Vec::new();
        for entry in txn.open_table(EVENTS)?.iter()? {
            let (k, v) = entry?;
            events.push((k.value(), v.value().to_vec()));
        }
        let mut fences = Vec::new();
        for entry in txn.open_table(FENCES)?.iter()? {
            let (k, v) = entry?;
            fences.push((k.value().to_owned(), v.value()));
        }
        let raft_table = txn.open_table(RAFT)?;
        let mut raft = Vec::with_capacity(raft_keys.len());
        for key in raft_keys {
            raft.push(raft_table.get(*key)?.map(|g| g.value().to_vec()));
        }
        Ok((
            Image {
                revision,
                oldest_kept,
                objects,
                events,
                fences,
            },
            raft,
        ))
    }

    /// Replaces the whole state with `image` (a snapshot's) and sets the Raft bookkeeping,
    /// in one transaction.
    pub fn import(&self, image: &Image, raft: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let _one = self
            .committing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut pending = self.pending_mut();
        let txn = self.db.begin_write()?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            objects.retain(|_, _| false)?;
            for (k, v) in &image.objects {
                decode_object(v)?;
                objects.insert(k.as_str(), v.as_slice())?;
            }
            let mut events = txn.open_table(EVENTS)?;
            events.retain(|_, _| false)?;
            for (rev, bytes) in &image.events {
                events.insert(*rev, bytes.as_slice())?;
            }
            let mut fences = txn.open_table(FENCES)?;
            fences.retain(|_, _| false)?;
            for (name, token) in &image.fences {
                fences.insert(name.as_str(), *token)?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert("revision", image.revision)?;
            meta.insert("oldest_kept", image.oldest_kept)?;
            let mut raft_table = txn.open_table(RAFT)?;
            for (key, bytes) in raft {
                raft_table.insert(*key, bytes.as_slice())?;
            }
            txn.open_table(SNAPSHOT)?
                .insert(SNAPSHOTTED, [].as_slice())?;
        }
        txn.commit()?;
        // What was pending is older than the image, which replaces it.
        *pending = Layers::default();
        Ok(())
    }

    /// The events after `from` under `prefix`, oldest first.
    pub fn events_after(&self, from: u64, prefix: &str) -> Result<Vec<StoreEvent>, StoreError> {
        let pending = self.pending();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        let mut last = from;
        for entry in table.range(from + 1..)? {
            let (rev, bytes) = entry?;
            last = rev.value();
            let event = decode_event(self.shard, last, bytes.value())?;
            if event.key.starts_with(prefix) {
                out.push(event);
            }
        }
        // Pending events are newer than the committed ones, the active layer's than the
        // sealed one's; a sealed layer just committed is in the database already.
        let layers: Vec<&Pending> = pending.newest_first().collect();
        for layer in layers.into_iter().rev() {
            for (rev, bytes) in layer.events.range(last + 1..) {
                let event = decode_event(self.shard, *rev, bytes)?;
                if event.key.starts_with(prefix) {
                    out.push(event);
                }
            }
            last = layer
                .events
                .last_key_value()
                .map_or(last, |(rev, _)| last.max(*rev));
        }
        Ok(out)
    }
}
