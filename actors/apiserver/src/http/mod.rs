//! The REST layer: turns HTTP into [`ApiRequest`]s for the core, and the core's answers into
//! JSON, YAML or Table responses; streams watches ([`watch`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_core::{ApiError, ApiRequest, PatchKind, RequestOptions, Verb};

use crate::core::ApiCore;
use crate::negotiate::{MetadataForm, Representation, body_to_json, choose, patch_kind};
use crate::resources::{self, ResourceInfo};
use crate::table::{IncludeObject, render};
use crate::tls::Identity;
use crate::{admin, discovery};

mod watch;

use watch::watch;

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

/// The encoding under a view: a Table or a metadata view is JSON.
fn plain_form(representation: Representation) -> Representation {
    match representation {
        Representation::Table | Representation::Metadata(_) => Representation::Json,
        other => other,
    }
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
    // A document outside the resources is JSON or YAML whatever view was asked for; a
    // resource request's representation is chosen once its path tells which metadata form
    // it can take.
    let docs = choose(accept, None).map(plain_form);
    let respond_doc = |doc: &Value| match &docs {
        Ok(representation) => respond_json(200, doc, *representation),
        Err(err) => error_response(err),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return respond_doc(&version_info()),
        ["openapi", "v3"] => return respond_doc(&crate::openapi::root()),
        ["openapi", "v3", doc @ ..] => {
            let Some(found) = crate::openapi::document(&doc.join("/")) else {
                return error_response(&ApiError::UnknownResource);
            };
            let mut response = respond_doc(&found.doc);
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
        ["api"] => return respond_doc(&discovery::api_versions(&api.server_address)),
        ["apis"] => return respond_doc(&discovery::api_group_list()),
        ["apis", group] => {
            return match discovery::api_group(group) {
                Some(doc) => respond_doc(&doc),
                None => error_response(&ApiError::UnknownResource),
            };
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return error_response(&ApiError::UnknownResource),
    };
    if rest.is_empty() {
        return match discovery::api_resource_list(group, version) {
            Some(doc) if method == Method::GET => respond_doc(&doc),
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
    let plain = plain_form(representation);
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

/// The API router, with the admin routes and the self-subject review.
pub fn router(api: Arc<HttpApi>) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state(api)
        .merge(admin::router())
        .merge(crate::whoami::router())
}
