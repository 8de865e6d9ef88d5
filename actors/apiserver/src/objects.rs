//! Object bookkeeping shared by the request core: reading bodies, metadata, versions, and
//! what an update keeps from the stored object.

use serde_json::{Map, Value, json};
use shoal_core::ApiError;

use crate::resources::ResourceInfo;

/// Parses a JSON body that must be an object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

pub(crate) fn meta_str<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn metadata_mut(object: &mut Map<String, Value>) -> &mut Map<String, Value> {
    crate::validate::ensure_object(object, "metadata")
}

/// The object as stored JSON, with its version set.
pub(crate) fn with_version(value: &[u8], rev: &str) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))?;
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rev));
    }
    Ok(object)
}

pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub(crate) fn check_type_meta(
    info: &ResourceInfo,
    object: &Map<String, Value>,
) -> Result<(), ApiError> {
    if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str)
        && api_version != info.api_version()
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            info.api_version()
        )));
    }
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != info.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    Ok(())
}

/// Checks that a body written to the object `name` in `namespace` is of its kind and names
/// it (or leaves its name and namespace out).
pub(crate) fn check_identity(
    info: &ResourceInfo,
    object: &Map<String, Value>,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    check_type_meta(info, object)?;
    if let Some(body_name) = meta_str(object, "name")
        && body_name != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(ns), Some(body_ns)) = (namespace, meta_str(object, "namespace"))
        && body_ns != ns
    {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    Ok(())
}

/// The stored form of an update: identity and bookkeeping from the old object; for kinds with
/// a status subresource, a main-resource update keeps the old status and a status update keeps
/// everything but the status.
pub(crate) fn merge_update(
    info: &ResourceInfo,
    old: &Map<String, Value>,
    mut new: Map<String, Value>,
    status_only: bool,
) -> Value {
    if status_only {
        let mut merged = old.clone();
        match new.remove("status") {
            Some(status) => merged.insert("status".into(), status),
            None => merged.remove("status"),
        };
        return Value::Object(merged);
    }
    if info.has_status {
        match old.get("status") {
            Some(status) => new.insert("status".into(), status.clone()),
            None => new.remove("status"),
        };
    }
    new.insert("apiVersion".into(), json!(info.api_version()));
    new.insert("kind".into(), json!(info.kind));
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let spec_changed = old.get("spec") != new.get("spec");
    let meta = metadata_mut(&mut new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("resourceVersion");
    if spec_changed && let Some(generation) = old_meta.get("generation").and_then(Value::as_i64) {
        meta.insert("generation".into(), json!(generation + 1));
    }
    Value::Object(new)
}

/// `object` as a `PartialObjectMetadata`: its metadata alone.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A `<Kind>List` object.
pub fn list_object(info: &ResourceInfo, items: Vec<Value>, version: &str) -> Value {
    json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": version},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn pods() -> &'static ResourceInfo {
        resources::find("", "v1", "pods").expect("served")
    }

    #[test]
    fn a_main_update_keeps_status_and_identity() {
        let old = json!({"metadata": {"name": "p", "uid": "u1", "creationTimestamp": "t", "generation": 1}, "spec": {"a": 1}, "status": {"phase": "Running"}});
        let new = json!({"metadata": {"name": "p", "uid": "forged", "labels": {"x": "y"}}, "spec": {"a": 2}, "status": {"phase": "Failed"}});
        let merged = merge_update(
            pods(),
            old.as_object().expect("obj"),
            new.as_object().cloned().expect("obj"),
            false,
        );
        assert_eq!(merged["status"]["phase"], "Running");
        assert_eq!(merged["metadata"]["uid"], "u1");
        assert_eq!(merged["metadata"]["labels"]["x"], "y");
        assert_eq!(merged["metadata"]["generation"], 2);
    }

    #[test]
    fn a_status_update_changes_only_the_status() {
        let old = json!({"metadata": {"name": "p", "labels": {"keep": "me"}}, "spec": {"a": 1}, "status": {"phase": "Pending"}});
        let new = json!({"metadata": {"name": "p", "labels": {}}, "spec": {"a": 9}, "status": {"phase": "Running"}});
        let merged = merge_update(
            pods(),
            old.as_object().expect("obj"),
            new.as_object().cloned().expect("obj"),
            true,
        );
        assert_eq!(merged["status"]["phase"], "Running");
        assert_eq!(merged["spec"]["a"], 1);
        assert_eq!(merged["metadata"]["labels"]["keep"], "me");
    }
}
