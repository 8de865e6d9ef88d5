//! The REST layer: turns HTTP into [`ApiRequest`]s for the core, and the core's answers into
//! JSON, YAML or Table responses; streams watches.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use shoal_core::{ApiError, ApiRequest, PatchKind, RequestOptions, Verb};

use crate::core::{ApiCore, Filters};
use crate::negotiate::{MetadataForm, Representation, body_to_json, choose, patch_kind};
use crate::resources::{self, ResourceInfo};
use crate::table::{IncludeObject, render};
use crate::tls::Identity;
use crate::{admin, discovery};

/// The Kubernetes version this API speaks.
pub const KUBE_MINOR: &str = "32";

/// What the HTTP layer needs.
pub struct HttpApi {
    pub core: ApiCore,
    /// `host:port` clients reach this server at (for `/api` discovery).
    pub server_address: String,
}

const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn respond_json(code: u16, value: &Value, representation: Representation) -> Response {
    let (content_type, body) = match representation {
        Representation::Yaml => (
            "application/yaml",
            serde_yaml::to_string(value)
                .unwrap_or_default()
                .into_bytes(),
        ),
        Representation::Table => (
            TABLE_CONTENT_TYPE,
            serde_json::to_vec(value).unwrap_or_default(),
        ),
        // A metadata view is made by the core; what comes here is plain JSON.
        Representation::Json | Representation::Metadata(_) => (
            "application/json",
            serde_json::to_vec(value).unwrap_or_default(),
        ),
    };
    respond_bytes(code, body, content_type)
}

/// A response of `body`, already encoded as `content_type`.
fn respond_bytes(code: u16, body: Vec<u8>, content_type: &'static str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

fn error_response(err: &ApiError) -> Response {
    respond_json(err.code(), &err.to_status(), Representation::Json)
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-shoal.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: Option<&String>) -> bool {
    matches!(
        value.map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// A resource path, parsed.
struct ResourcePath<'a> {
    info: &'static ResourceInfo,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse_resource_path<'a>(
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> Result<ResourcePath<'a>, ApiError> {
    let namespaced_form = rest.len() >= 3
        && rest[0] == "namespaces"
        && resources::find(group, version, rest[2]).is_some_and(|r| r.namespaced);
    let (namespace, rest) = if namespaced_form {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    let info = rest
        .first()
        .and_then(|r| resources::find(group, version, r))
        .ok_or(ApiError::UnknownResource)?;
    if rest.len() > 3 {
        return Err(ApiError::UnknownResource);
    }
    Ok(ResourcePath {
        info,
        namespace,
        name: rest.get(1).copied(),
        subresource: rest.get(2).copied(),
    })
}

fn options_from(
    query: &HashMap<String, String>,
    agent: Option<&str>,
) -> Result<RequestOptions, ApiError> {
    let field_validation = match query.get("fieldValidation").filter(|v| !v.is_empty()) {
        Some(text) => text.parse().map_err(ApiError::BadRequest)?,
        None => Default::default(),
    };
    let force = match query.get("force").map(String::as_str) {
        None => None,
        // As Go's strconv.ParseBool reads it.
        Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Some(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "force must be true or false, not {other:?}"
            )));
        }
    };
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u64),
            Ok(_) => None,
            Err(_) => {
                return Err(ApiError::BadRequest(format!(
                    "limit must be an integer, not {text:?}"
                )));
            }
        },
    };
    Ok(RequestOptions {
        label_selector: query.get("labelSelector").cloned(),
        field_selector: query.get("fieldSelector").cloned(),
        resource_version: query.get("resourceVersion").cloned(),
        resource_version_match: query.get("resourceVersionMatch").cloned(),
        dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
        patch: None,
        field_validation,
        field_manager: query.get("fieldManager").cloned(),
        force,
        agent: agent
            .and_then(|a| a.split('/').next())
            .filter(|a| !a.is_empty())
            .map(|a| a.chars().take(crate::managed::MANAGER_LIMIT).collect()),
        limit,
        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
        send_initial_events: match query.get("sendInitialEvents").map(String::as_str) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "sendInitialEvents must be true or false, not {other:?}"
                )));
            }
        },
        // Set from `Accept` once the request is read.
        metadata_only: false,
    })
}

/// The OpenAPI v2 document: protobuf when asked for (kubectl 1.20's validation), JSON
/// otherwise.
fn openapi_v2(path: &str, accept: Option<&str>) -> Response {
    const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let doc = crate::openapi::swagger();
    if path == "/swagger-2.0.0.pb-v1" || accept.is_some_and(|a| a.contains(PROTOBUF)) {
        let mut response = (StatusCode::OK, doc.protobuf.clone()).into_response();
        // The type asked for is not a valid media type ('@'): the bytes go untyped.
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return response;
    }
    respond_json(200, &doc.json, Representation::Json)
}

/// Serves every API path.
async fn dispatch(
    State(api): State<Arc<HttpApi>>,
    Extension(identity): Extension<Identity>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return (StatusCode::OK, "ok").into_response();
    }
    let Some(user) = identity.user.clone() else {
        return error_response(&ApiError::Unauthorized);
    };
    let Ok(Query(query)) = query else {
        return error_response(&ApiError::BadRequest(
            "the query string could not be parsed".into(),
        ));
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if matches!(path, "/openapi/v2" | "/swagger-2.0.0.pb-v1") {
        return openapi_v2(path, accept);
    }
    if matches!(path.trim_end_matches('/'), "/api" | "/apis")
        && let Some(version) = crate::negotiate::aggregated_discovery(accept)
    {
        let doc = discovery::aggregated(path.trim_end_matches('/') == "/api", version);
        let mut response = respond_json(200, &doc, Representation::Json);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(version.content_type()),
        );
        return response;
    }
    // Which metadata form a resource request can take is known once its path is read; a
    // document outside the resources is plain JSON whatever view was asked for.
    let representation = match choose(accept, Some(MetadataForm::Object))
        .or_else(|_| choose(accept, Some(MetadataForm::List)))
    {
        Ok(r) => r,
        Err(err) => return error_response(&err),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let plain = match representation {
        Representation::Table | Representation::Metadata(_) => Representation::Json,
        other => other,
    };
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return respond_json(200, &version_info(), plain),
        ["openapi", "v3"] => return respond_json(200, &crate::openapi::root(), plain),
        ["openapi", "v3", doc @ ..] => {
            let Some(found) = crate::openapi::document(&doc.join("/")) else {
                return error_response(&ApiError::UnknownResource);
            };
            let mut response = respond_json(200, &found.doc, plain);
            // A URL with the document's hash names these exact contents.
            let cache = if query.get("hash") == Some(&found.hash) {
                "public, immutable, max-age=31536000"
            } else {
                "no-cache, private"
            };
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            return response;
        }
        ["api"] => return respond_json(200, &discovery::api_versions(&api.server_address), plain),
        ["apis"] => return respond_json(200, &discovery::api_group_list(), plain),
        ["apis", group] => {
            return match discovery::api_group(group) {
                Some(doc) => respond_json(200, &doc, plain),
                None => error_response(&ApiError::UnknownResource),
            };
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return error_response(&ApiError::UnknownResource),
    };
    if rest.is_empty() {
        return match discovery::api_resource_list(group, version) {
            Some(doc) if method == Method::GET => respond_json(200, &doc, plain),
            Some(_) => error_response(&ApiError::MethodNotAllowed {
                verb: method.to_string(),
                resource: "discovery".into(),
            }),
            None => error_response(&ApiError::UnknownResource),
        };
    }
    let target = match parse_resource_path(group, version, rest) {
        Ok(t) => t,
        Err(err) => return error_response(&err),
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let options = match options_from(&query, agent) {
        Ok(options) => options,
        Err(err) => return error_response(&err),
    };
    let watching = parse_bool(query.get("watch"));
    let form = if method == Method::GET && target.name.is_none() && !watching {
        MetadataForm::List
    } else {
        MetadataForm::Object
    };
    let representation = match choose(accept, Some(form)) {
        Ok(r) => r,
        Err(err) => return error_response(&err),
    };
    let mut options = options;
    options.metadata_only = matches!(representation, Representation::Metadata(_));
    let verb = match (&method, target.name) {
        (&Method::GET, Some(_)) => Verb::Get,
        (&Method::GET, None) if watching => {
            return watch(api, target, options, &query, representation).await;
        }
        (&Method::GET, None) => Verb::List,
        (&Method::POST, None) => Verb::Create,
        (&Method::POST, Some(_)) if target.subresource == Some("eviction") => Verb::Create,
        (&Method::PUT, Some(_)) => Verb::Update,
        (&Method::DELETE, Some(_)) => Verb::Delete,
        (&Method::DELETE, None) => Verb::DeleteCollection,
        (&Method::PATCH, Some(_)) => Verb::Patch,
        _ => {
            let verb = match method {
                Method::PATCH => "patch",
                Method::DELETE => "deletecollection",
                Method::POST => "create",
                Method::PUT => "update",
                _ => "unknown",
            };
            return error_response(&ApiError::MethodNotAllowed {
                verb: verb.into(),
                resource: target.info.resource.into(),
            });
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let body = match verb {
        Verb::Create | Verb::Update => match body_to_json(content_type, &body) {
            Ok(b) => b,
            Err(err) => return error_response(&err),
        },
        Verb::Delete | Verb::DeleteCollection => match body_to_json(content_type, &body)
            .and_then(|b| delete_options_with_query(b, &query))
        {
            Ok(b) => b,
            Err(err) => return error_response(&err),
        },
        Verb::Patch => match patch_kind(content_type) {
            Ok(PatchKind::Apply) => {
                options.patch = Some(PatchKind::Apply);
                // An applied configuration is YAML (JSON is YAML too).
                match body_to_json(Some("application/yaml"), &body) {
                    Ok(b) => b,
                    Err(err) => return error_response(&err),
                }
            }
            Ok(kind) => {
                options.patch = Some(kind);
                body.to_vec()
            }
            Err(err) => return error_response(&err),
        },
        _ => Vec::new(),
    };
    let request = ApiRequest {
        verb,
        group: group.to_owned(),
        version: version.to_owned(),
        resource: target.info.resource.to_owned(),
        subresource: target.subresource.map(str::to_owned),
        namespace: target.namespace.map(str::to_owned),
        name: target.name.map(str::to_owned),
        body,
        options,
        user,
        // Terms fence the cluster's own leader-elected components; HTTP clients carry none.
        fence: None,
    };
    let mut reply = api.core.handle(request).await;
    if !reply.is_success()
        || representation != Representation::Table
        || !matches!(verb, Verb::Get | Verb::List)
    {
        // The core's reply is JSON already: sent as it is, not decoded and encoded again.
        let content_type = match representation {
            Representation::Metadata(MetadataForm::List) if reply.is_success() => {
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
            }
            Representation::Metadata(MetadataForm::Object) if reply.is_success() => {
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
            }
            _ => "application/json",
        };
        let mut response = if plain == Representation::Json && !reply.body.is_empty() {
            respond_bytes(reply.code, std::mem::take(&mut reply.body), content_type)
        } else {
            respond_json(reply.code, &reply.json(), plain)
        };
        for warning in &reply.warnings {
            // As Kubernetes sends them: code 299, no agent, the text quoted.
            let quoted = format!("299 - {:?}", warning);
            if let Ok(value) = HeaderValue::from_str(&quoted) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
        return response;
    }
    let value = reply.json();
    let include = IncludeObject::parse(query.get("includeObject").map(String::as_str));
    let table = if verb == Verb::List {
        let items = value["items"].as_array().cloned().unwrap_or_default();
        let mut table = render(
            target.info,
            &items,
            value["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default(),
            include,
            true,
        );
        // A page of a list is a page of its table.
        for field in ["continue", "remainingItemCount"] {
            if let Some(v) = value["metadata"].get(field) {
                table["metadata"][field] = v.clone();
            }
        }
        table
    } else {
        let rv = value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        render(target.info, &[value], &rv, include, true)
    };
    respond_json(200, &table, Representation::Table)
}

/// A delete's body with the `DeleteOptions` fields the query gives (`gracePeriodSeconds`,
/// `propagationPolicy`, `orphanDependents`) where the body has none.
fn delete_options_with_query(
    body: Vec<u8>,
    query: &HashMap<String, String>,
) -> Result<Vec<u8>, ApiError> {
    let fields = [
        "gracePeriodSeconds",
        "propagationPolicy",
        "orphanDependents",
    ];
    if !fields.iter().any(|f| query.contains_key(*f)) {
        return Ok(body);
    }
    let mut options: serde_json::Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("the DeleteOptions could not be read: {e}"))
        })?
    };
    for field in fields {
        let Some(text) = query.get(field) else {
            continue;
        };
        let value = match field {
            "gracePeriodSeconds" => Value::from(text.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "gracePeriodSeconds must be an integer, not {text:?}"
                ))
            })?),
            "orphanDependents" => Value::from(text.parse::<bool>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "orphanDependents must be true or false, not {text:?}"
                ))
            })?),
            _ => Value::from(text.as_str()),
        };
        options.entry(field).or_insert(value);
    }
    serde_json::to_vec(&options).map_err(|e| ApiError::Internal(e.to_string()))
}

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
    live: &mut crate::core::Live,
    core: &crate::core::ApiCore,
    filters: &Filters,
    batch: &mut WatchBatch,
) -> bool {
    while batch.has_room() {
        match live.next(core, filters).now_or_never() {
            Some(Some(change)) => batch.push(change.line()),
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

async fn watch(
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
    let metadata_only = matches!(representation, Representation::Metadata(_));
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
            } else if metadata_only {
                event_line("ADDED", crate::objects::partial_metadata(&object))
            } else {
                event_line("ADDED", object)
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
                    Some(change) if metadata_only => event_line(
                        change.kind(),
                        crate::objects::partial_metadata(&change.object()),
                    ),
                    Some(change) => {
                        let mut batch = WatchBatch::new(change.line());
                        ended = join_waiting(&mut live, &core, &filters, &mut batch);
                        // A busy watch writes at most once per WATCH_COALESCE: what comes
                        // meanwhile goes out in that write.
                        if !ended && batch.has_room() && last_write.elapsed() < WATCH_COALESCE {
                            tokio::time::sleep_until(last_write + WATCH_COALESCE).await;
                            ended = join_waiting(&mut live, &core, &filters, &mut batch);
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

/// The API router, with the admin routes and the self-subject review.
pub fn router(api: Arc<HttpApi>) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state(api)
        .merge(admin::router())
        .merge(crate::whoami::router())
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
