//! The collector's actor: each look reads every resource's objects as metadata from the
//! watch cache, decides ([`super::decide`]), and does what was decided after checking live
//! what it acts on.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde_json::{Value, json};
use shoal_core::client::{call, call_ok, error_from_status};
use shoal_core::{ApiError, ApiRequest, Fence, Verb};

use super::{
    Action, ObjectView, OwnerRef, Policy, Resource, Target, decide, next_wait, owner_lets_go,
};

/// Messages of the collector (local only).
#[derive(RactorMessage)]
pub enum GarbageCollectorMsg {
    /// Observe and act once.
    Tick,
}

/// Arguments: what to look at, how often, and the term to stamp writes with.
#[derive(Clone)]
pub struct GarbageCollectorArgs {
    pub resources: Vec<Resource>,
    /// How soon the collector looks again after a look that found work.
    pub period: Duration,
    /// How long it waits at most after looks that found none: each idle look doubles the
    /// wait up to this, as every look reads every object.
    pub idle_period: Duration,
    pub fence: Option<Fence>,
}

/// The garbage collector actor.
#[derive(Clone)]
pub struct GarbageCollector;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Every object of every resource, as views, from the watch cache.
async fn observe(resources: &[Resource]) -> Result<Vec<ObjectView>, ApiError> {
    let mut views = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let mut req = ApiRequest::new(Verb::List, &r.group, &r.version, &r.resource, None, None);
        req.options.resource_version = Some("0".into());
        req.options.metadata_only = true;
        let reply = call(req, CALL_TIMEOUT).await?;
        if !reply.is_success() {
            return Err(error_from_status(reply.code, &reply.json()));
        }
        // The metadata of every object is megabytes of JSON in a big cluster (10,000 pods'
        // were about 10 MB, 0.2-0.3 s to read here): read on the blocking pool, so that the
        // runtime's workers go on serving the API meanwhile instead of stalling on it.
        let found = tokio::task::spawn_blocking(move || {
            let list = reply.json();
            list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| ObjectView::from_object(i, item))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("reading the objects: {e}")))?;
        views.extend(found);
    }
    Ok(views)
}

fn request(resources: &[Resource], verb: Verb, target: &Target) -> Option<ApiRequest> {
    let r = resources.get(target.resource)?;
    Some(ApiRequest::new(
        verb,
        &r.group,
        &r.version,
        &r.resource,
        target.namespace.as_deref(),
        Some(&target.name),
    ))
}

/// The object at `target` read live (a quorum read), or `None` when there is none.
async fn read_live(
    resources: &[Resource],
    target: &Target,
    metadata_only: bool,
) -> Result<Option<Value>, ApiError> {
    let Some(mut req) = request(resources, Verb::Get, target) else {
        return Ok(None);
    };
    req.options.metadata_only = metadata_only;
    match call_ok(req, CALL_TIMEOUT).await {
        Ok(object) => Ok(Some(object)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether the owner `owner` of `dependent`, read live, lets it go ([`owner_lets_go`]). An
/// owner of a kind the collector does not know is kept, as its state cannot be read.
async fn lets_go(
    resources: &[Resource],
    dependent: &ObjectView,
    owner: &OwnerRef,
) -> Result<bool, ApiError> {
    let Some(at) = resources
        .iter()
        .position(|r| r.holds(&owner.api_version, &owner.kind))
    else {
        return Ok(false);
    };
    let target = Target {
        resource: at,
        namespace: dependent
            .target
            .namespace
            .clone()
            .filter(|_| resources[at].namespaced),
        name: owner.name.clone(),
    };
    let live = read_live(resources, &target, true).await?;
    Ok(owner_lets_go(live.as_ref(), &owner.uid))
}

/// The object `view` shows, read live, when it is still that object (the same uid).
async fn read_same(resources: &[Resource], view: &ObjectView) -> Result<Option<Value>, ApiError> {
    let live = read_live(resources, &view.target, false).await?;
    Ok(live.filter(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(&view.uid)))
}

/// `object` without the items of its list at `pointer` that `dropped` picks; `None` when
/// none is.
fn without(mut object: Value, pointer: &str, dropped: impl Fn(&Value) -> bool) -> Option<Value> {
    let list = object.pointer_mut(pointer)?.as_array_mut()?;
    let before = list.len();
    list.retain(|item| !dropped(item));
    (list.len() < before).then_some(object)
}

/// Does one action, after checking live what the look saw in the cache: every owner a
/// dependent is deleted for, or loses its reference to, lets it go. The updates carry the
/// version read live, so an object changed meanwhile is left for the next look.
async fn act(
    resources: &[Resource],
    views: &HashMap<&Target, &ObjectView>,
    action: &Action,
    fence: Option<&Fence>,
) -> Result<(), ApiError> {
    let target = action.target();
    let Some(view) = views.get(target) else {
        return Ok(());
    };
    let (verb, body) = match action {
        Action::Delete { uid, policy, .. } => {
            for owner in &view.owners {
                if !lets_go(resources, view, owner).await? {
                    tracing::debug!(?target, owner = %owner.uid, "an owner is live; kept");
                    return Ok(());
                }
            }
            let policy = match policy {
                Policy::Background => "Background",
                Policy::Foreground => "Foreground",
            };
            let options = json!({
                "kind": "DeleteOptions", "apiVersion": "v1",
                "propagationPolicy": policy,
                "preconditions": {"uid": uid},
            });
            (Verb::Delete, options)
        }
        Action::DropOwners { owners, .. } => {
            let mut gone = Vec::new();
            for owner in view.owners.iter().filter(|o| owners.contains(&o.uid)) {
                if lets_go(resources, view, owner).await? {
                    gone.push(owner.uid.as_str());
                }
            }
            if gone.is_empty() {
                return Ok(());
            }
            let dropped = |r: &Value| {
                let uid = r.get("uid").and_then(Value::as_str);
                gone.iter().any(|o| uid == Some(*o))
            };
            let Some(object) =
                read_without(resources, view, "/metadata/ownerReferences", dropped).await?
            else {
                return Ok(());
            };
            (Verb::Update, object)
        }
        Action::RemoveFinalizer { finalizer, .. } => {
            let dropped = |f: &Value| f.as_str() == Some(*finalizer);
            let Some(object) =
                read_without(resources, view, "/metadata/finalizers", dropped).await?
            else {
                return Ok(());
            };
            (Verb::Update, object)
        }
    };
    let Some(req) = request(resources, verb, target) else {
        return Ok(());
    };
    match call_ok(req.with_body(&body).fenced(fence.cloned()), CALL_TIMEOUT).await {
        // Gone already, or changed since it was read: the next look sees it as it is.
        Ok(_) | Err(ApiError::NotFound(_)) => Ok(()),
        Err(err) => Err(err),
    }
}

/// The object `view` shows, read live, without the items of its list at `pointer` that
/// `dropped` picks: `None` when it is gone, is another object now, or has none of them.
async fn read_without(
    resources: &[Resource],
    view: &ObjectView,
    pointer: &str,
    dropped: impl Fn(&Value) -> bool,
) -> Result<Option<Value>, ApiError> {
    Ok(read_same(resources, view)
        .await?
        .and_then(|o| without(o, pointer, dropped)))
}

/// The collector's state: its settings and its current wait between looks.
pub struct GarbageCollectorState {
    args: GarbageCollectorArgs,
    wait: Duration,
}

impl Actor for GarbageCollector {
    type Msg = GarbageCollectorMsg;
    type State = GarbageCollectorState;
    type Arguments = GarbageCollectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GarbageCollectorMsg>,
        args: GarbageCollectorArgs,
    ) -> Result<GarbageCollectorState, ActorProcessingErr> {
        myself.send_after(args.period, || GarbageCollectorMsg::Tick);
        Ok(GarbageCollectorState {
            wait: args.period,
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<GarbageCollectorMsg>,
        msg: GarbageCollectorMsg,
        state: &mut GarbageCollectorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GarbageCollectorMsg::Tick => {
                let resources = &state.args.resources;
                let actions = match observe(resources).await {
                    Ok(views) => {
                        let actions = decide(&views);
                        Some((actions, views))
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot observe the objects yet");
                        None
                    }
                };
                // A failed look counts as work: it is retried soon.
                state.wait = next_wait(
                    state.wait,
                    actions.as_ref().is_none_or(|(a, _)| !a.is_empty()),
                    state.args.period,
                    state.args.idle_period,
                );
                myself.send_after(state.wait, || GarbageCollectorMsg::Tick);
                let Some((actions, views)) = actions else {
                    return Ok(());
                };
                let views: HashMap<&Target, &ObjectView> =
                    views.iter().map(|v| (&v.target, v)).collect();
                for action in actions {
                    match act(resources, &views, &action, state.args.fence.as_ref()).await {
                        Ok(()) => tracing::debug!(?action, "garbage collected"),
                        Err(err) => {
                            tracing::debug!(?action, error = %err, "collection failed; will retry")
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_dropped_makes_an_update() {
        let object = json!({"metadata": {"finalizers": ["orphan", "keep"]}});
        let kept = without(object.clone(), "/metadata/finalizers", |f| f == "orphan")
            .expect("one is dropped");
        assert_eq!(kept["metadata"]["finalizers"], json!(["keep"]));
        assert!(without(object.clone(), "/metadata/finalizers", |f| f == "none").is_none());
        assert!(without(object, "/metadata/ownerReferences", |_| true).is_none());
    }
}
