//! Server-side apply and the recording of every write's managed fields
//! ([`crate::managed`]) in the request core.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use shoal_core::error::{FieldCause, Subject};
use shoal_core::time::format_time;
use shoal_core::{ApiError, ApiRequest, FieldValidation, PatchKind, Verb};

use super::{ApiCore, UPDATE_ATTEMPTS, WriteCtx};
use crate::managed::{
    self, ApplyError, Given, LAST_APPLIED, Managers, Scope, Writer, check_manager, walk,
};
use crate::objects::{check_identity, meta_str, metadata_mut, parse_object};
use crate::resources::ResourceInfo;
use crate::validate::subject;

/// Who a request's fields are recorded as managed by: its `fieldManager`, else its client's
/// user agent, else its user. Bad options are 422, as Kubernetes validates them.
pub(super) fn manager_of(req: &ApiRequest) -> Result<String, ApiError> {
    let options = &req.options;
    let kind = match req.verb {
        Verb::Patch => "PatchOptions",
        Verb::Create => "CreateOptions",
        Verb::Update => "UpdateOptions",
        _ => return Ok(String::new()),
    };
    let apply = req.verb == Verb::Patch && options.patch == Some(PatchKind::Apply);
    let explicit = options.field_manager.as_deref().filter(|m| !m.is_empty());
    let mut causes = Vec::new();
    if let Some(manager) = explicit
        && let Err(why) = check_manager(manager)
    {
        causes.push(FieldCause {
            reason: why.reason,
            field: "fieldManager".into(),
            message: why.message,
        });
    }
    if apply && explicit.is_none() {
        causes.push(FieldCause {
            reason: "FieldValueRequired",
            field: "fieldManager".into(),
            message: "Required value: is required for apply patch".into(),
        });
    }
    if req.verb == Verb::Patch && !apply && options.force.is_some() {
        causes.push(FieldCause {
            reason: "FieldValueForbidden",
            field: "force".into(),
            message: "Forbidden: may not be specified for non-apply patch".into(),
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::Invalid(
            Subject {
                group: "meta.k8s.io".into(),
                resource: String::new(),
                kind: kind.into(),
                name: String::new(),
            },
            causes,
        ));
    }
    Ok(explicit
        .or(options.agent.as_deref())
        .unwrap_or(&req.user)
        .to_owned())
}

/// What a write's body says about its managers; a list that does not read is 422.
pub(super) fn given(info: &ResourceInfo, object: &Map<String, Value>) -> Result<Given, ApiError> {
    let list = object.get("metadata").and_then(|m| m.get("managedFields"));
    Managers::given(list).map_err(|why| {
        let name = meta_str(object, "name").unwrap_or_default();
        ApiError::Invalid(
            subject(info, name),
            vec![FieldCause {
                reason: "FieldValueInvalid",
                field: "metadata.managedFields".into(),
                message: why,
            }],
        )
    })
}

fn scope(info: &ResourceInfo, status_only: bool) -> Scope {
    if status_only {
        Scope::StatusOnly
    } else if info.has_status {
        Scope::NotStatus
    } else {
        Scope::Whole
    }
}

fn set_managers(object: &mut Value, managers: &Managers) {
    if let Some(map) = object.as_object_mut() {
        let meta = metadata_mut(map);
        match managers.encode() {
            Some(list) => meta.insert("managedFields".into(), list),
            None => meta.remove("managedFields"),
        };
    }
}

fn stored_managers(object: Option<&Value>) -> Managers {
    // What was stored was checked when it was written; a list that no longer reads is
    // started afresh rather than failing every later write.
    Managers::decode(object.and_then(|o| o.pointer("/metadata/managedFields"))).unwrap_or_default()
}

/// Records in `new` (the object about to be stored over `old`) the fields this write set.
pub(super) fn record_fields(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    given: Given,
    status_only: bool,
    ctx: &WriteCtx,
) {
    if ctx.applied {
        // An apply worked its managers out; a status apply's body carries them here.
        let managers = match given {
            Given::Set(managers) => managers,
            Given::Nothing | Given::Reset => Managers::default(),
        };
        set_managers(new, &managers);
        return;
    }
    let base = if status_only || ctx.subresource.is_some() {
        stored_managers(old)
    } else {
        match given {
            Given::Reset => {
                set_managers(new, &Managers::default());
                return;
            }
            Given::Set(managers) => managers,
            Given::Nothing => stored_managers(old),
        }
    };
    let now = format_time(Timestamp::now());
    let api_version = info.api_version();
    let manager = if ctx.manager.is_empty() {
        "shoal-apiserver"
    } else {
        ctx.manager.as_str()
    };
    let writer = Writer {
        manager,
        api_version: &api_version,
        subresource: ctx.subresource.as_deref(),
        now: &now,
    };
    let empty = json!({});
    let managers = managed::track_update(
        base,
        old.unwrap_or(&empty),
        new,
        walk::root(&api_version, info.kind),
        scope(info, status_only),
        &writer,
    );
    set_managers(new, &managers);
}

impl ApiCore {
    /// Server-side apply: `body` is the configuration `ctx.manager` wants. Creates the object
    /// when it does not exist; otherwise merges, removes what the manager stopped applying,
    /// and refuses to change other managers' fields unless forced.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn apply(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        body: &[u8],
        status_only: bool,
        force: bool,
        ctx: &WriteCtx,
    ) -> Result<(u16, Value), ApiError> {
        // A configuration names only fields its kind has, whatever `fieldValidation` says.
        let strict = WriteCtx {
            field_validation: FieldValidation::Strict,
            ..ctx.clone()
        };
        let config = parse_object(body)?;
        if !matches!(
            (config.get("apiVersion"), config.get("kind")),
            (Some(Value::String(_)), Some(Value::String(_)))
        ) {
            return Err(ApiError::BadRequest(
                "an applied configuration must set apiVersion and kind".into(),
            ));
        }
        let config = strict.check_fields(info, config)?;
        check_identity(info, &config, namespace, name)?;
        let explicit_version = meta_str(&config, "resourceVersion").is_some();
        let config = Value::Object(config);
        let api_version = info.api_version();
        let shape = walk::root(&api_version, info.kind);
        let scope = scope(info, status_only);
        let applied_ctx = WriteCtx {
            applied: true,
            ..ctx.clone()
        };
        for _ in 0..UPDATE_ATTEMPTS {
            let current = match self.get(info, namespace, name).await {
                Ok(object) => Some(object),
                // A subresource is written through only where its object exists.
                Err(ApiError::NotFound(_)) if ctx.subresource.is_none() => None,
                Err(err) => return Err(err),
            };
            let live = current.clone().unwrap_or_else(|| {
                let mut meta = json!({"name": name});
                if let Some(ns) = namespace {
                    meta["namespace"] = json!(ns);
                }
                json!({"apiVersion": api_version, "kind": info.kind, "metadata": meta})
            });
            let now = format_time(Timestamp::now());
            let writer = Writer {
                manager: &ctx.manager,
                api_version: &api_version,
                subresource: ctx.subresource.as_deref(),
                now: &now,
            };
            let managers = stored_managers(current.as_ref());
            let attempt = |allowed: Option<&managed::FieldSet>| {
                managed::apply(
                    &live,
                    &config,
                    shape,
                    scope,
                    managers.clone(),
                    &writer,
                    managed::Claim { force, allowed },
                )
            };
            // kubectl moving an object from client-side to server-side apply may take the
            // fields its last client-side apply set and nobody changed since.
            let kubectl = ctx.manager == "kubectl" && ctx.subresource.is_none();
            let outcome = match attempt(None) {
                Err(ApplyError::Conflicts(_))
                    if kubectl
                        && let Some(allowed) = managed::allowed_from_last_applied(&live, shape) =>
                {
                    attempt(Some(&allowed))
                }
                other => other,
            };
            let applied = outcome.map_err(|e| e.into_api(subject(info, name)))?;
            let mut object = applied.object;
            if kubectl
                && live
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(LAST_APPLIED))
                    .is_some()
                && let Some(map) = object.as_object_mut()
            {
                let text = serde_json::to_string(&config)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let meta = metadata_mut(map);
                if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
                    annotations.insert(LAST_APPLIED.into(), Value::String(text));
                }
            }
            set_managers(&mut object, &applied.managers);
            let bytes =
                serde_json::to_vec(&object).map_err(|e| ApiError::Internal(e.to_string()))?;
            match current {
                None => match self.create(info, namespace, &bytes, &applied_ctx).await {
                    Ok(created) => return Ok((201, created)),
                    Err(ApiError::AlreadyExists(_)) => continue,
                    Err(err) => return Err(err),
                },
                Some(_) => match self
                    .update(info, namespace, name, &bytes, status_only, &applied_ctx)
                    .await
                {
                    Err(ApiError::Conflict(..)) if !explicit_version => continue,
                    other => return other.map(|v| (200, v)),
                },
            }
        }
        Err(ApiError::stale(subject(info, name)))
    }
}
