//! Watches: where one starts (synthetic ADDED events or a version to replay from) and how a
//! store event becomes a watch event.

use super::*;

impl ApiCore {
    /// Starts a watch per the request's `resourceVersion`: "" and "0" begin with synthetic
    /// ADDED events for the current state; a version replays everything after it.
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
    ) -> Result<WatchStart, ApiError> {
        let prefix = ObjectKey::prefix(info.group, info.resource, namespace);
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
            Version::Latest | Version::Any => {
                let filters = Filters::parse(info, options)?;
                let (initial, list_version) = self.list_prefix(info, &prefix, &filters).await?;
                let stream = self
                    .store
                    .watch(&prefix, Some(&list_version))
                    .await
                    .map_err(|e| map_store_error(info, "", e))?;
                return Ok(WatchStart { initial, stream });
            }
        };
        let stream = self
            .store
            .watch(&prefix, from.as_ref())
            .await
            .map_err(|e| map_store_error(info, "", e))?;
        Ok(WatchStart {
            initial: Vec::new(),
            stream,
        })
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
        let kind = match event.kind {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        };
        Some((kind, object))
    }
}
