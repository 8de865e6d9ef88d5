//! Fields a kind does not have (`?fieldValidation=`, kubectl-contract §4.3): Kubernetes never
//! stores them; `Strict` refuses the write naming each, `Warn` (the default) names each in
//! a warning, `Ignore` drops them quietly. What a kind has is what its `k8s-openapi` type
//! keeps when the object is read into it and written back.

use serde_json::Value;
use shoal_core::{ApiError, FieldValidation};

use crate::kinds::{roundtrip, roundtrip_of};
use crate::resources::ResourceInfo;

/// One field the kind does not have: as Kubernetes names it (`spec.containers[0].foo`) and
/// as a JSON pointer to remove it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub path: String,
    pointer: String,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn missing(given: &Value, kept: &Value, path: &str, pointer: &str, out: &mut Vec<Unknown>) {
    match (given, kept) {
        (Value::Object(given), Value::Object(kept)) => {
            for (key, value) in given {
                // A null is an unset field, known or not.
                if value.is_null() {
                    continue;
                }
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let at = format!("{pointer}/{}", escape(key));
                match kept.get(key) {
                    None => out.push(Unknown {
                        path: here,
                        pointer: at,
                    }),
                    Some(kept) => missing(value, kept, &here, &at, out),
                }
            }
        }
        (Value::Array(given), Value::Array(kept)) => {
            for (i, (g, k)) in given.iter().zip(kept).enumerate() {
                missing(
                    g,
                    k,
                    &format!("{path}[{i}]"),
                    &format!("{pointer}/{i}"),
                    out,
                );
            }
        }
        _ => {}
    }
}

/// The fields of `object` its kind does not have, in the order they appear; an error
/// when the object does not read as its kind at all.
pub fn unknown_fields(
    info: &ResourceInfo,
    object: &Value,
) -> Result<Vec<Unknown>, serde_json::Error> {
    unknown_in(object, roundtrip_of(info, object))
}

/// Refuses, as `Strict` does, an object of `kind` (one no resource serves: a `Scale`) that
/// names fields the kind does not have.
pub fn refuse_unknown(kind: &str, object: &Value) -> Result<(), ApiError> {
    let unknown = unknown_in(object, roundtrip(kind, object))
        .map_err(|e| ApiError::BadRequest(format!("unable to decode {kind} body: {e}")))?;
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(strict_error(&named(&unknown)))
    }
}

fn named(unknown: &[Unknown]) -> Vec<String> {
    unknown
        .iter()
        .map(|u| format!("unknown field {:?}", u.path))
        .collect()
}

fn strict_error(named: &[String]) -> ApiError {
    ApiError::BadRequest(format!("strict decoding error: {}", named.join(", ")))
}

fn unknown_in(
    object: &Value,
    kept: Option<Result<Value, serde_json::Error>>,
) -> Result<Vec<Unknown>, serde_json::Error> {
    let mut out = Vec::new();
    if let Some(kept) = kept {
        missing(object, &kept?, "", "", &mut out);
    }
    Ok(out)
}

/// Applies `mode` to `object`: removes every unknown field, and returns the warnings to
/// send, or the error when `Strict` finds any. An object that does not read as its kind
/// is a 400 whatever the mode: the typed check of a request body.
pub fn enforce(
    info: &ResourceInfo,
    object: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    // The URL says what the object is when the body does not.
    if let Value::Object(map) = object {
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(info.api_version()));
        map.entry("kind")
            .or_insert_with(|| Value::String(info.kind.to_owned()));
    }
    let unknown = unknown_fields(info, object)
        .map_err(|e| ApiError::BadRequest(format!("unable to decode {} body: {e}", info.kind)))?;
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let named = named(&unknown);
    if mode == FieldValidation::Strict {
        return Err(strict_error(&named));
    }
    // Deepest first, so that removing one never moves another (list indexes).
    for u in unknown.iter().rev() {
        remove(object, &u.pointer);
    }
    Ok(if mode == FieldValidation::Warn {
        named
    } else {
        Vec::new()
    })
}

fn remove(object: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match object.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&key);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::find;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"any/key": "v"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "replicas": 1,
                "bogus": true,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "a", "image": "x", "resources": {}},
                        {"name": "b", "image": "y", "colour": "red", "ports": [{"containerPort": 80, "what": 1}]},
                    ], "volumes": [{"name": "v", "emptyDir": {}}]},
                },
            },
            "status": {},
        })
    }

    fn deployments() -> &'static ResourceInfo {
        find("apps", "v1", "deployments").expect("served")
    }

    #[test]
    fn unknown_fields_are_named_as_kubernetes_names_them() {
        let paths: Vec<String> = unknown_fields(deployments(), &deployment())
            .expect("a Deployment")
            .into_iter()
            .map(|u| u.path)
            .collect();
        assert_eq!(
            paths,
            [
                "spec.bogus",
                "spec.template.spec.containers[1].colour",
                "spec.template.spec.containers[1].ports[0].what"
            ]
        );
        let mut clean = deployment();
        let info = find("apps", "v1", "deployments").expect("served");
        enforce(info, &mut clean, FieldValidation::Ignore).expect("ignored");
        assert!(
            unknown_fields(deployments(), &clean)
                .expect("a Deployment")
                .is_empty(),
            "{clean}"
        );
        // Whatever the mode, a body that is not a Deployment is refused.
        let mut bare = json!({"metadata": {"name": "web"}});
        enforce(info, &mut bare, FieldValidation::Strict).expect("the URL names the kind");
        let mut wrong = json!({"spec": {"replicas": "three"}});
        let err = enforce(info, &mut wrong, FieldValidation::Ignore).expect_err("not a Deployment");
        assert_eq!(err.code(), 400);
        // What the kind has is kept as it was sent.
        assert_eq!(clean["metadata"]["labels"]["any/key"], "v");
        assert_eq!(
            clean["spec"]["template"]["spec"]["volumes"][0]["emptyDir"],
            json!({})
        );
    }

    #[test]
    fn strict_refuses_warn_warns_and_neither_stores_them() {
        let info = find("apps", "v1", "deployments").expect("served");
        let mut object = deployment();
        let err = enforce(info, &mut object, FieldValidation::Strict).expect_err("strict");
        assert_eq!(err.code(), 400);
        assert_eq!(
            err.to_string(),
            r#"strict decoding error: unknown field "spec.bogus", unknown field "spec.template.spec.containers[1].colour", unknown field "spec.template.spec.containers[1].ports[0].what""#
        );
        let warnings = enforce(info, &mut object, FieldValidation::Warn).expect("warned");
        assert_eq!(warnings.len(), 3);
        assert_eq!(warnings[0], r#"unknown field "spec.bogus""#);
        assert!(object["spec"].get("bogus").is_none());
        let mut known = deployment();
        known["spec"].as_object_mut().expect("spec").remove("bogus");
        known["spec"]["template"]["spec"]["containers"][1] = json!({"name": "b", "image": "y"});
        assert_eq!(
            enforce(info, &mut known, FieldValidation::Strict).expect("all known"),
            Vec::<String>::new()
        );
    }
}
