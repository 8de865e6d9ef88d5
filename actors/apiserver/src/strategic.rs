//! Strategic merge patch (kubectl-contract §6.1), as kubectl's `apply`, `edit`, `set`,
//! `rollout` and `patch` send it for built-in kinds. The patch is a partial object merged
//! into the stored one, where how each list merges comes from the field's Go tags (in the
//! protobuf schema): lists with a merge key merge element by element, primitive lists with
//! the merge strategy are unions, and every other list is replaced. The directives:
//!
//! - `"$patch": "replace"` in an object replaces it; `"$patch": "delete"` deletes it; as
//!   a list element, `{"$patch": "replace"}` replaces the whole list, and
//!   `{"<key>": …, "$patch": "delete"}` deletes that element;
//! - `"$retainKeys": [...]` keeps only the listed fields of the stored object;
//! - `"$setElementOrder/<field>": [...]` gives the order of a merged list;
//! - `"$deleteFromPrimitiveList/<field>": [...]` removes values from a primitive list.
//!
//! No directive is ever stored.

use serde_json::{Map, Value};

use crate::protobuf::{PatchField, patch_field};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategicError {
    #[error("a strategic merge patch must be a JSON object")]
    NotAnObject,
    #[error("unknown patch directive {0:?} (expected \"replace\", \"delete\" or \"merge\")")]
    UnknownDirective(String),
    #[error("{0} must be a list")]
    NotAList(String),
    #[error("an element of {field} does not contain its merge key {key:?}")]
    NoMergeKey { field: String, key: String },
    #[error("the patch nests deeper than {0} levels")]
    TooDeep(usize),
}

/// How deep a patch may nest.
const MOST_DEPTH: usize = 100;

/// Messages whose JSON form is a scalar or free-form: replaced whole.
pub(crate) const ATOMIC: &[&str] = &[
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
];

/// Applies `patch` to `original`, an object of protobuf message `message` (`None`: a kind
/// the schema does not know, merged as plain JSON with lists replaced).
pub fn apply(
    original: &Value,
    patch: &Value,
    message: Option<&str>,
) -> Result<Value, StrategicError> {
    let Value::Object(patch) = patch else {
        return Err(StrategicError::NotAnObject);
    };
    let mut out = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    match merge_object(&mut out, patch, message, "", 0)? {
        Outcome::Kept => Ok(Value::Object(out)),
        // Deleting the whole object leaves an empty one, which the update path refuses.
        Outcome::Deleted => Ok(Value::Object(Map::new())),
    }
}

enum Outcome {
    Kept,
    Deleted,
}

fn directive(map: &Map<String, Value>) -> Result<Option<&str>, StrategicError> {
    match map.get("$patch") {
        None => Ok(None),
        Some(Value::String(d)) if matches!(d.as_str(), "replace" | "delete" | "merge") => {
            Ok(Some(d.as_str()))
        }
        Some(other) => Err(StrategicError::UnknownDirective(
            other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned),
        )),
    }
}

/// A value with every directive taken out, as a patch adds it where nothing was.
fn stripped(value: &Value, depth: usize) -> Result<Value, StrategicError> {
    if depth > MOST_DEPTH {
        return Err(StrategicError::TooDeep(MOST_DEPTH));
    }
    Ok(match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                if !k.starts_with('$') {
                    out.insert(k.clone(), stripped(v, depth + 1)?);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(
                    |i| !matches!(i, Value::Object(m) if m.get("$patch").is_some() && m.len() == 1),
                )
                .map(|i| stripped(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn merge_object(
    out: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    message: Option<&str>,
    at: &str,
    depth: usize,
) -> Result<Outcome, StrategicError> {
    if depth > MOST_DEPTH {
        return Err(StrategicError::TooDeep(MOST_DEPTH));
    }
    match directive(patch)? {
        Some("delete") => return Ok(Outcome::Deleted),
        Some("replace") => {
            let Value::Object(replacement) = stripped(&Value::Object(patch.clone()), depth)? else {
                return Err(StrategicError::NotAnObject);
            };
            *out = replacement;
            return Ok(Outcome::Kept);
        }
        _ => {}
    }
    if let Some(keep) = patch.get("$retainKeys") {
        let Value::Array(keep) = keep else {
            return Err(StrategicError::NotAList(path(at, "$retainKeys")));
        };
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        let field = message.and_then(|m| patch_field(m, key));
        let here = path(at, key);
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(inner) if !is_atomic(field) => {
                let mut merged = match out.remove(key) {
                    Some(Value::Object(existing)) => existing,
                    _ => Map::new(),
                };
                // A map's keys are free: its values merge as plain JSON.
                let child = field.filter(|f| !f.map).and_then(|f| f.message);
                match merge_map_or_object(&mut merged, inner, field, child, &here, depth + 1)? {
                    Outcome::Kept => {
                        out.insert(key.clone(), Value::Object(merged));
                    }
                    Outcome::Deleted => {}
                }
            }
            Value::Array(items) => {
                let existing = match out.remove(key) {
                    Some(Value::Array(existing)) => existing,
                    _ => Vec::new(),
                };
                let merged = merge_list(existing, items, field, &here, depth + 1)?;
                out.insert(key.clone(), Value::Array(merged));
            }
            other => {
                out.insert(key.clone(), stripped(other, depth + 1)?);
            }
        }
    }
    // The parallel lists, once the lists they speak of are merged.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let Value::Array(gone) = value else {
                return Err(StrategicError::NotAList(path(at, key)));
            };
            if let Some(Value::Array(items)) = out.get_mut(field) {
                items.retain(|v| !gone.contains(v));
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            let Value::Array(order) = value else {
                return Err(StrategicError::NotAList(path(at, key)));
            };
            let merge_key = message
                .and_then(|m| patch_field(m, field))
                .and_then(|f| f.merge_key);
            if let Some(Value::Array(items)) = out.get_mut(field) {
                reorder(items, order, merge_key);
            }
        }
    }
    Ok(Outcome::Kept)
}

/// A map field (labels, annotations, a selector) merges key by key, its values replaced;
/// a message merges field by field.
fn merge_map_or_object(
    out: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    field: Option<PatchField>,
    message: Option<&str>,
    at: &str,
    depth: usize,
) -> Result<Outcome, StrategicError> {
    if field.is_some_and(|f| f.map && f.message.is_none()) {
        if let Some(d) = directive(patch)? {
            match d {
                "delete" => return Ok(Outcome::Deleted),
                "replace" => {
                    out.clear();
                }
                _ => {}
            }
        }
        for (k, v) in patch {
            if k.starts_with('$') {
                continue;
            }
            match v {
                Value::Null => {
                    out.remove(k);
                }
                v => {
                    out.insert(k.clone(), stripped(v, depth + 1)?);
                }
            }
        }
        return Ok(Outcome::Kept);
    }
    merge_object(out, patch, message, at, depth)
}

fn is_atomic(field: Option<PatchField>) -> bool {
    field
        .and_then(|f| f.message)
        .is_some_and(|m| ATOMIC.contains(&m))
}

fn merges(field: Option<PatchField>) -> bool {
    field
        .and_then(|f| f.strategy)
        .is_some_and(|s| s.split(',').any(|s| s == "merge"))
}

fn merge_list(
    mut existing: Vec<Value>,
    patch: &[Value],
    field: Option<PatchField>,
    at: &str,
    depth: usize,
) -> Result<Vec<Value>, StrategicError> {
    if depth > MOST_DEPTH {
        return Err(StrategicError::TooDeep(MOST_DEPTH));
    }
    let replace_all = patch.iter().any(|item| {
        matches!(item, Value::Object(m) if m.get("$patch") == Some(&Value::String("replace".into())) && m.len() == 1)
    });
    if replace_all || !merges(field) {
        return match stripped(&Value::Array(patch.to_vec()), depth)? {
            Value::Array(items) => Ok(items),
            _ => Ok(Vec::new()),
        };
    }
    let Some(key) = field.and_then(|f| f.merge_key) else {
        // A primitive list with the merge strategy: a union.
        for item in patch {
            if !existing.contains(item) {
                existing.push(stripped(item, depth)?);
            }
        }
        return Ok(existing);
    };
    let message = field.and_then(|f| f.message);
    for item in patch {
        let Value::Object(item) = item else {
            return Err(StrategicError::NoMergeKey {
                field: at.to_owned(),
                key: key.to_owned(),
            });
        };
        let Some(id) = item.get(key) else {
            return Err(StrategicError::NoMergeKey {
                field: at.to_owned(),
                key: key.to_owned(),
            });
        };
        let found = existing.iter().position(|e| e.get(key) == Some(id));
        if directive(item)? == Some("delete") {
            existing.retain(|e| e.get(key) != Some(id));
            continue;
        }
        match found {
            Some(i) => {
                let mut merged = match std::mem::take(&mut existing[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                merge_object(&mut merged, item, message, at, depth + 1)?;
                existing[i] = Value::Object(merged);
            }
            None => {
                let mut merged = Map::new();
                merge_object(&mut merged, item, message, at, depth + 1)?;
                existing.push(Value::Object(merged));
            }
        }
    }
    Ok(existing)
}

/// Puts `items` in the order `order` gives (by merge key, or by value for a primitive
/// list); items it does not name keep their order, after the named ones.
fn reorder(items: &mut [Value], order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| -> usize {
        let wanted = id(v);
        order
            .iter()
            .position(|o| id(o) == wanted)
            .unwrap_or(order.len())
    };
    // A stable sort keeps the unnamed ones in their order.
    items.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DEPLOYMENT: &str = "k8s.io.api.apps.v1.Deployment";
    const POD: &str = "k8s.io.api.core.v1.Pod";

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"]},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
                "template": {"spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.26", "env": [{"name": "A", "value": "1"}], "args": ["-x"]},
                        {"name": "sidecar", "image": "busybox"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                }},
            },
        })
    }

    fn patched(patch: Value) -> Value {
        apply(&deployment(), &patch, Some(DEPLOYMENT)).expect("applies")
    }

    #[test]
    fn set_image_merges_the_container_by_name_and_keeps_the_order() {
        let out = patched(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.27", "name": "web"}],
        }}}}));
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:1.27");
        assert_eq!(containers[0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(containers[1]["name"], "sidecar");
        assert!(
            out["spec"]["template"]["spec"]
                .get("$setElementOrder/containers")
                .is_none()
        );
    }

    #[test]
    fn new_elements_are_appended_and_deleted_ones_removed() {
        let out = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"},
            {"name": "log", "image": "busybox", "env": [{"name": "B", "value": "2", "$patch": "merge"}]},
        ]}}}}));
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().map(Vec::len), Some(2));
        assert_eq!(containers[1]["name"], "log");
        assert_eq!(containers[1]["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn nested_lists_merge_by_their_own_keys_and_other_lists_are_replaced() {
        let out = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "C", "value": "3"}], "args": ["-y"]},
        ]}}}}));
        let web = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            web["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(web["args"], json!(["-y"]), "args have no merge strategy");
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let out = patched(
            json!({"metadata": {"labels": {"tier": null, "v": "2"}}, "spec": {"replicas": null}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "v": "2"}));
        assert!(out["spec"].get("replicas").is_none());
    }

    #[test]
    fn replace_and_delete_directives() {
        let out = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"},
            {"name": "only", "image": "x"},
        ]}}}}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let out = patched(json!({"metadata": {"labels": {"$patch": "replace", "new": "1"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));
        let out = patched(json!({"spec": {"strategy": {"$patch": "delete"}}}));
        assert!(out["spec"].get("strategy").is_none());
    }

    #[test]
    fn retain_keys_drops_what_is_not_listed() {
        let out =
            patched(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        // Pod volumes: merged by name, each with retainKeys.
        let out = patched(json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}},
        ]}}}}));
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}}])
        );
    }

    #[test]
    fn primitive_lists_with_the_merge_strategy_are_unions() {
        let out = patched(json!({"metadata": {
            "finalizers": ["b", "c"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
        }}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn service_ports_merge_by_port_through_the_pod_schema_too() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = apply(
            &svc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            Some("k8s.io.api.core.v1.Service"),
        )
        .expect("applies");
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
        // Inline structs: a pod volume's source fields are found through VolumeSource.
        let pod = json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "a", "items": [{"key": "k", "path": "p"}]}}]}});
        let out = apply(
            &pod,
            &json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "b"}}]}}),
            Some(POD),
        )
        .expect("applies");
        assert_eq!(out["spec"]["volumes"][0]["configMap"]["name"], "b");
        assert_eq!(
            out["spec"]["volumes"][0]["configMap"]["items"][0]["key"],
            "k"
        );
    }

    #[test]
    fn bad_patches_are_errors_not_panics() {
        let d = deployment();
        for (patch, want) in [
            (json!([1]), StrategicError::NotAnObject),
            (
                json!({"$patch": "explode"}),
                StrategicError::UnknownDirective("explode".into()),
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                StrategicError::NoMergeKey {
                    field: "spec.template.spec.containers".into(),
                    key: "name".into(),
                },
            ),
            (
                json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
                StrategicError::NotAList("metadata.$setElementOrder/finalizers".into()),
            ),
        ] {
            assert_eq!(apply(&d, &patch, Some(DEPLOYMENT)), Err(want), "{patch}");
        }
        let mut deep = json!({"x": 1});
        for _ in 0..200 {
            deep = json!({"a": deep});
        }
        assert!(matches!(
            apply(&d, &deep, Some(DEPLOYMENT)),
            Err(StrategicError::TooDeep(_))
        ));
    }

    #[test]
    fn an_unknown_kind_merges_as_plain_json() {
        let out = apply(
            &json!({"a": {"b": 1, "c": [1, 2]}}),
            &json!({"a": {"c": [3], "$patch": "merge"}}),
            None,
        )
        .expect("applies");
        assert_eq!(out, json!({"a": {"b": 1, "c": [3]}}));
    }
}
