//! Watches over HTTP: a task per watch turns its events (and bookmarks) into lines of
//! JSON, joined into few writes when the watcher is busy, until the watch's deadline, its
//! source's end or its client's going.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use shoal_core::{ApiError, RequestOptions};

use super::{HttpApi, ResourcePath, TABLE_CONTENT_TYPE, error_response, parse_bool};
use crate::core::{ApiCore, Filters, Live, Shown};
use crate::negotiate::Representation;
use crate::table::{IncludeObject, render};

/// One watch event as a line of JSON.
fn event_line(kind: &str, object: Value) -> Bytes {
    crate::core::cache::event_line(kind, &object)
}

/// The most a watch joins into one write: events waiting for a watcher that has fallen
/// behind are sent together, up to this size.
const WATCH_BATCH_BYTES: usize = 256 * 1024;

/// How often at most a busy watch writes: events that come within this time of its last
/// write wait for the next one, joined with those that come meanwhile. A watch that was idle
/// writes at once.
const WATCH_COALESCE: Duration = Duration::from_millis(10);

/// Joins the events `live` has ready (without waiting) to `batch`, until it is full; whether
/// the source ended. A source that ends is not asked again (a cache watch that fell too far
/// behind would go on after a gap): the watch ends after this write.
fn join_waiting(
    live: &mut Live,
    core: &ApiCore,
    filters: &Filters,
    batch: &mut WatchBatch,
    shown: Shown,
) -> bool {
    while batch.has_room() {
        match live.next(core, filters).now_or_never() {
            Some(Some(change)) => batch.push(change.line(shown)),
            Some(None) => return true,
            None => return false,
        }
    }
    false
}

/// Watch lines joined into one chunk of the response.
struct WatchBatch {
    /// The first line, kept as it is while it is the only one (a shared line is not copied).
    first: Bytes,
    more: Option<bytes::BytesMut>,
}

impl WatchBatch {
    fn new(first: Bytes) -> WatchBatch {
        WatchBatch { first, more: None }
    }

    fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), |m| m.len())
    }

    fn has_room(&self) -> bool {
        self.len() < WATCH_BATCH_BYTES
    }

    fn push(&mut self, line: Bytes) {
        let first = &self.first;
        self.more
            .get_or_insert_with(|| {
                let mut joined = bytes::BytesMut::with_capacity(first.len() * 4);
                joined.extend_from_slice(first);
                joined
            })
            .extend_from_slice(&line);
    }

    fn finish(self) -> Bytes {
        match self.more {
            Some(joined) => joined.freeze(),
            None => self.first,
        }
    }
}

/// How often a watch that allows bookmarks gets one (Kubernetes: every minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// How long before a watch's timeout its last bookmark is sent, so that the client knows
/// where to resume (Kubernetes: two seconds).
const BOOKMARK_BEFORE_END: Duration = Duration::from_secs(2);

/// When a watch ending at `deadline` gets its next bookmark, after `now`.
fn next_bookmark(
    now: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> tokio::time::Instant {
    let periodic = now + BOOKMARK_EVERY;
    match deadline.checked_sub(BOOKMARK_BEFORE_END) {
        Some(last) if last > now => periodic.min(last),
        _ => periodic,
    }
}

pub(super) async fn watch(
    api: Arc<HttpApi>,
    target: ResourcePath<'_>,
    options: RequestOptions,
    query: &HashMap<String, String>,
    representation: Representation,
) -> Response {
    let info = target.info;
    let filters = match Filters::parse(info, &options) {
        Ok(f) => f,
        Err(err) => return error_response(&err),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let include = IncludeObject::parse(query.get("includeObject").map(String::as_str));
    let table = representation == Representation::Table;
    let shown = match representation {
        Representation::Metadata(_) => Shown::Metadata,
        _ => Shown::Object,
    };
    let bookmarks = parse_bool(query.get("allowWatchBookmarks")) && !table;
    let start = match api.core.watch(info, target.namespace, &options).await {
        Ok(start) => start,
        Err(err @ (ApiError::Gone(_) | ApiError::Timeout(_))) => {
            let line = event_line("ERROR", err.to_status());
            return streaming_response(
                futures::stream::iter([Ok::<_, Infallible>(line)]).boxed(),
                representation,
            );
        }
        Err(err) => return error_response(&err),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let core = api.core.clone();
    let render_one = move |object: Value, first: bool| -> Value {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        render(info, &[object], &rv, include, first)
    };
    let bookmark = move |version: String, initial_end: bool| -> Bytes {
        let mut metadata = json!({"resourceVersion": version});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            "BOOKMARK",
            json!({
                "kind": info.kind,
                "apiVersion": info.api_version(),
                "metadata": metadata,
            }),
        )
    };
    // The events are made by a task of the watch's own, which ends with the watch: at its
    // deadline, when the source ends it, or when the client goes (the body is dropped).
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut first = true;
        for object in start.initial {
            let line = if table {
                event_line("ADDED", render_one(object, first))
            } else {
                event_line("ADDED", shown.form(object))
            };
            first = false;
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut live = start.live;
        if start.marks_initial_end && bookmarks {
            // Where the initial events end: the version they show, before any change.
            if tx.send(bookmark(live.position(), true)).await.is_err() {
                return;
            }
        }
        let mut bookmark_at = next_bookmark(tokio::time::Instant::now(), deadline);
        // Made once, not per event: a timer armed and cleared for every event of every
        // watcher is a large share of what a busy watch costs.
        let bookmark_due = tokio::time::sleep_until(bookmark_at);
        let end = tokio::time::sleep_until(deadline);
        tokio::pin!(bookmark_due, end);
        let mut ended = false;
        let now = tokio::time::Instant::now();
        let mut last_write = now.checked_sub(WATCH_COALESCE).unwrap_or(now);
        loop {
            let line = tokio::select! {
                change = live.next(&core, &filters) => match change {
                    Some(change) if table => event_line(change.kind(), render_one(change.object(), first)),
                    Some(change) => {
                        // Full objects or metadata alone: either way the line of an event
                        // at the cache's position is encoded once for every watcher.
                        let mut batch = WatchBatch::new(change.line(shown));
                        ended = join_waiting(&mut live, &core, &filters, &mut batch, shown);
                        // A busy watch writes at most once per WATCH_COALESCE: what comes
                        // meanwhile goes out in that write.
                        if !ended && batch.has_room() && last_write.elapsed() < WATCH_COALESCE {
                            tokio::time::sleep_until(last_write + WATCH_COALESCE).await;
                            ended = join_waiting(&mut live, &core, &filters, &mut batch, shown);
                        }
                        last_write = tokio::time::Instant::now();
                        batch.finish()
                    }
                    None => return,
                },
                () = &mut bookmark_due, if bookmarks => {
                    bookmark_at = next_bookmark(tokio::time::Instant::now(), deadline);
                    bookmark_due.as_mut().reset(bookmark_at);
                    bookmark(live.position(), false)
                }
                () = &mut end => return,
                () = tx.closed() => return,
            };
            first = false;
            if tx.send(line).await.is_err() || ended {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut batch = WatchBatch::new(first);
        while batch.has_room() {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        Some((Ok::<_, Infallible>(batch.finish()), rx))
    });
    streaming_response(stream.boxed(), representation)
}

fn streaming_response(
    stream: futures::stream::BoxStream<'static, Result<Bytes, Infallible>>,
    representation: Representation,
) -> Response {
    let mut response = Response::new(Body::from_stream(stream));
    let content_type = match representation {
        Representation::Table => TABLE_CONTENT_TYPE,
        Representation::Metadata(_) => {
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
        }
        _ => "application/json",
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_watch_lines_are_joined_up_to_a_size() {
        let one = Bytes::from_static(b"{\"type\":\"ADDED\"}\n");
        let alone = WatchBatch::new(one.clone()).finish();
        // A line sent alone is the shared one, not a copy.
        assert_eq!(alone.as_ptr(), one.as_ptr());

        let mut batch = WatchBatch::new(one.clone());
        batch.push(Bytes::from_static(b"{\"type\":\"DELETED\"}\n"));
        assert_eq!(
            &batch.finish()[..],
            b"{\"type\":\"ADDED\"}\n{\"type\":\"DELETED\"}\n"
        );

        let mut full = WatchBatch::new(one.clone());
        while full.has_room() {
            full.push(one.clone());
        }
        let joined = full.finish();
        assert!(joined.len() >= WATCH_BATCH_BYTES);
        assert!(joined.len() < WATCH_BATCH_BYTES + one.len());
    }
}
