//! The `scale` subresource (kubectl-contract §11.2): an autoscaling/v1 `Scale` view of a
//! Deployment's, ReplicaSet's, StatefulSet's or ReplicationController's replica count.
//! Writing it changes the parent's `spec.replicas` (and so bumps its generation).

use serde_json::{Map, Value, json};
use shoal_core::ApiError;
use shoal_core::messages::PatchKind;

use crate::core::{ApiCore, UPDATE_ATTEMPTS, WriteCtx};
use crate::kinds::workloads::scale_selector;
use crate::resources::ResourceInfo;
use crate::validate::subject;

/// The `Scale` of a stored workload.
pub fn scale_of(info: &ResourceInfo, parent: &Value) -> Value {
    let meta = parent.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field) {
            metadata.insert(field.into(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": parent.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": parent.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": scale_selector(info.kind, parent),
        },
    })
}

/// The replica count a `Scale` asks for, checked as Kubernetes checks it.
fn wanted_replicas(info: &ResourceInfo, name: &str, scale: &Value) -> Result<i64, ApiError> {
    if !scale.is_object() {
        return Err(ApiError::BadRequest(
            "unable to decode Scale body: a Scale is a JSON object".into(),
        ));
    }
    if let Some(spec) = scale.get("spec").filter(|s| !s.is_null() && !s.is_object()) {
        return Err(ApiError::BadRequest(format!(
            "unable to decode Scale body: spec must be an object, not {spec}"
        )));
    }
    if let Some(kind) = scale.get("kind").and_then(Value::as_str)
        && kind != "Scale"
    {
        return Err(ApiError::BadRequest(format!(
            "the body of a scale request must be a Scale, not a {kind}"
        )));
    }
    match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::invalid_field(
                subject(info, name),
                "spec.replicas",
                &n.to_string(),
                "must be greater than or equal to 0",
            )),
            None => Err(ApiError::BadRequest(format!(
                "unable to decode Scale body: spec.replicas must be an integer, not {v}"
            ))),
        },
    }
}

/// The configuration of the parent that an applied `Scale` stands for: its identity, and
/// the replica count when the `Scale` gives one. What a `Scale` does not have is refused,
/// as an applied configuration names only fields its kind has.
fn applied_parent(
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    config: &Value,
) -> Result<Value, ApiError> {
    let (Some("autoscaling/v1"), Some("Scale")) = (
        config.get("apiVersion").and_then(Value::as_str),
        config.get("kind").and_then(Value::as_str),
    ) else {
        return Err(ApiError::BadRequest(
            "an applied Scale must set apiVersion autoscaling/v1 and kind Scale".into(),
        ));
    };
    crate::fields::refuse_unknown("Scale", config)?;
    let replicas = wanted_replicas(info, name, config)?;
    let meta = config.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(given) = meta.get("name").and_then(Value::as_str)
        && given != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    if let Some(version) = version_of(config) {
        metadata["resourceVersion"] = json!(version);
    }
    let mut parent = json!({
        "apiVersion": info.api_version(),
        "kind": info.kind,
        "metadata": metadata,
    });
    if config
        .pointer("/spec/replicas")
        .is_some_and(|r| !r.is_null())
    {
        parent["spec"] = json!({"replicas": replicas});
    }
    Ok(parent)
}

fn version_of(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

impl ApiCore {
    /// `GET …/{name}/scale`.
    pub(crate) async fn get_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let parent = self.get(info, namespace, name).await?;
        Ok(scale_of(info, &parent))
    }

    /// `PUT …/{name}/scale`: a `resourceVersion` in the body is a precondition on the parent.
    pub(crate) async fn update_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let scale: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("unable to decode Scale body: {e}")))?;
        let replicas = wanted_replicas(info, name, &scale)?;
        self.write_scale(info, namespace, name, replicas, version_of(&scale), ctx)
            .await
    }

    /// `PATCH …/{name}/scale`: the patch applies to the `Scale`, whose replica count then
    /// goes to the parent.
    pub(crate) async fn patch_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let current = self.get_scale(info, namespace, name).await?;
        let patched = crate::patch::apply(info, name, &current, kind, body)?;
        let replicas = wanted_replicas(info, name, &patched)?;
        // A patch that sets a version asks for that version; one that leaves it as loaded
        // applies to whatever is current.
        let explicit = version_of(&patched).filter(|v| Some(*v) != version_of(&current));
        self.write_scale(info, namespace, name, replicas, explicit, ctx)
            .await
    }

    /// Server-side apply of a `Scale` (`PATCH …/{name}/scale`, apply-patch): the manager's
    /// replica count goes to the parent, where the manager owns `spec.replicas` through the
    /// scale subresource; another owner of it is a conflict unless the apply is forced.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn apply_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        body: &[u8],
        force: bool,
        ctx: &WriteCtx,
    ) -> Result<(u16, Value), ApiError> {
        let config: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("unable to decode Scale body: {e}")))?;
        let parent = applied_parent(info, namespace, name, &config)?;
        let bytes = serde_json::to_vec(&parent).map_err(|e| ApiError::Internal(e.to_string()))?;
        let (code, applied) = self
            .apply(info, namespace, name, &bytes, false, force, ctx)
            .await?;
        Ok((code, scale_of(info, &applied)))
    }

    async fn write_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        replicas: i64,
        version: Option<&str>,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let mut parent = self.get(info, namespace, name).await?;
            if let Some(wanted) = version
                && Some(wanted) != version_of(&parent)
            {
                return Err(ApiError::stale(subject(info, name)));
            }
            if let Some(spec) = parent.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("replicas".into(), json!(replicas));
            }
            let bytes =
                serde_json::to_vec(&parent).map_err(|e| ApiError::Internal(e.to_string()))?;
            // The parent's version as loaded is the precondition: a write in between is
            // seen as a conflict and the change is made again on the newer object.
            match self.update(info, namespace, name, &bytes, false, ctx).await {
                Err(ApiError::Conflict(..)) if version.is_none() => continue,
                Err(err) => return Err(err),
                Ok(updated) => return Ok(scale_of(info, &updated)),
            }
        }
        Err(ApiError::stale(subject(info, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn a_scale_shows_the_parents_counts_and_selector_string() {
        let info = find("apps", "v1", "deployments").expect("served");
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7", "labels": {"a": "b"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        let scale = scale_of(info, &d);
        assert_eq!(
            scale,
            json!({
                "kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7"},
                "spec": {"replicas": 3},
                "status": {"replicas": 2, "selector": "app=web"},
            })
        );
    }

    #[test]
    fn an_applied_scale_stands_for_its_parents_replicas() {
        let info = find("apps", "v1", "deployments").expect("served");
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "resourceVersion": "7"}, "spec": {"replicas": 4}});
        assert_eq!(
            applied_parent(info, Some("ns"), "web", &scale).expect("a parent"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7"},
                "spec": {"replicas": 4}})
        );
        let bare =
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}});
        assert!(
            applied_parent(info, None, "web", &bare)
                .expect("a parent")
                .get("spec")
                .is_none()
        );
        let code = |v: Value| {
            applied_parent(info, None, "web", &v)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(
            code(json!({"kind": "Scale", "spec": {"replicas": 1}})),
            Some(400)
        );
        assert_eq!(
            code(
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 1, "paused": true}})
            ),
            Some(400)
        );
        assert_eq!(
            code(
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "colour": "red"}})
            ),
            Some(400)
        );
        assert_eq!(
            code(
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "api"}})
            ),
            Some(400)
        );
        assert_eq!(
            code(
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": -1}})
            ),
            Some(422)
        );
    }

    #[test]
    fn a_negative_or_mistyped_count_is_refused() {
        let info = find("apps", "v1", "deployments").expect("served");
        let bad = wanted_replicas(info, "web", &json!({"spec": {"replicas": -1}}));
        assert!(matches!(bad, Err(ApiError::Invalid(..))), "{bad:?}");
        let bad = wanted_replicas(info, "web", &json!({"spec": {"replicas": "3"}}));
        assert!(matches!(bad, Err(ApiError::BadRequest(..))), "{bad:?}");
        let bad = wanted_replicas(
            info,
            "web",
            &json!({"kind": "Pod", "spec": {"replicas": 1}}),
        );
        assert!(matches!(bad, Err(ApiError::BadRequest(..))), "{bad:?}");
        assert_eq!(
            wanted_replicas(info, "web", &json!({"spec": {"replicas": 4}})).expect("valid"),
            4
        );
    }
}
