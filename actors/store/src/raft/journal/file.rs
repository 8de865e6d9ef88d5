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
    /// Where the next record goes.
    pub(super) end: u64,
    /// How records reach the disk.
    io: SegmentIo,
}

/// The alignment of direct writes: of their offset, their length and their memory. A
/// multiple of every logical block size in use (512 and 4096 bytes).
const BLOCK: usize = 4096;

/// The most room a segment keeps for putting its direct writes together between writes.
const KEEP_BUFFER: usize = 1 << 20;

/// How a segment's records reach the disk.
enum SegmentIo {
    /// Through the page cache; a durable write is followed by an `fdatasync`.
    Buffered(File),
    /// Direct and synchronous (`O_DIRECT | O_DSYNC`): a write goes to the device and returns
    /// once it is durable. Direct writes cover whole blocks, so each one writes the segment's
    /// last, partly filled block again (the same bytes, then the new records), followed by
    /// zeros up to the end of its last block, which the next write covers. Against a write
    /// and an `fdatasync`, this skips the copy into the page cache, the writeback that
    /// `fdatasync` starts and waits for, and a system call: a flush takes about a tenth less
    /// time and CPU.
    Direct {
        file: File,
        /// The bytes of the last, partly filled block, from its start to `end`.
        tail: Vec<u8>,
        /// Where a write is put together.
        buf: AlignedBuf,
    },
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
        let io = SegmentIo::open(&path, file, 0).map_err(|e| io_error(&path, e))?;
        Ok(Segment {
            path,
            seq,
            end: 0,
            io,
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
        let io = SegmentIo::open(&path, file, end).map_err(|e| io_error(&path, e))?;
        Ok(Segment { path, seq, end, io })
    }

    /// Whether records are written with direct, synchronous I/O.
    #[cfg(test)]
    pub(super) fn direct(&self) -> bool {
        matches!(self.io, SegmentIo::Direct { .. })
    }

    /// The same segment, written through the page cache.
    #[cfg(test)]
    pub(super) fn buffered(mut self) -> Segment {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .expect("the segment opens");
        self.io = SegmentIo::Buffered(file);
        self
    }

    /// Writes `bytes` after the records already written; when `durable`, returns once they
    /// are on the disk.
    pub(super) fn append(&mut self, bytes: &[u8], durable: bool) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        match &mut self.io {
            SegmentIo::Buffered(file) => {
                file.write_all_at(bytes, self.end)?;
                if durable {
                    file.sync_data()?;
                }
            }
            SegmentIo::Direct { file, tail, buf } => {
                let start = self.end - tail.len() as u64;
                buf.clear();
                buf.extend(tail);
                buf.extend(bytes);
                let filled = buf.len();
                buf.pad_to(BLOCK);
                file.write_all_at(buf.as_slice(), start)?;
                let last = filled - filled % BLOCK;
                tail.clear();
                tail.extend_from_slice(&buf.as_slice()[last..filled]);
                // A checkpoint or a large batch is not worth keeping the room for.
                if buf.room() > KEEP_BUFFER {
                    *buf = AlignedBuf::default();
                }
            }
        }
        self.end += bytes.len() as u64;
        Ok(())
    }
}

impl SegmentIo {
    /// Direct, synchronous writes to the segment at `path` if its file system takes them,
    /// buffered ones (through `file`) otherwise. `file` is the segment, open for reading and
    /// writing, already written up to `end`.
    fn open(path: &Path, file: File, end: u64) -> std::io::Result<SegmentIo> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        // Direct I/O needs the file system's word on its alignment (Linux 6.1 and later);
        // without it, or with an alignment that a block does not satisfy, writes stay buffered.
        let fits = |align: u32| align != 0 && BLOCK.is_multiple_of(align as usize);
        let aligned = rustix::fs::statx(
            &file,
            "",
            rustix::fs::AtFlags::EMPTY_PATH,
            rustix::fs::StatxFlags::DIOALIGN,
        )
        .is_ok_and(|st| {
            st.stx_mask & rustix::fs::StatxFlags::DIOALIGN.bits() != 0
                && fits(st.stx_dio_offset_align)
                && fits(st.stx_dio_mem_align)
        });
        if !aligned {
            return Ok(SegmentIo::Buffered(file));
        }
        let direct = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
        {
            Ok(direct) => direct,
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(SegmentIo::Buffered(file));
            }
            Err(err) => return Err(err),
        };
        let from = end - end % BLOCK as u64;
        // Less than a block, so it fits in usize.
        let mut tail = vec![0; (end - from) as usize];
        file.read_exact_at(&mut tail, from)?;
        // The zeroed segment's pages are clean and of no more use: dropped now, at once,
        // rather than one by one by the direct writes that cover them.
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
        Ok(SegmentIo::Direct {
            file: direct,
            tail,
            buf: AlignedBuf::default(),
        })
    }
}

/// A growable buffer whose bytes start at a [`BLOCK`]-aligned address, as direct writes
/// need: a vector with room for the alignment, used from its first aligned byte.
#[derive(Default)]
struct AlignedBuf {
    bytes: Vec<u8>,
    /// Where the aligned part starts in `bytes`.
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn clear(&mut self) {
        self.len = 0;
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The bytes allocated.
    fn room(&self) -> usize {
        self.bytes.len()
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    /// Room for `more` bytes after the current ones.
    fn reserve(&mut self, more: usize) {
        let needed = self.len + more;
        if self.start + needed <= self.bytes.len() {
            return;
        }
        let capacity = needed.max(2 * self.len).next_multiple_of(BLOCK);
        let mut bytes = vec![0u8; capacity + BLOCK];
        let start = bytes.as_ptr().align_offset(BLOCK);
        bytes[start..start + self.len].copy_from_slice(self.as_slice());
        self.bytes = bytes;
        self.start = start;
    }

    fn extend(&mut self, data: &[u8]) {
        self.reserve(data.len());
        let at = self.start + self.len;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    /// Zeros up to the next multiple of `block`.
    fn pad_to(&mut self, block: usize) {
        let padded = self.len.next_multiple_of(block);
        self.reserve(padded - self.len);
        let at = self.start + self.len;
        self.bytes[at..self.start + padded].fill(0);
        self.len = padded;
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
