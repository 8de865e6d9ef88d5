//! The journal's writer thread: whatever is queued, written at once and flushed once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::mpsc::Receiver;

use super::file::{RecordRef, Segment, frame, io_error, sync_dir};
use super::{Job, Shared};
use crate::error::StoreError;

/// How long the writer looks for the next record before it sleeps: waking a sleeping thread
/// costs more than a flush's worth of latency on some machines, and under load the next
/// record comes sooner than that. It is longer than one write's round trip through three
/// masters (about 300 µs, in which each journal gets one record): with 200 µs, a follower's
/// writer was asleep whenever an append came, and three masters took about 6% fewer writes a
/// second from one client.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// The next queued job, and whether it came within [`LINGER`] of the call; `None` once
/// every sender is gone. When `look` is set the writer looks for it for up to [`LINGER`]
/// (yielding the CPU meanwhile) before it sleeps; otherwise it sleeps at once.
fn next_job(rx: &Receiver<Job>, look: bool) -> Option<(Job, bool)> {
    let since = std::time::Instant::now();
    if look {
        loop {
            match rx.try_recv() {
                Ok(job) => return Some((job, true)),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) if since.elapsed() < LINGER => {
                    std::thread::yield_now();
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
            }
        }
    }
    let job = rx.recv().ok()?;
    Some((job, since.elapsed() < LINGER))
}

/// The writer thread's state.
pub(super) struct Writer {
    dir: PathBuf,
    segment: Segment,
    /// The size segments are zeroed to in advance.
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
    /// Starts the writer thread on `segment` (segments of `size` bytes; `older` ones to
    /// delete at the next checkpoint), holding the directory's `lock` while it runs.
    pub(super) fn start(
        dir: &Path,
        segment: Segment,
        size: u64,
        older: Vec<PathBuf>,
        shared: Weak<Shared>,
        lock: File,
        rx: Receiver<Job>,
    ) -> Result<(), StoreError> {
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment,
            size,
            rotate_at: size,
            older,
            shared,
            failed: None,
            _lock: lock,
        };
        std::thread::Builder::new()
            .name("raft-journal".into())
            .spawn(move || writer.run(rx))
            .map(drop)
            .map_err(|e| StoreError::Storage(format!("starting the journal writer: {e}")))
    }

    fn run(mut self, rx: Receiver<Job>) {
        let mut buf = Vec::new();
        // Whether to look for the next record before sleeping: only while records have
        // been coming soon after a flush, so that a writer whose records come seldom (a
        // follower of a lone client, an idle master) leaves the CPU to others.
        let mut look = true;
        // Ends when every journal handle (and with them the sender) is gone.
        while let Some((first, soon)) = next_job(&rx, look) {
            look = soon;
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
                    .segment
                    .append(&buf, durable)
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
            if self.failed.is_none()
                && self.segment.end >= self.rotate_at
                && let Err(err) = self.rotate()
            {
                tracing::error!(reason = %err, "the Raft journal cannot start a new segment");
                self.failed = Some(err.to_string());
            }
        }
    }

    /// Starts the next segment with a checkpoint of every group, then deletes the older ones.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let mut next = Segment::create(&self.dir, self.segment.seq + 1, self.size)?;
        let groups = shared.lock().clone();
        let checkpoint = frame(&RecordRef::Checkpoint { groups: &groups })?;
        next.append(&checkpoint, true)
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
