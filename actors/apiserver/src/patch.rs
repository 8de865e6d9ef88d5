//! Applying a PATCH body to an object: JSON patch (RFC 6902) and JSON merge patch (RFC 7396)
//! through the `json-patch` crate, and Kubernetes' strategic merge patch
//! ([`crate::strategic`]). Pure: the object and the patch in, the result out.

use serde_json::Value;
use shoal_core::error::FieldCause;
use shoal_core::{ApiError, PatchKind};

use crate::resources::ResourceInfo;
use crate::validate::subject;

/// The object after `patch`. A body that is not a patch of its kind is a 400; a patch that
/// cannot be applied to this object (a failed `test`, a missing path) is a 422.
pub fn apply(
    info: &ResourceInfo,
    name: &str,
    object: &Value,
    kind: PatchKind,
    patch: &[u8],
) -> Result<Value, ApiError> {
    let mut result = object.clone();
    match kind {
        PatchKind::Merge => {
            let doc: Value = serde_json::from_slice(patch).map_err(|e| {
                ApiError::BadRequest(format!("the merge patch is not valid JSON: {e}"))
            })?;
            if !doc.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch of an object must be a JSON object".into(),
                ));
            }
            json_patch::merge(&mut result, &doc);
        }
        PatchKind::Strategic => {
            let doc: Value = serde_json::from_slice(patch).map_err(|e| {
                ApiError::BadRequest(format!("the strategic merge patch is not valid JSON: {e}"))
            })?;
            // The object says what it is (a Scale, through the scale subresource).
            let api_version = object
                .get("apiVersion")
                .and_then(Value::as_str)
                .map_or_else(|| info.api_version(), str::to_owned);
            let kind = object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or(info.kind);
            let message = crate::protobuf::message_of(&api_version, kind);
            result = crate::strategic::apply(object, &doc, message)
                .map_err(|e| ApiError::BadRequest(format!("invalid strategic merge patch: {e}")))?;
        }
        // An applied configuration is not a patch of an object in hand: the core applies it
        // with its managers (`crate::managed`); no other door takes it.
        PatchKind::Apply => return Err(ApiError::UnsupportedMediaType),
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(patch).map_err(|e| {
                ApiError::BadRequest(format!("the JSON patch is not a list of operations: {e}"))
            })?;
            json_patch::patch(&mut result, &ops).map_err(|e| {
                ApiError::Invalid(
                    subject(info, name),
                    vec![FieldCause {
                        reason: "FieldValueInvalid",
                        field: String::new(),
                        message: e.to_string(),
                    }],
                )
            })?;
        }
    }
    if !result.is_object() {
        return Err(ApiError::BadRequest(
            "the patch replaced the object with something that is not an object".into(),
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources;

    fn pods() -> &'static ResourceInfo {
        resources::find("", "v1", "pods").expect("served")
    }

    #[test]
    fn a_merge_patch_sets_and_removes_labels_like_kubectl_label() {
        let pod = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}});
        let out = apply(
            pods(),
            "p",
            &pod,
            PatchKind::Merge,
            br#"{"metadata":{"labels":{"a":"9","b":null}}}"#,
        )
        .expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({"a": "9"}));
    }

    #[test]
    fn a_json_patch_replaces_and_tests() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "old"}]}});
        let ops = br#"[{"op":"test","path":"/spec/containers/0/image","value":"old"},{"op":"replace","path":"/spec/containers/0/image","value":"new"}]"#;
        let out = apply(pods(), "p", &pod, PatchKind::Json, ops).expect("applies");
        assert_eq!(out["spec"]["containers"][0]["image"], "new");
    }

    #[test]
    fn a_failed_json_patch_is_unprocessable_and_garbage_is_a_bad_request() {
        let pod = json!({"metadata": {"name": "p"}});
        let failed = apply(
            pods(),
            "p",
            &pod,
            PatchKind::Json,
            br#"[{"op":"remove","path":"/spec/nothing"}]"#,
        )
        .expect_err("fails");
        assert_eq!(failed.code(), 422);
        assert_eq!(
            apply(pods(), "p", &pod, PatchKind::Json, b"{}")
                .expect_err("not a list")
                .code(),
            400
        );
        assert_eq!(
            apply(pods(), "p", &pod, PatchKind::Merge, b"[1]")
                .expect_err("not an object")
                .code(),
            400
        );
        assert_eq!(
            apply(pods(), "p", &pod, PatchKind::Merge, b"{")
                .expect_err("cut")
                .code(),
            400
        );
    }

    #[test]
    fn a_patch_cannot_turn_the_object_into_a_scalar() {
        let pod = json!({"metadata": {"name": "p"}});
        let err = apply(
            pods(),
            "p",
            &pod,
            PatchKind::Json,
            br#"[{"op":"replace","path":"","value":3}]"#,
        )
        .expect_err("refused");
        assert_eq!(err.code(), 400);
    }
}
