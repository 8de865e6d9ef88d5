//! The watch cache: the API server keeps every stored object and a window of recent events
//! in memory, fed by one store watch of the whole key space. Lists at `resourceVersion=0`
//! (or at a version the cache has reached) and watches from a version are served from it,
//! so they do not reach the shards' leaders, and a thousand watchers cost one store watch:
//! each event is decoded once, and encoded once for every watcher that shows it at the
//! cache's position.
//!
//! One cache for all resources, not one per resource: a shard's revision counts the writes
//! of every resource in it, so only a cache that sees them all knows that it has reached a
//! version a list of the store returned.
//!
//! The cache is made on the first request that can use it and lives as long as the API
//! server. A watch from a version older than the window goes to the store, as before.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use shoal_core::CompositeVersion;
use shoal_store::{EventKind, Store, StoreError, StoreEvent, Stored};
use tokio::sync::{OnceCell, broadcast};

/// Every stored key starts with this.
const KEYS: &str = "/";

/// Events kept for watches that start from a version.
pub const WINDOW: usize = 8192;

/// How many events a watcher may fall behind the live stream before it is ended (its client
/// resumes from the last version it saw, as from any ended watch).
const LAG: usize = 8192;

/// The longest a cache waits before it tries its store watch again after an error.
const MOST_BACKOFF: Duration = Duration::from_secs(1);

/// An object as lists show it, and its JSON, encoded by the first list that writes it out
/// and shared by every list after.
#[derive(Debug)]
pub struct Item {
    value: Value,
    json: OnceLock<Vec<u8>>,
    metadata_json: OnceLock<Vec<u8>>,
}

impl Item {
    pub fn new(value: Value) -> Item {
        Item {
            value,
            json: OnceLock::new(),
            metadata_json: OnceLock::new(),
        }
    }

    /// The object as JSON.
    pub fn json(&self) -> &[u8] {
        self.json
            .get_or_init(|| serde_json::to_vec(&self.value).unwrap_or_default())
    }

    /// The object's metadata as a `PartialObjectMetadata`, as JSON.
    pub fn metadata_json(&self) -> &[u8] {
        self.metadata_json.get_or_init(|| {
            serde_json::to_vec(&crate::objects::partial_metadata(&self.value)).unwrap_or_default()
        })
    }
}

impl std::ops::Deref for Item {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// One change, as the cache keeps it.
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventKind,
    pub shard: u32,
    pub rev: u64,
    pub key: String,
    /// The object (the last state, for a deletion), with its own revision as its version.
    pub object: Arc<Item>,
    /// The cache's position once this event is applied.
    pub position: CompositeVersion,
    /// The watch line of this event at `position` in each [`Shown`] form (indexed by it),
    /// made by the first watcher that sends it.
    lines: [OnceLock<Bytes>; 2],
}

/// What a watch event shows of its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// The whole object.
    Object = 0,
    /// Its metadata alone, as a `PartialObjectMetadata`.
    Metadata = 1,
}

impl Shown {
    /// `object` in this form.
    pub fn form(self, object: Value) -> Value {
        match self {
            Shown::Object => object,
            Shown::Metadata => crate::objects::partial_metadata(&object),
        }
    }
}

/// A watch event's `type`.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Added => "ADDED",
        EventKind::Modified => "MODIFIED",
        EventKind::Deleted => "DELETED",
    }
}

/// One watch event as a line of JSON.
pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `object` with `version` as its resource version.
pub fn at_version(object: &Value, version: &str) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(version));
    }
    object
}

impl CacheEvent {
    /// The object with the watch position `version` as its version.
    pub fn object_at(&self, version: &str) -> Value {
        at_version(&self.object, version)
    }

    /// The event's watch line at the cache's position, showing `shown` of the object,
    /// encoded once for every watcher.
    pub fn shared_line(&self, shown: Shown) -> Bytes {
        self.lines[shown as usize]
            .get_or_init(|| {
                event_line(
                    kind_name(self.kind),
                    &shown.form(self.object_at(&self.position.encode())),
                )
            })
            .clone()
    }
}

/// Whether every shard of `have` is at or past `want`'s.
pub fn covers(have: &CompositeVersion, want: &CompositeVersion) -> bool {
    want.revisions.len() == have.revisions.len()
        && want
            .revisions
            .iter()
            .zip(&have.revisions)
            .all(|(w, h)| h >= w)
}

/// The cached state.
struct State {
    objects: BTreeMap<String, Arc<Item>>,
    position: CompositeVersion,
    /// Recent events, oldest first.
    window: VecDeque<Arc<CacheEvent>>,
    /// Per shard, the revision after which the window holds every event.
    floor: Vec<u64>,
    live: broadcast::Sender<Arc<CacheEvent>>,
}

impl State {
    fn new(items: Vec<(String, Stored)>, position: CompositeVersion) -> State {
        let objects = items
            .into_iter()
            .filter_map(|(key, stored)| {
                Some((key, Arc::new(Item::new(decode(&stored.value, stored.rev)?))))
            })
            .collect();
        State {
            objects,
            floor: position.revisions.clone(),
            position,
            window: VecDeque::new(),
            live: broadcast::channel(LAG).0,
        }
    }

    /// The objects whose keys start with `prefix`.
    fn under(&self, prefix: &str) -> Vec<Arc<Item>> {
        self.objects
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Applies `event`, whose value `object` is (decoded by the caller, outside the lock
    /// that lists and watches take).
    fn apply(&mut self, event: &StoreEvent, object: Option<Item>) {
        let Some(slot) = self.position.revisions.get_mut(event.shard as usize) else {
            return;
        };
        if event.rev <= *slot {
            return;
        }
        *slot = event.rev;
        let Some(object) = object else {
            return;
        };
        let object = Arc::new(object);
        match event.kind {
            EventKind::Deleted => {
                self.objects.remove(&event.key);
            }
            EventKind::Added | EventKind::Modified => {
                self.objects.insert(event.key.clone(), object.clone());
            }
        }
        let event = Arc::new(CacheEvent {
            kind: event.kind,
            shard: event.shard,
            rev: event.rev,
            key: event.key.clone(),
            object,
            position: self.position.clone(),
            lines: Default::default(),
        });
        if self.window.len() >= WINDOW
            && let Some(old) = self.window.pop_front()
            && let Some(floor) = self.floor.get_mut(old.shard as usize)
        {
            *floor = (*floor).max(old.rev);
        }
        self.window.push_back(event.clone());
        // No receiver is not an error: nobody watches.
        let _ = self.live.send(event);
    }
}

/// A stored value as an object with its revision as its version; `None` for a value that is
/// not an object (the store holds only what the API server wrote, which always is).
fn decode(value: &[u8], rev: u64) -> Option<Value> {
    let object: Value = serde_json::from_slice(value).ok()?;
    object
        .is_object()
        .then(|| at_version(&object, &rev.to_string()))
}

/// The cache.
pub struct WatchCache {
    state: Mutex<State>,
    /// Woken whenever the position moves.
    moved: tokio::sync::Notify,
    /// The task that applies the store's events, set once the cache exists.
    feeder: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        if let Some(feeder) = self.feeder.get() {
            feeder.abort();
        }
    }
}

/// A watch served by the cache.
pub struct CacheWatch {
    replay: VecDeque<Arc<CacheEvent>>,
    live: broadcast::Receiver<Arc<CacheEvent>>,
    /// Where this watcher is: every event at or before it has been passed.
    position: CompositeVersion,
    /// Only keys under this (a namespace's) are shown.
    prefix: String,
}

impl CacheWatch {
    /// The next event under the watch's prefix, and whether the watcher's position is the
    /// event's own (so the shared line may be sent); `None` when the stream ended (the
    /// watcher fell too far behind, or the cache started over).
    pub async fn next(&mut self) -> Option<(Arc<CacheEvent>, bool)> {
        loop {
            let event = match self.replay.pop_front() {
                Some(event) => event,
                None => self.live.recv().await.ok()?,
            };
            let Some(mine) = self.position.revisions.get(event.shard as usize) else {
                continue;
            };
            if event.rev <= *mine {
                continue;
            }
            let mut exact = true;
            for (mine, theirs) in self
                .position
                .revisions
                .iter_mut()
                .zip(&event.position.revisions)
            {
                if *theirs >= *mine {
                    *mine = *theirs;
                } else {
                    exact = false;
                }
            }
            if event.key.starts_with(&self.prefix) {
                return Some((event, exact));
            }
        }
    }

    /// Where the watcher is.
    pub fn position(&self) -> &CompositeVersion {
        &self.position
    }
}

impl WatchCache {
    /// The objects under `prefix` and the position they are at.
    pub fn list(&self, prefix: &str) -> (Vec<Arc<Item>>, CompositeVersion) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.under(prefix), state.position.clone())
    }

    /// The cache's position.
    pub fn position(&self) -> CompositeVersion {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .position
            .clone()
    }

    /// Waits until the cache has reached `want`, for at most `wait`; whether it has.
    pub async fn reach(&self, want: &CompositeVersion, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let moved = self.moved.notified();
            if covers(&self.position(), want) {
                return true;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return covers(&self.position(), want);
            }
        }
    }

    /// A watch of the keys under `prefix` from `from`, or `None` when the window does not
    /// reach back that far.
    pub fn watch_from(&self, prefix: &str, from: &CompositeVersion) -> Option<CacheWatch> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if from.revisions.len() != state.floor.len()
            || from
                .revisions
                .iter()
                .zip(&state.floor)
                .any(|(f, floor)| f < floor)
        {
            return None;
        }
        let replay = state
            .window
            .iter()
            .filter(|e| {
                from.revisions
                    .get(e.shard as usize)
                    .is_some_and(|f| e.rev > *f)
            })
            .cloned()
            .collect();
        Some(CacheWatch {
            replay,
            live: state.live.subscribe(),
            position: from.clone(),
            prefix: prefix.to_owned(),
        })
    }

    /// The objects under `prefix` now, and a watch of what follows them.
    pub fn snapshot_and_watch(&self, prefix: &str) -> (Vec<Arc<Item>>, CacheWatch) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let items = state.under(prefix);
        let watch = CacheWatch {
            replay: VecDeque::new(),
            live: state.live.subscribe(),
            position: state.position.clone(),
            prefix: prefix.to_owned(),
        };
        (items, watch)
    }
}

/// The watch cache, made on first use.
#[derive(Default)]
pub struct LazyCache {
    made: OnceCell<Arc<WatchCache>>,
}

impl std::fmt::Debug for LazyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCache")
            .field("made", &self.made.initialized())
            .finish()
    }
}

impl LazyCache {
    /// The cache, made (by one list of the store, then a watch from it) if this is its
    /// first use.
    pub async fn get(&self, store: &Store) -> Result<Arc<WatchCache>, StoreError> {
        self.made
            .get_or_try_init(|| start(store.clone(), KEYS.to_owned()))
            .await
            .cloned()
    }
}

async fn start(store: Store, prefix: String) -> Result<Arc<WatchCache>, StoreError> {
    let (items, position) = store.list(&prefix).await?;
    let stream = store.watch(&prefix, Some(&position)).await?;
    let cache = Arc::new(WatchCache {
        state: Mutex::new(State::new(items, position)),
        moved: tokio::sync::Notify::new(),
        feeder: OnceLock::new(),
    });
    // The feeder starts only once the cache exists. Started while it was being made (on
    // another worker thread), it could take the first event before the cache could be
    // reached, read that as the cache being gone, and stop: the cache would then never move
    // again.
    let feeder = tokio::spawn(feed(Arc::downgrade(&cache), store, prefix, stream));
    let _ = cache.feeder.set(feeder.abort_handle());
    Ok(cache)
}

/// Applies the store's events to the cache for as long as it exists. A store watch that
/// ends (a shard restarted) is resumed from the cache's position; when the store no longer
/// has the events since (410), the cache lists again and starts over, ending every watch it
/// serves so that their clients resume.
async fn feed(
    cache: Weak<WatchCache>,
    store: Store,
    prefix: String,
    mut stream: shoal_store::StoreWatch,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        while let Some(event) = stream.next().await {
            let Some(cache) = cache.upgrade() else {
                return;
            };
            let object = decode(&event.value, event.rev).map(Item::new);
            cache
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&event, object);
            cache.moved.notify_waiters();
            backoff = Duration::from_millis(10);
        }
        loop {
            let Some(position) = cache.upgrade().map(|c| c.position()) else {
                return;
            };
            match store.watch(&prefix, Some(&position)).await {
                Ok(resumed) => {
                    stream = resumed;
                    break;
                }
                Err(StoreError::Gone { .. }) => match relist(&store, &prefix).await {
                    Ok((state, resumed)) => {
                        let Some(cache) = cache.upgrade() else {
                            return;
                        };
                        tracing::info!(%prefix, "the watch cache started over from a new list");
                        // Replacing the state drops its sender: every watch it serves ends.
                        *cache.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
                        cache.moved.notify_waiters();
                        stream = resumed;
                        break;
                    }
                    Err(err) => tracing::debug!(%prefix, %err, "the watch cache cannot list"),
                },
                Err(err) => tracing::debug!(%prefix, %err, "the watch cache cannot watch"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MOST_BACKOFF);
        }
    }
}

async fn relist(
    store: &Store,
    prefix: &str,
) -> Result<(State, shoal_store::StoreWatch), StoreError> {
    let (items, position) = store.list(prefix).await?;
    let stream = store.watch(prefix, Some(&position)).await?;
    Ok((State::new(items, position), stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(shard: u32, rev: u64, kind: EventKind, name: &str, ns: &str) -> StoreEvent {
        StoreEvent {
            shard,
            rev,
            kind,
            key: format!("/core/pods/{ns}/{name}"),
            value: Arc::new(
                serde_json::to_vec(&json!({
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns}
                }))
                .unwrap_or_default(),
            ),
        }
    }

    impl State {
        /// Applies an event as the feeder does.
        fn apply_raw(&mut self, event: &StoreEvent) {
            self.apply(event, decode(&event.value, event.rev).map(Item::new));
        }
    }

    fn version(revisions: &[u64]) -> CompositeVersion {
        CompositeVersion {
            revisions: revisions.to_vec(),
        }
    }

    fn cache(state: State) -> WatchCache {
        WatchCache {
            state: Mutex::new(state),
            moved: tokio::sync::Notify::new(),
            feeder: OnceLock::new(),
        }
    }

    fn names(items: &[Arc<Item>]) -> Vec<String> {
        items
            .iter()
            .map(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn events_change_the_objects_and_move_the_position() {
        let c = cache(State::new(Vec::new(), version(&[3, 5])));
        {
            let mut s = c.state.lock().expect("the state");
            s.apply_raw(&event(0, 4, EventKind::Added, "a", "x"));
            s.apply_raw(&event(1, 6, EventKind::Added, "b", "y"));
            s.apply_raw(&event(0, 7, EventKind::Deleted, "a", "x"));
            // A repeated event changes nothing.
            s.apply_raw(&event(1, 6, EventKind::Deleted, "b", "y"));
        }
        let (items, at) = c.list("/core/pods/");
        assert_eq!(names(&items), ["b"]);
        assert_eq!(at, version(&[7, 6]));
        assert_eq!(items[0]["metadata"]["resourceVersion"], "6");
        assert!(c.list("/core/pods/x/").0.is_empty());
    }

    #[tokio::test]
    async fn a_watch_replays_what_follows_its_version_once_then_follows_live() {
        let c = cache(State::new(Vec::new(), version(&[0, 0])));
        {
            let mut s = c.state.lock().expect("the state");
            s.apply_raw(&event(0, 1, EventKind::Added, "a", "x"));
            s.apply_raw(&event(1, 1, EventKind::Added, "b", "x"));
            s.apply_raw(&event(0, 2, EventKind::Modified, "a", "x"));
        }
        // From [2, 0]: shard 0's events are already seen.
        let mut w = c
            .watch_from("/core/pods/", &version(&[2, 0]))
            .expect("a watch");
        let (e, exact) = w.next().await.expect("an event");
        // The watcher is ahead of the event's position ([1, 1]) on shard 0: it shows the
        // event at its own position, not with the shared line.
        assert_eq!((e.shard, e.rev, exact), (1, 1, false));
        assert_eq!(w.position(), &version(&[2, 1]));
        c.state
            .lock()
            .expect("the state")
            .apply_raw(&event(1, 2, EventKind::Deleted, "b", "x"));
        let (e, exact) = w.next().await.expect("an event");
        assert_eq!((e.kind, e.rev, exact), (EventKind::Deleted, 2, true));
        let line: Value = serde_json::from_slice(&e.shared_line(Shown::Object)).expect("JSON");
        assert_eq!(line["type"], "DELETED");
        assert_eq!(line["object"]["metadata"]["resourceVersion"], "2.2");
    }

    #[tokio::test]
    async fn an_events_metadata_line_is_made_once_at_the_cache_position() {
        let c = cache(State::new(Vec::new(), version(&[0, 0])));
        {
            let mut s = c.state.lock().expect("the state");
            s.apply_raw(&event(0, 1, EventKind::Added, "a", "x"));
            s.apply_raw(&event(1, 3, EventKind::Modified, "b", "y"));
        }
        let mut w = c
            .watch_from("/core/pods/", &version(&[1, 0]))
            .expect("a watch");
        let (e, exact) = w.next().await.expect("an event");
        assert_eq!((e.shard, e.rev, exact), (1, 3, true));
        let first = e.shared_line(Shown::Metadata);
        let line: Value = serde_json::from_slice(&first).expect("JSON");
        assert_eq!(line["type"], "MODIFIED");
        assert_eq!(line["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(line["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(line["object"]["metadata"]["name"], "b");
        assert_eq!(line["object"]["metadata"]["resourceVersion"], "1.3");
        assert!(line["object"].get("spec").is_none());
        assert!(first.ends_with(b"\n"));
        // Every later watcher gets the same bytes, not a new encoding.
        assert_eq!(e.shared_line(Shown::Metadata).as_ptr(), first.as_ptr());
        // The full line is apart from it.
        let full: Value = serde_json::from_slice(&e.shared_line(Shown::Object)).expect("JSON");
        assert_eq!(full["object"]["kind"], "Pod");
    }

    #[tokio::test]
    async fn a_watch_from_before_the_window_is_refused() {
        let c = cache(State::new(Vec::new(), version(&[0])));
        {
            let mut s = c.state.lock().expect("the state");
            for rev in 1..=(WINDOW as u64 + 10) {
                s.apply_raw(&event(0, rev, EventKind::Added, &format!("p{rev}"), "x"));
            }
        }
        assert!(c.watch_from("/core/pods/", &version(&[5])).is_none());
        assert!(c.watch_from("/core/pods/", &version(&[10])).is_some());
        // A version of another shard count is not one of this cache's.
        assert!(c.watch_from("/core/pods/", &version(&[10, 10])).is_none());
    }

    #[tokio::test]
    async fn a_namespaced_watch_skips_other_namespaces_but_moves_past_them() {
        let c = cache(State::new(Vec::new(), version(&[0])));
        let (_, mut w) = c.snapshot_and_watch("/core/pods/x/");
        {
            let mut s = c.state.lock().expect("the state");
            s.apply_raw(&event(0, 1, EventKind::Added, "a", "y"));
            s.apply_raw(&event(0, 2, EventKind::Added, "b", "x"));
        }
        let (e, exact) = w.next().await.expect("an event");
        assert_eq!((e.rev, exact), (2, true));
        assert_eq!(w.position(), &version(&[2]));
    }

    #[tokio::test]
    async fn a_cache_started_over_ends_its_watches() {
        let c = cache(State::new(Vec::new(), version(&[0])));
        let (_, mut w) = c.snapshot_and_watch("/core/pods/");
        *c.state.lock().expect("the state") = State::new(Vec::new(), version(&[9]));
        assert!(w.next().await.is_none());
    }

    #[tokio::test]
    async fn reaching_a_version_waits_for_the_events() {
        let c = Arc::new(cache(State::new(Vec::new(), version(&[0]))));
        assert!(!c.reach(&version(&[1]), Duration::from_millis(20)).await);
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.reach(&version(&[1]), Duration::from_secs(30)).await })
        };
        c.state
            .lock()
            .expect("the state")
            .apply_raw(&event(0, 1, EventKind::Added, "a", "x"));
        // A waiter that began waiting before the event is woken; one that had not yet looked
        // sees the new position when it does.
        c.moved.notify_waiters();
        assert!(waiter.await.expect("the waiter"));
    }
}
