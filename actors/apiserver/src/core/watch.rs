//! Watches: where one starts (synthetic ADDED events or a version to replay from) and how a
//! store event becomes a watch event.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::*;

/// Where a watch's events come from: the watch cache, or (for a watch at the latest version
/// or one from before the cache's window) the store.
pub enum Live {
    Store(StoreWatch),
    Cache(cache::CacheWatch),
    /// The stored objects of a view's resource, each shown in the view's form.
    View(Box<Live>, crate::resources::View),
}

/// One event of a watch.
pub enum Change {
    /// From the store: its type and the object at the watch's position.
    Store { kind: &'static str, object: Value },
    /// From the cache: the event and the watcher's position, when it is not the event's own.
    Cached {
        event: Arc<cache::CacheEvent>,
        own_position: Option<String>,
    },
}

impl Change {
    /// The object at the watch's position.
    pub fn object(&self) -> Value {
        match self {
            Change::Store { object, .. } => object.clone(),
            Change::Cached {
                event,
                own_position: Some(at),
            } => event.object_at(at),
            Change::Cached { event, .. } => event.object_at(&event.position.encode()),
        }
    }

    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Store { kind, .. } => kind,
            Change::Cached { event, .. } => cache::kind_name(event.kind),
        }
    }

    /// The event as a line of JSON, showing `shown` of the object.
    pub fn line(&self, shown: Shown) -> Bytes {
        match self {
            Change::Cached {
                event,
                own_position: None,
            } => event.shared_line(shown),
            other => cache::event_line(other.kind(), &shown.form(other.object())),
        }
    }
}

impl Live {
    /// The next event that passes `filters`; `None` when the stream ended (the client
    /// resumes from the last version it saw).
    pub async fn next(&mut self, core: &ApiCore, filters: &Filters) -> Option<Change> {
        match self {
            Live::Store(stream) => loop {
                let event = stream.next().await?;
                let position = stream.position().clone();
                if let Some((kind, object)) = core.watch_event(filters, &event, &position) {
                    return Some(Change::Store { kind, object });
                }
            },
            Live::Cache(watch) => loop {
                let (event, exact) = watch.next().await?;
                if filters.matches(&event.object) {
                    let own_position = (!exact).then(|| watch.position().encode());
                    return Some(Change::Cached {
                        event,
                        own_position,
                    });
                }
            },
            Live::View(inner, view) => loop {
                let change = Box::pin(inner.next(core, &Filters::everything())).await?;
                let object = view.to_view(change.object());
                if filters.matches(&object) {
                    return Some(Change::Store {
                        kind: change.kind(),
                        object,
                    });
                }
            },
        }
    }

    /// The version every event up to which has been passed (a bookmark's version).
    pub fn position(&self) -> String {
        match self {
            Live::Store(stream) => stream.position().encode(),
            Live::Cache(watch) => watch.position().encode(),
            Live::View(inner, _) => inner.position(),
        }
    }
}

/// The 504 for a watch from a version the cache does not reach in time.
fn too_large(from: &CompositeVersion, position: &CompositeVersion) -> ApiError {
    ApiError::Timeout(format!(
        "Too large resource version: {}, current: {}",
        from.encode(),
        position.encode()
    ))
}

impl WatchStart {
    /// A watch of changes only.
    fn changes(live: Live) -> WatchStart {
        WatchStart {
            initial: Vec::new(),
            live,
            marks_initial_end: false,
        }
    }

    /// The cache's objects under `prefix` that pass `filters`, then its changes after them.
    fn from_cache(cache: &cache::WatchCache, prefix: &str, filters: &Filters) -> WatchStart {
        let (items, watch) = cache.snapshot_and_watch(prefix);
        WatchStart {
            initial: filters.keep(&items),
            live: Live::Cache(watch),
            marks_initial_end: false,
        }
    }
}

impl ApiCore {
    /// The watch cache, made on first use; `None` when the store cannot be read to make it
    /// (the caller reads the store instead).
    pub(crate) async fn cache(&self) -> Option<Arc<cache::WatchCache>> {
        match self.watch_cache.get(&self.store).await {
            Ok(cache) => Some(cache),
            Err(err) => {
                tracing::debug!(%err, "no watch cache yet; reading the store");
                None
            }
        }
    }

    /// Starts a watch per the request's `resourceVersion`. "" begins with synthetic ADDED
    /// events for the current state, read from the store; "0" does the same from the watch
    /// cache; a version replays everything after it, from the cache when its window reaches
    /// back that far.
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
    ) -> Result<WatchStart, ApiError> {
        pages::check_watch_options(options)?;
        let Some(view) = info.view else {
            return self.watch_stored(info, namespace, options).await;
        };
        // The stored objects, unfiltered: the request's selectors name the view's fields.
        let unfiltered = RequestOptions {
            label_selector: None,
            field_selector: None,
            ..options.clone()
        };
        let filters = Filters::parse(info, options)?;
        let start = self
            .watch_stored(view.stored(), namespace, &unfiltered)
            .await?;
        Ok(WatchStart {
            initial: start
                .initial
                .into_iter()
                .map(|o| view.to_view(o))
                .filter(|o| filters.matches(o))
                .collect(),
            live: Live::View(Box::new(start.live), view),
            marks_initial_end: start.marks_initial_end,
        })
    }

    /// [`Self::watch`] of a resource's own stored objects.
    async fn watch_stored(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
    ) -> Result<WatchStart, ApiError> {
        let prefix = info.key_prefix(namespace);
        let version = Version::parse(
            options.resource_version.as_deref().unwrap_or_default(),
            self.shards() as usize,
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let from = match version {
            Version::Composite(c) => Some(c),
            Version::Revision(rev) if self.shards() == 1 => Some(CompositeVersion {
                revisions: vec![rev],
            }),
            // A single revision from one object of a many-shard store names no position in
            // the others: watch from now.
            Version::Revision(_) => None,
            Version::Any if options.send_initial_events == Some(false) => {
                let cache = self.cache().await;
                return match cache.and_then(|c| c.watch_from(&prefix, &c.position())) {
                    Some(watch) => Ok(WatchStart::changes(Live::Cache(watch))),
                    None => self.watch_store(info, &prefix, None).await,
                };
            }
            Version::Any => {
                let filters = Filters::parse(info, options)?;
                let mut start = match self.cache().await {
                    Some(cache) => WatchStart::from_cache(&cache, &prefix, &filters),
                    None => self.watch_listed(info, &prefix, &filters).await?,
                };
                start.marks_initial_end = options.send_initial_events == Some(true);
                return Ok(start);
            }
            Version::Latest if options.send_initial_events == Some(false) => {
                return self.watch_store(info, &prefix, None).await;
            }
            Version::Latest => {
                let filters = Filters::parse(info, options)?;
                let mut start = self.watch_listed(info, &prefix, &filters).await?;
                start.marks_initial_end = options.send_initial_events == Some(true);
                return Ok(start);
            }
        };
        if options.send_initial_events == Some(true) {
            // The objects as of a version not older than the one asked for, then changes.
            let filters = Filters::parse(info, options)?;
            let mut start = match (self.cache().await, &from) {
                (Some(cache), Some(from)) => {
                    if !cache.reach(from, pages::FRESHNESS_WAIT).await {
                        return Err(too_large(from, &cache.position()));
                    }
                    WatchStart::from_cache(&cache, &prefix, &filters)
                }
                // No cache, or no position named: the store's latest list is not older.
                _ => self.watch_listed(info, &prefix, &filters).await?,
            };
            start.marks_initial_end = true;
            return Ok(start);
        }
        if let Some(cache) = self.cache().await {
            let from = match from {
                Some(from) => from,
                None => cache.position(),
            };
            if !cache.reach(&from, pages::FRESHNESS_WAIT).await {
                return Err(too_large(&from, &cache.position()));
            }
            if let Some(watch) = cache.watch_from(&prefix, &from) {
                return Ok(WatchStart::changes(Live::Cache(watch)));
            }
            return self.watch_store(info, &prefix, Some(&from)).await;
        }
        self.watch_store(info, &prefix, from.as_ref()).await
    }

    /// A watch that starts with the objects a list of the store shows.
    async fn watch_listed(
        &self,
        info: &ResourceInfo,
        prefix: &str,
        filters: &Filters,
    ) -> Result<WatchStart, ApiError> {
        let (initial, list_version) = self.list_prefix(info, prefix, filters).await?;
        let mut start = self.watch_store(info, prefix, Some(&list_version)).await?;
        start.initial = initial;
        Ok(start)
    }

    async fn watch_store(
        &self,
        info: &ResourceInfo,
        prefix: &str,
        from: Option<&CompositeVersion>,
    ) -> Result<WatchStart, ApiError> {
        let stream = self
            .store
            .watch(prefix, from)
            .await
            .map_err(|e| map_store_error(info, "", e))?;
        Ok(WatchStart::changes(Live::Store(stream)))
    }

    /// A store event as a watch event (`type`, object with the watch position as its version),
    /// or `None` when the selectors filter it out.
    pub fn watch_event(
        &self,
        filters: &Filters,
        event: &StoreEvent,
        position: &CompositeVersion,
    ) -> Option<(&'static str, Value)> {
        let object = with_version(&event.value, &position.encode()).ok()?;
        if !filters.matches(&object) {
            return None;
        }
        Some((cache::kind_name(event.kind), object))
    }
}
