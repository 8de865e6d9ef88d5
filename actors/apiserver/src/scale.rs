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
