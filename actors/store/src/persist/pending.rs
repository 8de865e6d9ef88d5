//! The changes applied to a shard since its last commit to the database: a layer being
//! gathered, and one sealed for the commit that is writing it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{EVENTS, FENCES, META, Marks, OBJECTS, RAFT, ShardDb};
use crate::error::StoreError;

/// Changes applied since the last commit to the database.
#[derive(Clone, Debug, Default)]
pub(super) struct Pending {
    /// key → its new stored form, or `None` once deleted.
    pub(super) objects: BTreeMap<String, Option<Vec<u8>>>,
    /// Events not yet in the database (all newer than those that are).
    pub(super) events: BTreeMap<u64, Vec<u8>>,
    pub(super) fences: BTreeMap<String, u64>,
    pub(super) raft: BTreeMap<String, Vec<u8>>,
    /// The marks, once changed.
    pub(super) marks: Option<Marks>,
}

impl Pending {
    /// Takes in `newer`'s changes, which win over these.
    pub(super) fn absorb(&mut self, newer: Pending) {
        self.objects.extend(newer.objects);
        self.events.extend(newer.events);
        self.fences.extend(newer.fences);
        self.raft.extend(newer.raft);
        if let Some(marks) = newer.marks {
            self.events = self.events.split_off(&marks.oldest_kept);
            self.marks = Some(marks);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.events.is_empty()
            && self.fences.is_empty()
            && self.raft.is_empty()
            && self.marks.is_none()
    }
}

/// The changes not yet in the database: those being committed, and those applied since.
#[derive(Debug, Default)]
pub(super) struct Layers {
    pub(super) active: Pending,
    /// Sealed for a commit that is writing them (or failed to, and will retry).
    pub(super) sealed: Option<Arc<Pending>>,
    /// A read of the database under these layers, kept from one batch to the next: opening
    /// a read transaction and its tables for every batch took about 1.6% of the CPU of
    /// three loaded masters. Whatever commits to the database under the layers drops it, in
    /// the same hold of the lock that changes the layers (see [`ShardDb::commit_pending`]).
    pub(super) reader: Option<Reader>,
}

/// The committed state that batches read what the layers do not hold from.
pub(super) struct Reader {
    pub(super) txn: redb::ReadTransaction,
    pub(super) objects: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    pub(super) fences: redb::ReadOnlyTable<&'static str, u64>,
}

impl Reader {
    pub(super) fn open(db: &redb::Database) -> Result<Reader, StoreError> {
        use redb::ReadableDatabase;
        let txn = db.begin_read()?;
        let objects = txn.open_table(OBJECTS)?;
        let fences = txn.open_table(FENCES)?;
        Ok(Reader {
            txn,
            objects,
            fences,
        })
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

impl Layers {
    /// The pending layers, newest first.
    pub(super) fn newest_first(&self) -> impl Iterator<Item = &Pending> {
        std::iter::once(&self.active).chain(self.sealed.as_deref())
    }

    pub(super) fn object(&self, key: &str) -> Option<&Option<Vec<u8>>> {
        self.newest_first().find_map(|l| l.objects.get(key))
    }

    pub(super) fn fence(&self, name: &str) -> Option<u64> {
        self.newest_first()
            .find_map(|l| l.fences.get(name).copied())
    }

    pub(super) fn marks(&self) -> Option<Marks> {
        self.newest_first().find_map(|l| l.marks)
    }
}

impl ShardDb {
    /// Commits the pending changes to the database in one durable transaction. Reads and
    /// batches go on meanwhile: the changes are sealed first, and later batches gather
    /// apart. One commit runs at a time; a failed one is retried by the next.
    pub fn commit_pending(&self) -> Result<(), StoreError> {
        let _one = self
            .committing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(sealed) = self.seal() else {
            return Ok(());
        };
        self.write_layer(&sealed)?;
        let mut layers = self.pending_mut();
        layers.sealed = None;
        // It reads the database from before the commit, which the sealed layer made whole.
        layers.reader = None;
        Ok(())
    }

    /// Seals the pending changes for a commit (with those of a commit that failed, under
    /// them); `None` when there are none.
    pub(super) fn seal(&self) -> Option<Arc<Pending>> {
        let mut layers = self.pending_mut();
        let active = std::mem::take(&mut layers.active);
        let sealed = match layers.sealed.take() {
            Some(failed) => {
                let mut merged = Pending::clone(&failed);
                merged.absorb(active);
                merged
            }
            None => active,
        };
        if sealed.is_empty() {
            return None;
        }
        let sealed = Arc::new(sealed);
        layers.sealed = Some(sealed.clone());
        Some(sealed)
    }

    /// Writes one layer of changes in one durable transaction.
    fn write_layer(&self, layer: &Pending) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut fences = txn.open_table(FENCES)?;
            let mut raft = txn.open_table(RAFT)?;
            let mut meta = txn.open_table(META)?;
            for (key, value) in &layer.objects {
                match value {
                    Some(bytes) => {
                        objects.insert(key.as_str(), bytes.as_slice())?;
                    }
                    None => {
                        objects.remove(key.as_str())?;
                    }
                }
            }
            for (rev, bytes) in &layer.events {
                events.insert(*rev, bytes.as_slice())?;
            }
            for (name, token) in &layer.fences {
                fences.insert(name.as_str(), *token)?;
            }
            for (key, bytes) in &layer.raft {
                raft.insert(key.as_str(), bytes.as_slice())?;
            }
            if let Some(marks) = layer.marks {
                meta.insert("revision", marks.revision)?;
                meta.insert("oldest_kept", marks.oldest_kept)?;
                events.retain_in(..marks.oldest_kept, |_, _| false)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
