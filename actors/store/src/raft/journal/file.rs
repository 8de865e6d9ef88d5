//! The journal's files: the framing of a record, the segments (zeroed in advance, resumed after
//! a torn write, replayed in order) and the directory lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Change, GroupLog};
use crate::error::StoreError;
use crate::raft::{decode, encode};

/// The bytes before a record's payload: its length and checksum.
pub(super) const HEADER: usize = 8;

/// A record larger than this is taken for a corrupt length.
const MAX_RECORD: usize = 1 << 30;

/// A record as written (borrowing what it writes).
#[derive(Serialize)]
pub(super) enum RecordRef<'a> {
    Change { group: u32, change: &'a Change },
    Checkpoint { groups: &'a BTreeMap<u32, GroupLog> },
}

/// A record as read back; the same variants, in the same order, as [`RecordRef`].
#[derive(Deserialize)]
enum Record {
    Change { group: u32, change: Change },
    Checkpoint { groups: BTreeMap<u32, GroupLog> },
}

pub(super) fn frame(record: &RecordRef<'_>) -> Result<Vec<u8>, StoreError> {
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

pub(super) fn io_error(path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Storage(format!("{}: {err}", path.display()))
}

/// Takes the journal directory's lock, held for as long as the writer runs.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
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

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// The segments in `dir`, oldest first.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
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
pub(super) fn replay(
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
pub(super) struct Segment {
    pub(super) path: PathBuf,
    pub(super) seq: u64,
    pub(super) file: File,
    /// Where the next record goes.
    pub(super) end: u64,
}

impl Segment {
    /// A new segment, zeroed to `size`; the directory entry is made durable.
    pub(super) fn create(dir: &Path, seq: u64, size: u64) -> Result<Segment, StoreError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        zero_fill(&file, 0, size).map_err(|e| io_error(&path, e))?;
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
    pub(super) fn resume(dir: &Path, seq: u64, end: u64, size: u64) -> Result<Segment, StoreError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        // Zeroes over the torn tail and whatever follows, up to the segment's size.
        let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        zero_fill(&file, end, size.max(len)).map_err(|e| io_error(&path, e))?;
        file.sync_all().map_err(|e| io_error(&path, e))?;
        Ok(Segment {
            path,
            seq,
            file,
            end,
        })
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(bytes, self.end)?;
        self.end += bytes.len() as u64;
        Ok(())
    }
}

/// Writes zeros over `from..to`. A segment is written out in full before it is used, so that
/// a flush only carries the records' own blocks: blocks that were merely reserved
/// (`fallocate`) are converted to written ones by the flush that first touches them, which
/// then also writes the file's block map, and a file that grows records its new size the
/// same way. Zeroing the 64 MiB of a segment takes tens of milliseconds, once per segment;
/// every flush after it is about a fifth quicker.
fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(to.saturating_sub(from) as usize)];
    let mut at = from;
    while at < to {
        // At most CHUNK, so it fits in usize.
        let n = (to - at).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}
