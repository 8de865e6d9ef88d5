//! One Raft journal per master, shared by all of its shard groups.
//!
//! Every group's log lives in memory (the entries not yet purged behind a snapshot, the vote,
//! the committed and purged ids) and every change to it is appended, as one framed record, to
//! the journal's current segment file. A single writer thread takes whatever records are
//! queued, writes them in one `write` and makes them durable with one `fdatasync`: the groups
//! share their flushes (group commit), where a log per group would cost one flush per group
//! and per batch.
//!
//! - A record is `[length: u32][crc32: u32][bincode payload]`, little-endian. Segments are
//!   preallocated, so a zero length marks the end of what was written.
//! - Appends, votes and truncations are acknowledged only once flushed. The committed and
//!   purged ids are written without a flush of their own: they ride on the next one, and a lost
//!   one is re-learnt (from the leader, or by purging again).
//! - The memory image is changed and the record queued under one lock, so the file's record
//!   order is the order of the changes. Every record sets or removes values by key, so
//!   replaying records on top of a state that already holds them gives that state again.
//! - When a segment has grown past [`SEGMENT_BYTES`], the writer starts the next one with a
//!   checkpoint of every group's memory image, flushes it, and deletes the older segments.
//! - On opening, the segments are replayed in order. A record that is cut short or fails its
//!   checksum can only be the tail of the last, unacknowledged write, and is dropped (the rest
//!   of the segment is zeroed); anywhere else it is corruption and the journal refuses to open.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use openraft::storage::IOFlushed;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{Entry, LogId, ShardRaft, Vote, decode, encode};
use crate::error::StoreError;

/// A segment is preallocated to this size; past it, the writer moves on to the next.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The bytes before a record's payload: its length and checksum.
const HEADER: usize = 8;

/// A record larger than this is taken for a corrupt length.
const MAX_RECORD: usize = 1 << 30;

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

/// A record as written (borrowing what it writes).
#[derive(Serialize)]
enum RecordRef<'a> {
    Change { group: u32, change: &'a Change },
    Checkpoint { groups: &'a BTreeMap<u32, GroupLog> },
}

/// A record as read back; the same variants, in the same order, as [`RecordRef`].
#[derive(Deserialize)]
enum Record {
    Change { group: u32, change: Change },
    Checkpoint { groups: BTreeMap<u32, GroupLog> },
}

fn frame(record: &RecordRef<'_>) -> Result<Vec<u8>, StoreError> {
    let payload = encode(record)?;
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|&n| (n as usize) < MAX_RECORD)
        .ok_or_else(|| StoreError::Storage(format!("a {}-byte log record", payload.len())))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// What reading one record from `bytes` at `at` found.
enum Found {
    Record(Record, usize),
    /// The zeroed (preallocated) rest of a segment, or its end.
    End,
    /// A record cut short or failing its checksum.
    Torn(String),
}

fn read_record(bytes: &[u8], at: usize) -> Found {
    let Some(header) = bytes.get(at..at + HEADER) else {
        return if bytes[at..].iter().all(|&b| b == 0) {
            Found::End
        } else {
            Found::Torn("a record header cut short".into())
        };
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length == 0 && crc == 0 {
        return Found::End;
    }
    let Some(payload) = bytes.get(at + HEADER..at + HEADER + length) else {
        return Found::Torn(format!("a {length}-byte record cut short"));
    };
    if crc32fast::hash(payload) != crc {
        return Found::Torn("a record failing its checksum".into());
    }
    match decode::<Record>("a journal record", payload) {
        Ok(record) => Found::Record(record, at + HEADER + length),
        Err(err) => Found::Torn(err.to_string()),
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

struct State {
    groups: BTreeMap<u32, GroupLog>,
    sink: Sink,
}

struct Shared {
    state: Mutex<State>,
    /// Whether the sink is a disk (fixed at creation), known without the lock.
    on_disk: bool,
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
        let on_disk = matches!(sink, Sink::Disk(_));
        Journal {
            shared: Arc::new(Shared {
                state: Mutex::new(State { groups, sink }),
                on_disk,
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
        let writer = Writer {
            dir: dir.to_path_buf(),
            size,
            rotate_at: size,
            segment,
            older: older.into_iter().map(|(_, path)| path).collect(),
            shared: Arc::downgrade(&journal.shared),
            failed: None,
            _lock: lock,
        };
        std::thread::Builder::new()
            .name("raft-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Storage(format!("starting the journal writer: {e}")))?;
        Ok(journal)
    }

    /// Group `group`'s log (empty if the journal has none).
    pub fn log(&self, group: u32) -> super::LogStore {
        super::LogStore::new(self.clone(), group)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left no half-made change (each is made whole before
        // the record is queued), so the state is usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads group `group`'s log.
    pub(crate) fn read<T>(&self, group: u32, f: impl FnOnce(&GroupLog) -> T) -> T {
        let state = self.lock();
        match state.groups.get(&group) {
            Some(log) => f(log),
            None => f(&GroupLog::default()),
        }
    }

    /// Makes `change` to group `group`'s log in memory and queues its record; `done` is told
    /// once the record is durable (durable changes) or written (the others).
    fn submit(&self, group: u32, change: Change, done: Done) -> Result<(), StoreError> {
        let durable = change.durable();
        let frame = match self.shared.on_disk {
            false => None,
            true => Some(frame(&RecordRef::Change {
                group,
                change: &change,
            })?),
        };
        let mut state = self.lock();
        state.groups.entry(group).or_default().apply(change);
        match (&state.sink, frame) {
            (Sink::Disk(tx), Some(frame)) => {
                let job = Job {
                    frame,
                    durable,
                    done,
                };
                if let Err(lost) = tx.send(job) {
                    drop(state);
                    lost.0
                        .done
                        .complete(Err("the journal writer has stopped".into()));
                    return Err(StoreError::Storage("the journal writer has stopped".into()));
                }
            }
            _ => {
                drop(state);
                done.complete(Ok(()));
            }
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

    /// Makes a change without waiting for it to reach the disk.
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

fn io_error(path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Storage(format!("{}: {err}", path.display()))
}

/// Takes the journal directory's lock, held for as long as the writer runs.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| {
            StoreError::Storage(format!(
                "{}: the journal is in use by another process ({e})",
                dir.display()
            ))
        },
    )?;
    Ok(file)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// The segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = item.map_err(|e| io_error(dir, e))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Replays one segment into `groups`; returns where its records end.
fn replay(
    path: &Path,
    groups: &mut BTreeMap<u32, GroupLog>,
    last: bool,
) -> Result<u64, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_error(path, e))?;
    let mut at = 0;
    loop {
        match read_record(&bytes, at) {
            Found::Record(record, next) => {
                match record {
                    Record::Change { group, change } => {
                        groups.entry(group).or_default().apply(change)
                    }
                    Record::Checkpoint { groups: image } => *groups = image,
                }
                at = next;
            }
            Found::End => return Ok(at as u64),
            Found::Torn(why) if last => {
                tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    dropped = bytes.len() - at,
                    "the journal ends in a torn write ({why}); dropping it"
                );
                return Ok(at as u64);
            }
            Found::Torn(why) => {
                return Err(StoreError::Storage(format!(
                    "{} is corrupt at byte {at}: {why}",
                    path.display()
                )));
            }
        }
    }
}

/// The segment being written.
struct Segment {
    path: PathBuf,
    seq: u64,
    file: File,
    /// Where the next record goes.
    end: u64,
}

impl Segment {
    /// A new, preallocated segment; the directory entry is made durable.
    fn create(dir: &Path, seq: u64, size: u64) -> Result<Segment, StoreError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        preallocate(&file, 0, size).map_err(|e| io_error(&path, e))?;
        file.sync_all().map_err(|e| io_error(&path, e))?;
        sync_dir(dir)?;
        Ok(Segment {
            path,
            seq,
            file,
            end: 0,
        })
    }

    /// The last segment, written on from `end`; anything after `end` (a torn write) is
    /// zeroed first, so that no stale bytes follow the next records.
    fn resume(dir: &Path, seq: u64, end: u64, size: u64) -> Result<Segment, StoreError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        if len > end {
            file.set_len(end).map_err(|e| io_error(&path, e))?;
        }
        preallocate(&file, end, size).map_err(|e| io_error(&path, e))?;
        file.sync_all().map_err(|e| io_error(&path, e))?;
        Ok(Segment {
            path,
            seq,
            file,
            end,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(bytes, self.end)?;
        self.end += bytes.len() as u64;
        Ok(())
    }
}

/// Reserves the rest of a segment's blocks, so that a flush need not also record the file's
/// growth (a preallocated segment flushes in about two thirds of the time).
fn preallocate(file: &File, from: u64, size: u64) -> std::io::Result<()> {
    if from >= size {
        return Ok(());
    }
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), from, size - from)
        .map_err(std::io::Error::from)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// How long the writer looks for the next record before it sleeps: waking a sleeping thread
/// costs more than a flush's worth of latency on some machines, and under load the next
/// record comes sooner than that.
const LINGER: std::time::Duration = std::time::Duration::from_micros(200);

/// The next queued job: found within [`LINGER`] (yielding the CPU meanwhile), or waited
/// for; `None` once every sender is gone.
fn next_job(rx: &Receiver<Job>) -> Option<Job> {
    let since = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            Err(std::sync::mpsc::TryRecvError::Empty) if since.elapsed() < LINGER => {
                std::thread::yield_now();
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    segment: Segment,
    /// The size segments are preallocated to.
    size: u64,
    /// The size past which the segment is replaced: `size`, or twice the last
    /// checkpoint if that is larger (so that a large checkpoint is not rewritten at once).
    rotate_at: u64,
    /// Segments before the current one, deleted at the next checkpoint.
    older: Vec<PathBuf>,
    shared: Weak<Shared>,
    /// Set by the first failed write or flush; every later record fails with it.
    failed: Option<String>,
    _lock: File,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        let mut buf = Vec::new();
        // Ends when every journal handle (and with them the sender) is gone.
        while let Some(first) = next_job(&rx) {
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter());
            buf.clear();
            let mut durable = false;
            for job in &jobs {
                buf.extend_from_slice(&job.frame);
                durable |= job.durable;
            }
            let result = match &self.failed {
                Some(why) => Err(why.clone()),
                None => self
                    .flush(&buf, durable)
                    .map_err(|e| format!("{}: {e}", self.segment.path.display())),
            };
            if let Err(why) = &result {
                if self.failed.is_none() {
                    tracing::error!(reason = %why, "the Raft journal cannot be written");
                }
                self.failed = Some(why.clone());
            }
            for job in jobs {
                job.done.complete(result.clone());
            }
            if self.failed.is_none() && self.segment.end >= self.rotate_at {
                if let Err(err) = self.rotate() {
                    tracing::error!(reason = %err, "the Raft journal cannot start a new segment");
                    self.failed = Some(err.to_string());
                }
            }
        }
    }

    fn flush(&mut self, bytes: &[u8], durable: bool) -> std::io::Result<()> {
        self.segment.write(bytes)?;
        if durable {
            self.segment.file.sync_data()?;
        }
        Ok(())
    }

    /// Starts the next segment with a checkpoint of every group, then deletes the older ones.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let mut next = Segment::create(&self.dir, self.segment.seq + 1, self.size)?;
        let groups = {
            let state = shared
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.groups.clone()
        };
        let checkpoint = frame(&RecordRef::Checkpoint { groups: &groups })?;
        next.write(&checkpoint)
            .and_then(|()| next.file.sync_data())
            .map_err(|e| io_error(&next.path, e))?;
        self.rotate_at = self.size.max(2 * checkpoint.len() as u64);
        let previous = std::mem::replace(&mut self.segment, next);
        self.older.push(previous.path);
        for path in self.older.drain(..) {
            std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        }
        sync_dir(&self.dir)?;
        tracing::info!(
            segment = self.segment.seq,
            bytes = checkpoint.len(),
            "the Raft journal moved to a new segment"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::machine::{Proposal, WriteOp};

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<ShardRaft>(term, 1, index)
    }

    fn entry(term: u64, index: u64, value: usize) -> Entry {
        Entry::new_normal(
            log_id(term, index),
            Proposal::Write {
                op: WriteOp::Create {
                    key: format!("/k/{index}"),
                    value: vec![7; value],
                },
                fence: None,
            },
        )
    }

    fn vote(term: u64) -> Vote {
        Vote::new(term, 1)
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn append(journal: &Journal, group: u32, entries: Vec<Entry>) {
        let (tx, rx) = ShardRaft::oneshot();
        journal
            .append(group, entries, IOFlushed::signal(tx))
            .expect("queued");
        rx.await.expect("answered").expect("flushed");
    }

    fn groups(journal: &Journal) -> BTreeMap<u32, GroupLog> {
        journal.lock().groups.clone()
    }

    /// Appends, a vote, a truncation, a purge and a committed id in two groups.
    async fn fill(journal: &Journal) {
        append(journal, 0, (1..=5).map(|i| entry(1, i, 10)).collect()).await;
        append(journal, 3, (1..=3).map(|i| entry(2, i, 10)).collect()).await;
        journal
            .change(0, Change::Vote(vote(2)))
            .await
            .expect("vote");
        journal
            .change(0, Change::Truncate(Some(log_id(1, 3))))
            .await
            .expect("truncate");
        append(journal, 0, vec![entry(2, 4, 10)]).await;
        journal
            .change_lazily(3, Change::Purge(log_id(2, 2)))
            .expect("purge");
        journal
            .change_lazily(0, Change::Committed(Some(log_id(2, 4))))
            .expect("committed");
        journal
            .change(3, Change::Vote(vote(3)))
            .await
            .expect("vote");
    }

    #[tokio::test]
    async fn a_reopened_journal_holds_what_was_written() {
        let dir = dir("reopen");
        let before = {
            let journal = Journal::open(&dir).expect("open");
            fill(&journal).await;
            groups(&journal)
        };
        let zero = &before[&0];
        assert_eq!(
            zero.entries.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(zero.entries[&4].log_id, log_id(2, 4));
        assert_eq!(zero.vote, Some(vote(2)));
        assert_eq!(zero.committed, Some(log_id(2, 4)));
        let three = &before[&3];
        assert_eq!(three.entries.keys().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(three.purged, Some(log_id(2, 2)));
        assert_eq!(three.last_log_id(), Some(log_id(2, 3)));
        // The writer has let go of the directory once the last handle is gone.
        let after = reopen(&dir).expect("reopen");
        assert_eq!(groups(&after), before);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_journal_is_refused() {
        let dir = dir("twice");
        let journal = Journal::open(&dir).expect("open");
        let err = Journal::open(&dir).err().expect("refused");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(journal);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .expect("list")
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    #[tokio::test]
    async fn a_torn_last_write_is_dropped_and_the_journal_goes_on() {
        let dir = dir("torn");
        {
            let journal = Journal::open(&dir).expect("open");
            append(&journal, 0, vec![entry(1, 1, 10)]).await;
            append(&journal, 0, vec![entry(1, 2, 10)]).await;
        }
        // Flip a byte in the last record's payload, as a write cut short by a crash leaves it.
        let path = segments(&dir).pop().expect("a segment");
        let mut bytes = std::fs::read(&path).expect("read");
        let end = bytes.iter().rposition(|&b| b != 0).expect("records");
        bytes[end] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        {
            let journal = reopen(&dir).expect("reopen");
            let zero = &groups(&journal)[&0];
            assert_eq!(zero.entries.keys().copied().collect::<Vec<_>>(), [1]);
            append(&journal, 0, vec![entry(2, 2, 3)]).await;
        }
        let journal = reopen(&dir).expect("reopen");
        let zero = &groups(&journal)[&0];
        assert_eq!(zero.entries.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(zero.entries[&2].log_id, log_id(2, 2));
        drop(journal);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn full_segments_are_replaced_by_a_checkpoint_and_removed() {
        let dir = dir("rotate");
        let size = 64 << 10;
        let before = {
            let journal = Journal::open_sized(&dir, size).expect("open");
            // About 1 KiB an entry: several segments' worth, with purges keeping the log short.
            for i in 1..=400u64 {
                append(&journal, (i % 3) as u32, vec![entry(1, i, 1000)]).await;
                if i % 50 == 0 {
                    for group in 0..3 {
                        journal
                            .change_lazily(group, Change::Purge(log_id(1, i - 20)))
                            .expect("purge");
                    }
                }
            }
            journal
                .change(1, Change::Vote(vote(4)))
                .await
                .expect("vote");
            let kept = segments(&dir);
            assert!(kept.len() <= 2, "old segments were kept: {kept:?}");
            assert!(
                list_segments(&dir).expect("list")[0].0 > 3,
                "the journal never moved on"
            );
            groups(&journal)
        };
        let after = groups(&reopen(&dir).expect("reopen"));
        assert_eq!(after, before);
        assert_eq!(after[&1].vote, Some(vote(4)));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Opens the journal in `dir` once the previous writer thread has released it.
    fn reopen(dir: &Path) -> Result<Journal, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Journal::open(dir) {
                Err(err) if err.to_string().contains("in use") => {
                    assert!(std::time::Instant::now() < deadline, "never released");
                    std::thread::yield_now();
                }
                other => return other,
            }
        }
    }

    #[tokio::test]
    async fn corruption_before_the_last_segment_is_refused() {
        let dir = dir("corrupt");
        {
            let journal = Journal::open(&dir).expect("open");
            for i in 1..=3u64 {
                append(&journal, 0, vec![entry(1, i, 100)]).await;
            }
        }
        // A crash just after the next segment was made leaves it empty behind the first.
        let first = segments(&dir).remove(0);
        std::fs::write(segment_path(&dir, 2), vec![0; 4096]).expect("next segment");
        let journal = reopen(&dir).expect("two segments open");
        assert_eq!(groups(&journal)[&0].entries.len(), 3);
        append(&journal, 0, vec![entry(1, 4, 100)]).await;
        drop(journal);
        let mut bytes = std::fs::read(&first).expect("read");
        bytes[HEADER + 2] ^= 0xff;
        std::fs::write(&first, &bytes).expect("write");
        let err = reopen(&dir).err().expect("a corrupt segment was accepted");
        assert!(err.to_string().contains("corrupt"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_change_replayed_on_a_log_that_has_it_changes_nothing() {
        let changes = vec![
            Change::Append((1..=4).map(|i| entry(1, i, 5)).collect()),
            Change::Truncate(Some(log_id(1, 2))),
            Change::Append(vec![entry(2, 3, 5)]),
            Change::Purge(log_id(1, 1)),
            Change::Vote(vote(2)),
            Change::Committed(Some(log_id(2, 3))),
        ];
        let mut full = GroupLog::default();
        for c in changes.clone() {
            full.apply(c);
        }
        for from in 0..changes.len() {
            let mut again = full.clone();
            for c in changes[from..].iter().cloned() {
                again.apply(c);
            }
            assert_eq!(again, full, "replaying from change {from}");
        }
    }
}
