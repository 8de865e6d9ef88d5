//! The request core: every read and write of cluster state goes through [`ApiCore::handle`]
//! (validate → default → route to a shard), whether it came over HTTP or as an actor message.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use shoal_core::time::format_time;
use shoal_core::version::Version;
use shoal_core::{
    ApiError, ApiReply, ApiRequest, CompositeVersion, Fence, ObjectKey, PatchKind, RequestOptions,
    Verb, shard_for,
};
use shoal_store::{Store, StoreError, StoreEvent, StoreWatch, Stored, WriteOp, WriteOutcome};

pub use crate::filters::Filters;
pub use crate::objects::list_object;
use crate::objects::{
    check_identity, check_type_meta, merge_update, meta_str, metadata_mut, parse_object,
    random_suffix, with_version,
};
use crate::resources::{self, ResourceInfo};
use crate::validate::{
    apply_defaults, check_name, check_namespace_name, check_semantics, check_typed, subject,
};

/// Namespaces that exist from the start and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How often an update that raced another writer is retried when the client gave no version.
pub(crate) const UPDATE_ATTEMPTS: usize = 5;

/// The API's request core over the store.
#[derive(Clone, Debug)]
pub struct ApiCore {
    store: Store,
    ranges: crate::addresses::ServiceRanges,
    /// Lists kept for their next pages.
    pages: pages::SharedPages,
    /// The watch cache, made by the first list at "0" or watch from a version.
    watch_cache: std::sync::Arc<cache::LazyCache>,
}

/// The start of a watch: synthetic ADDED objects (for starts at "any" or "latest"), then the
/// live stream.
pub struct WatchStart {
    pub initial: Vec<Value>,
    pub live: Live,
    /// Whether the initial events end with a bookmark that says so (`sendInitialEvents`).
    pub marks_initial_end: bool,
}

/// How a write is to be made: for real or as a dry run, and under which leadership term.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteCtx {
    pub(crate) dry_run: bool,
    fence: Option<Fence>,
    field_validation: shoal_core::FieldValidation,
    /// What the client is to be warned of.
    warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Who the write's fields are recorded as managed by (empty: the API server itself).
    manager: String,
    /// The subresource written through (`status`, `scale`).
    subresource: Option<String>,
    /// The body's `managedFields` were worked out by a server-side apply: stored as given.
    applied: bool,
}

mod apply;
pub mod cache;
mod delete;
mod evict;
mod list;
mod namespaces;
mod pages;
mod watch;

pub use cache::Shown;
pub use delete::{DeleteOptions, DeletePlan, Propagation, is_deleting};
pub use watch::{Change, Live};

impl WriteCtx {
    /// Drops the fields `object`'s kind does not have, as `?fieldValidation=` says.
    fn check_fields(
        &self,
        info: &ResourceInfo,
        object: Map<String, Value>,
    ) -> Result<Map<String, Value>, ApiError> {
        let mut value = Value::Object(object);
        let warnings = crate::fields::enforce(info, &mut value, self.field_validation)?;
        if !warnings.is_empty() {
            let mut all = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
            for w in warnings {
                if !all.contains(&w) {
                    all.push(w);
                }
            }
        }
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(ApiError::Internal("an object stopped being one".into())),
        }
    }
}

fn map_store_error(info: &ResourceInfo, name: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound(_) => ApiError::NotFound(subject(info, name)),
        StoreError::AlreadyExists(_) => ApiError::AlreadyExists(subject(info, name)),
        StoreError::Conflict { .. } => ApiError::stale(subject(info, name)),
        fenced @ StoreError::Fenced { .. } => ApiError::Conflict(
            subject(info, name),
            format!("the writer is no longer the leader: {fenced}"),
        ),
        StoreError::Gone { requested, oldest } => {
            ApiError::Gone(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::TooLarge { requested, current } => ApiError::Timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        StoreError::Unavailable(shard) => {
            ApiError::Unavailable(format!("store shard {shard} is restarting"))
        }
        StoreError::Storage(why) => ApiError::Internal(why),
    }
}

impl ApiCore {
    /// A core over `store`.
    pub fn new(store: Store) -> ApiCore {
        ApiCore::with_ranges(store, crate::addresses::ServiceRanges::default())
    }

    /// A core whose Services get their addresses and node ports from `ranges`.
    pub fn with_ranges(store: Store, ranges: crate::addresses::ServiceRanges) -> ApiCore {
        ApiCore {
            store,
            ranges,
            pages: Default::default(),
            watch_cache: Default::default(),
        }
    }

    /// The ranges Services get their addresses and node ports from.
    pub fn ranges(&self) -> &crate::addresses::ServiceRanges {
        &self.ranges
    }

    /// The store's shard count.
    pub fn shards(&self) -> u32 {
        self.store.shards()
    }

    /// Answers one request.
    pub async fn handle(&self, req: ApiRequest) -> ApiReply {
        if req.verb == Verb::List && req.name.is_none() && req.subresource.is_none() {
            return match self.list_encoded(&req).await {
                Ok(body) => ApiReply {
                    code: 200,
                    body,
                    warnings: Vec::new(),
                },
                Err(err) => ApiReply::error(&err),
            };
        }
        let warnings = std::sync::Arc::default();
        let mut reply = match self.dispatch(&req, std::sync::Arc::clone(&warnings)).await {
            Ok((code, value)) if req.options.metadata_only && req.verb == Verb::Get => {
                ApiReply::ok(code, &crate::objects::partial_metadata(&value))
            }
            Ok((code, value)) => ApiReply::ok(code, &value),
            Err(err) => ApiReply::error(&err),
        };
        reply.warnings = std::mem::take(&mut *warnings.lock().unwrap_or_else(|p| p.into_inner()));
        reply
    }

    async fn dispatch(
        &self,
        req: &ApiRequest,
        warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) -> Result<(u16, Value), ApiError> {
        if req.verb == Verb::Malformed {
            return Err(ApiError::BadRequest(
                "the request could not be decoded".into(),
            ));
        }
        let info = resources::find(&req.group, &req.version, &req.resource)
            .ok_or(ApiError::UnknownResource)?;
        if let Some(sub) = req.subresource.as_deref() {
            let served = match sub {
                "status" => info.has_status,
                "scale" => crate::kinds::workloads::scalable(info.kind),
                "eviction" => info.kind == "Pod",
                _ => false,
            };
            if !served {
                return Err(ApiError::UnknownResource);
            }
            let allowed = if sub == "eviction" {
                req.verb == Verb::Create
            } else {
                matches!(req.verb, Verb::Get | Verb::Update | Verb::Patch)
            };
            if !allowed {
                return Err(ApiError::MethodNotAllowed {
                    verb: req.verb.as_str().into(),
                    resource: format!("{}/{sub}", info.resource),
                });
            }
        }
        let namespace = if info.namespaced {
            req.namespace.as_deref()
        } else {
            None
        };
        if info.namespaced && namespace.is_none() && !matches!(req.verb, Verb::List) {
            return Err(ApiError::BadRequest(format!(
                "a namespace is required for {}",
                info.resource
            )));
        }
        let manager = apply::manager_of(req)?;
        let ctx = WriteCtx {
            dry_run: req.options.dry_run,
            fence: req.fence.clone(),
            field_validation: req.options.field_validation,
            warnings,
            manager,
            subresource: req.subresource.clone(),
            applied: false,
        };
        if req.subresource.as_deref() == Some("scale")
            && let Some(name) = req.name.as_deref()
        {
            let scale = match req.verb {
                Verb::Get => self.get_scale(info, namespace, name).await?,
                Verb::Update => {
                    self.update_scale(info, namespace, name, &req.body, &ctx)
                        .await?
                }
                _ => match req.options.patch.ok_or(ApiError::UnsupportedMediaType)? {
                    PatchKind::Apply => {
                        let force = req.options.force.unwrap_or(false);
                        return self
                            .apply_scale(info, namespace, name, &req.body, force, &ctx)
                            .await;
                    }
                    kind => {
                        self.patch_scale(info, namespace, name, kind, &req.body, &ctx)
                            .await?
                    }
                },
            };
            return Ok((200, scale));
        }
        if req.subresource.as_deref() == Some("eviction")
            && let Some(name) = req.name.as_deref()
        {
            return self
                .evict(info, namespace, name, &req.body, &ctx)
                .await
                .map(|v| (201, v));
        }
        match (req.verb, req.name.as_deref()) {
            (Verb::Get, Some(name)) => Ok((200, self.get(info, namespace, name).await?)),
            (Verb::Create, None) => self
                .create(info, namespace, &req.body, &ctx)
                .await
                .map(|v| (201, v)),
            (Verb::Patch, Some(name)) => {
                let status_only = req.subresource.as_deref() == Some("status");
                let kind = req.options.patch.ok_or(ApiError::UnsupportedMediaType)?;
                if kind == PatchKind::Apply {
                    let force = req.options.force.unwrap_or(false);
                    return self
                        .apply(info, namespace, name, &req.body, status_only, force, &ctx)
                        .await;
                }
                self.patch(info, namespace, name, kind, &req.body, status_only, &ctx)
                    .await
                    .map(|v| (200, v))
            }
            (Verb::Update, Some(name)) => {
                let status_only = req.subresource.as_deref() == Some("status");
                self.update(info, namespace, name, &req.body, status_only, &ctx)
                    .await
                    .map(|v| (200, v))
            }
            (Verb::Delete, Some(name)) => self
                .delete(info, namespace, name, &req.body, &ctx)
                .await
                .map(|v| (200, v)),
            (Verb::DeleteCollection, None) if info.verbs().contains(&"deletecollection") => self
                .delete_collection(info, namespace, &req.options, &req.body, &ctx)
                .await
                .map(|v| (200, v)),
            (verb, _) => Err(ApiError::MethodNotAllowed {
                verb: verb.as_str().into(),
                resource: info.resource.into(),
            }),
        }
    }

    /// Stores one write, fenced by the writer's leadership term when it has one.
    pub(crate) async fn commit(
        &self,
        op: WriteOp,
        ctx: &WriteCtx,
    ) -> Result<WriteOutcome, StoreError> {
        self.store.write_fenced(op, ctx.fence.clone()).await
    }

    fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
        let (group, resource) = info.stored_as();
        ObjectKey {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
        .encode()
    }

    async fn load(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(String, Stored), ApiError> {
        let key = Self::key(info, namespace, name);
        match self
            .store
            .get(&key)
            .await
            .map_err(|e| map_store_error(info, name, e))?
        {
            Some(mut stored) => {
                if let Some(view) = info.view {
                    stored.value = view.view_bytes(&stored.value)?.into();
                }
                Ok((key, stored))
            }
            None => Err(ApiError::NotFound(subject(info, name))),
        }
    }

    /// An object's JSON as the store keeps it: `bytes` itself, or its stored form when
    /// `info` is a view.
    pub(crate) fn stored_form(info: &ResourceInfo, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
        match info.view {
            Some(view) => view.stored_bytes(bytes),
            None => Ok(bytes.to_vec()),
        }
    }

    /// One object.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let (_, stored) = self.load(info, namespace, name).await?;
        with_version(&stored.value, &stored.rev.to_string())
    }

    async fn namespace_exists(&self, namespace: &str) -> Result<(), ApiError> {
        let ns_info = resources::find("", "v1", "namespaces").ok_or(ApiError::UnknownResource)?;
        self.load(ns_info, None, namespace).await.map(|_| ())
    }

    async fn create(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let dry_run = ctx.dry_run;
        let mut object = ctx.check_fields(info, parse_object(body)?)?;
        check_type_meta(info, &object)?;
        let given = apply::given(info, &object)?;
        let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
            (Some(name), _) => name.to_owned(),
            (None, Some(prefix)) => format!("{prefix}{}", random_suffix()),
            (None, None) => {
                return Err(ApiError::Invalid(
                    subject(info, ""),
                    vec![shoal_core::error::FieldCause {
                        reason: "FieldValueRequired",
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        };
        check_name(info, &name)?;
        if let Some(ns) = namespace {
            if let Some(body_ns) = meta_str(&object, "namespace")
                && body_ns != ns
            {
                return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
            }
            check_namespace_name(info, &name, ns)?;
            self.namespace_exists(ns).await?;
        }
        object.insert("apiVersion".into(), json!(info.api_version()));
        object.insert("kind".into(), json!(info.kind));
        let meta = metadata_mut(&mut object);
        meta.insert("name".into(), json!(name));
        match namespace {
            Some(ns) => meta.insert("namespace".into(), json!(ns)),
            None => meta.remove("namespace"),
        };
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert(
            "creationTimestamp".into(),
            json!(format_time(Timestamp::now())),
        );
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if info.kind == "Pod" || crate::kinds::workloads::tracks_generation(info.kind) {
            meta.insert("generation".into(), json!(1));
        }
        apply_defaults(info, &mut object);
        crate::kinds::workloads::on_create(info.kind, &mut object);
        let mut value = Value::Object(object);
        apply::record_fields(info, None, &mut value, given, false, ctx);
        check_typed(info, &value)?;
        check_semantics(info, &name, &value)?;
        if let Some(view) = info.view {
            let causes = view.create_causes(&value);
            if !causes.is_empty() {
                return Err(ApiError::Invalid(subject(info, &name), causes));
            }
        }
        let claims = match value.as_object_mut() {
            Some(service) if info.kind == "Service" => {
                let owner = format!("{}/{name}", namespace.unwrap_or_default());
                self.allocate(info, &name, &owner, service, None, ctx)
                    .await?
            }
            _ => Vec::new(),
        };
        let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
        if dry_run {
            return Ok(value);
        }
        let key = Self::key(info, namespace, &name);
        let created = self
            .commit(
                WriteOp::Create {
                    key,
                    value: Self::stored_form(info, &bytes)?,
                },
                ctx,
            )
            .await;
        match created {
            Ok(outcome) => with_version(&bytes, &outcome.rev.to_string()),
            Err(err) => {
                self.release(&claims, ctx).await;
                Err(map_store_error(info, &name, err))
            }
        }
    }

    /// The revision a client's version names for `key`, if any.
    fn precondition(
        &self,
        info: &ResourceInfo,
        name: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<u64>, ApiError> {
        let Some(text) = version.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let parsed = Version::parse(text, self.shards() as usize).map_err(|_| {
            ApiError::invalid_field(
                subject(info, name),
                "metadata.resourceVersion",
                text,
                "must be a resource version returned by this server",
            )
        })?;
        Ok(parsed.revision_for_shard(shard_for(key, self.shards()) as usize))
    }

    /// Applies a patch to the stored object and stores the result as an update. A patch that
    /// names a `resourceVersion` is a precondition; one that does not is retried when another
    /// writer got in between, as Kubernetes does.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        status_only: bool,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get(info, namespace, name).await?;
            let loaded_version = current.pointer("/metadata/resourceVersion").cloned();
            let patched = crate::patch::apply(info, name, &current, kind, body)?;
            let explicit = patched.pointer("/metadata/resourceVersion") != loaded_version.as_ref();
            let bytes =
                serde_json::to_vec(&patched).map_err(|e| ApiError::Internal(e.to_string()))?;
            match self
                .update(info, namespace, name, &bytes, status_only, ctx)
                .await
            {
                Err(ApiError::Conflict(..)) if !explicit => continue,
                other => return other,
            }
        }
        Err(ApiError::stale(subject(info, name)))
    }

    pub(crate) async fn update(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        body: &[u8],
        status_only: bool,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let dry_run = ctx.dry_run;
        // The body must read as its kind whole, even where a status write ignores it.
        let object = ctx.check_fields(info, parse_object(body)?)?;
        check_identity(info, &object, namespace, name)?;
        let key = Self::key(info, namespace, name);
        let wanted = self.precondition(info, name, &key, meta_str(&object, "resourceVersion"))?;
        let given = apply::given(info, &object)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let (_, current) = self.load(info, namespace, name).await?;
            if let Some(rev) = wanted
                && rev != current.rev
            {
                return Err(ApiError::stale(subject(info, name)));
            }
            let old = parse_object(&current.value)?;
            let mut merged = merge_update(info, &old, object.clone(), status_only);
            if let Some(map) = merged.as_object_mut() {
                if info.kind == "Secret" {
                    crate::validate::fold_string_data(map);
                } else if !status_only {
                    // Defaults hold on every write, as the decoder applies them in Kubernetes.
                    apply_defaults(info, map);
                }
            }
            let old = Value::Object(old);
            apply::record_fields(
                info,
                Some(&old),
                &mut merged,
                given.clone(),
                status_only,
                ctx,
            );
            let mut claims = Vec::new();
            if info.kind == "Service"
                && let Some(service) = merged.as_object_mut()
            {
                crate::addresses::keep_allocated(&old, service);
            }
            check_typed(info, &merged)?;
            check_semantics(info, name, &merged)?;
            crate::validate::check_update(info, name, &old, &merged)?;
            let freed = delete::check_finalizers(info, name, &old, &merged)?;
            if info.kind == "Service"
                && !status_only
                && let Some(service) = merged.as_object_mut()
            {
                let owner = format!("{}/{name}", namespace.unwrap_or_default());
                claims = self
                    .allocate(info, name, &owner, service, Some(&old), ctx)
                    .await?;
            }
            if merged == old && claims.is_empty() {
                // Nothing changes: nothing is written, and the version stays (as in
                // Kubernetes, where such an update is not a write).
                return with_version(&current.value, &current.rev.to_string());
            }
            let bytes =
                serde_json::to_vec(&merged).map_err(|e| ApiError::Internal(e.to_string()))?;
            if dry_run {
                return Ok(merged);
            }
            if freed {
                // The last finalizer of an object marked for deletion is gone: so is it.
                match self
                    .remove(info, name, key.clone(), current.rev, &old, ctx)
                    .await
                {
                    Ok(()) => return Ok(merged),
                    Err(ApiError::Conflict(..)) if wanted.is_none() => continue,
                    Err(err) => return Err(err),
                }
            }
            let op = WriteOp::Update {
                key: key.clone(),
                value: Self::stored_form(info, &bytes)?,
                expected: Some(current.rev),
            };
            let written = self.commit(op, ctx).await;
            if written.is_err() {
                self.release(&claims, ctx).await;
            } else if info.kind == "Service" {
                // What the Service no longer uses (a type that needs no node port) is freed.
                let now = crate::addresses::claims_of(&merged);
                let dropped: Vec<String> = crate::addresses::claims_of(&old)
                    .into_iter()
                    .filter(|k| !now.contains(k))
                    .collect();
                self.release(&dropped, ctx).await;
            }
            match written {
                Ok(outcome) => return with_version(&bytes, &outcome.rev.to_string()),
                Err(StoreError::Conflict { .. }) if wanted.is_none() => continue,
                Err(err) => return Err(map_store_error(info, name, err)),
            }
        }
        Err(ApiError::stale(subject(info, name)))
    }
}
