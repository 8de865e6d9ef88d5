//! The watch hub of one shard replica: the subscribers and the last revision published to
//! them. The state machine publishes each applied batch after its transaction committed; a
//! watch registers under the same lock, replaying the history up to the published revision,
//! so no event is missed or delivered twice.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::error::StoreError;
use crate::machine::{StoreEvent, check_watch_start};
use crate::persist::ShardDb;

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<StoreEvent>,
}

struct Inner {
    /// Every event up to this revision has been offered to the subscribers.
    published: u64,
    subscribers: Vec<Subscriber>,
}

/// Subscribers of one shard replica. Cheap to clone.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Mutex<Inner>>,
    queue: usize,
    /// The published revision, for callers waiting for this replica to catch up.
    progress: tokio::sync::watch::Sender<u64>,
}

impl WatchHub {
    /// A hub whose history is published up to `revision`; each watcher may fall `queue`
    /// events behind before it is cut off.
    pub fn new(revision: u64, queue: usize) -> WatchHub {
        WatchHub {
            inner: Arc::new(Mutex::new(Inner {
                published: revision,
                subscribers: Vec::new(),
            })),
            queue: queue.max(1),
            progress: tokio::sync::watch::Sender::new(revision),
        }
    }

    /// Waits until events up to `revision` are published, for at most `patience`. Returns
    /// whether they are.
    pub async fn caught_up(&self, revision: u64, patience: std::time::Duration) -> bool {
        let mut rx = self.progress.subscribe();
        tokio::time::timeout(patience, rx.wait_for(|p| *p >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last revision published.
    pub fn published(&self) -> u64 {
        self.lock().published
    }

    /// Offers committed events, in revision order, to their watchers; a full or closed queue
    /// drops the watcher, which then resumes from its last version.
    pub fn publish(&self, events: &[StoreEvent]) {
        let mut inner = self.lock();
        for event in events {
            if event.rev <= inner.published {
                continue;
            }
            inner.published = event.rev;
            self.progress.send_replace(event.rev);
            inner.subscribers.retain(|s| {
                if !event.key.starts_with(&s.prefix) {
                    return !s.tx.is_closed();
                }
                match s.tx.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(shard = event.shard, prefix = %s.prefix, "watcher too slow; cutting it off");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
    }

    /// The state was replaced (a snapshot was installed): every watcher's stream ends and it
    /// resumes against the new history.
    pub fn reset(&self, revision: u64) {
        let mut inner = self.lock();
        inner.subscribers.clear();
        inner.published = revision;
        self.progress.send_replace(revision);
    }

    /// Ends every watcher's stream (the replica is stopping).
    pub fn close(&self) {
        self.lock().subscribers.clear();
    }

    /// Registers a watcher of `prefix` after revision `from` (or from now). Returns its stream
    /// and the revision it starts after.
    pub fn subscribe(
        &self,
        db: &ShardDb,
        prefix: String,
        from: Option<u64>,
    ) -> Result<(mpsc::Receiver<StoreEvent>, u64), StoreError> {
        let mut inner = self.lock();
        let marks = db.marks()?;
        let start = from.unwrap_or(inner.published);
        check_watch_start(start, marks.oldest_kept, inner.published)?;
        let mut backlog = if start < inner.published {
            db.events_after(start, &prefix)?
        } else {
            Vec::new()
        };
        let published = inner.published;
        backlog.retain(|e| e.rev <= published);
        let (tx, rx) = mpsc::channel(self.queue.max(backlog.len() + 1));
        for event in backlog {
            // The channel was sized for the whole backlog.
            let _ = tx.try_send(event);
        }
        inner.subscribers.push(Subscriber { prefix, tx });
        Ok((rx, start))
    }
}
