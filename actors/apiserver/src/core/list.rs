//! Lists: served from the watch cache where the request allows it, from the store
//! otherwise, cut into pages, and written out from items encoded once.

use super::*;

impl ApiCore {
    /// A list (one page of it), encoded: its items are shared with the watch cache or the
    /// kept pages, and written out without being copied.
    pub(super) async fn list_encoded(&self, req: &ApiRequest) -> Result<Vec<u8>, ApiError> {
        let info = resources::find(&req.group, &req.version, &req.resource)
            .ok_or(ApiError::UnknownResource)?;
        let namespace = req.namespace.as_deref().filter(|_| info.namespaced);
        let page = self.list_page(info, namespace, &req.options).await?;
        let mut metadata = json!({"resourceVersion": page.version});
        if let Some(next) = page.next {
            metadata["continue"] = json!(next);
            metadata["remainingItemCount"] = json!(page.remaining);
        }
        let metadata_only = req.options.metadata_only;
        let (kind, api_version) = if metadata_only {
            (
                "PartialObjectMetadataList".to_owned(),
                "meta.k8s.io/v1".to_owned(),
            )
        } else {
            (format!("{}List", info.kind), info.api_version())
        };
        let head = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
        let mut out = serde_json::to_vec(&head)
            .map_err(|e| ApiError::Internal(format!("encoding a list: {e}")))?;
        // The head is an object (so it ends with '}'): the items go in before its end.
        out.pop();
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(if metadata_only {
                item.metadata_json()
            } else {
                item.json()
            });
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    /// One page of a list: the first reads the store, the next ones the list it read.
    async fn list_page(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
    ) -> Result<pages::Page, ApiError> {
        let query = pages::query_of(info, namespace, options);
        let limit = options
            .limit
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let now = std::time::Instant::now();
        let at = pages::list_at(options, self.shards() as usize)?;
        if let Some(token) = options.continue_token.as_deref() {
            // Selectors are checked as on a first page, then must match the token's list.
            Filters::parse(info, options)?;
            let mut kept = self.pages.lock().unwrap_or_else(|p| p.into_inner());
            return kept.next_page(token, &query, limit, now);
        }
        if let Some((items, version)) = self.list_cached(info, namespace, options, &at).await? {
            let mut kept = self.pages.lock().unwrap_or_else(|p| p.into_inner());
            return Ok(kept.first_page(items, version, query, limit, now));
        }
        // A version from the future may be one a lagging read has not reached yet: read
        // again for a while before answering that it is too large, as Kubernetes waits.
        let deadline = now + pages::FRESHNESS_WAIT;
        let (items, version) = loop {
            let (items, version) = self.list_composite(info, namespace, options).await?;
            match pages::check_list_version(&at, &version) {
                Ok(()) => {
                    break (
                        items
                            .into_iter()
                            .map(|v| std::sync::Arc::new(cache::Item::new(v)))
                            .collect(),
                        version.encode(),
                    );
                }
                Err(ApiError::Timeout(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let mut kept = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        Ok(kept.first_page(items, version, query, limit, now))
    }

    /// A list served by the watch cache: at "0", or at a version it reaches within
    /// [`pages::FRESHNESS_WAIT`] (504 when it does not). `None` for the lists the store
    /// serves: at the latest version, an exact one, or while there is no cache.
    async fn list_cached(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
        at: &pages::ListAt,
    ) -> Result<Option<(Vec<std::sync::Arc<cache::Item>>, String)>, ApiError> {
        let want = match at {
            pages::ListAt::Any => None,
            pages::ListAt::NotOlderThan(Version::Composite(c)) => Some(c.clone()),
            pages::ListAt::NotOlderThan(Version::Revision(r)) if self.shards() == 1 => {
                Some(CompositeVersion {
                    revisions: vec![*r],
                })
            }
            _ => return Ok(None),
        };
        let filters = Filters::parse(info, options)?;
        let Some(cache) = self.cache().await else {
            return Ok(None);
        };
        if let Some(want) = &want
            && !cache.reach(want, pages::FRESHNESS_WAIT).await
        {
            pages::check_list_version(at, &cache.position())?;
        }
        let (items, version) = cache.list(&info.key_prefix(namespace));
        let items = match info.view {
            // Each object in the view's form (its JSON is the view's, not the cache's).
            Some(view) => items
                .into_iter()
                .map(|item| view.to_view(Value::clone(&item)))
                .filter(|o| filters.matches(o))
                .map(|o| std::sync::Arc::new(cache::Item::new(o)))
                .collect(),
            None => items.into_iter().filter(|o| filters.matches(o)).collect(),
        };
        Ok(Some((items, version.encode())))
    }

    /// The objects that pass the request's selectors, and the list's composite version.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
    ) -> Result<(Vec<Value>, String), ApiError> {
        let (items, version) = self.list_composite(info, namespace, options).await?;
        Ok((items, version.encode()))
    }

    /// [`Self::list`] with the list's version unencoded.
    async fn list_composite(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
    ) -> Result<(Vec<Value>, CompositeVersion), ApiError> {
        let filters = Filters::parse(info, options)?;
        self.list_prefix(info, &info.key_prefix(namespace), &filters)
            .await
    }

    /// The objects under `prefix` that pass `filters`, each with its version, and the list's
    /// composite version.
    pub(super) async fn list_prefix(
        &self,
        info: &ResourceInfo,
        prefix: &str,
        filters: &Filters,
    ) -> Result<(Vec<Value>, CompositeVersion), ApiError> {
        let (items, version) = self
            .store
            .list(prefix)
            .await
            .map_err(|e| map_store_error(info, "", e))?;
        let mut out = Vec::with_capacity(items.len());
        for (_, stored) in items {
            let mut object = with_version(&stored.value, &stored.rev.to_string())?;
            if let Some(view) = info.view {
                object = view.to_view(object);
            }
            if filters.matches(&object) {
                out.push(object);
            }
        }
        Ok((out, version))
    }
}
