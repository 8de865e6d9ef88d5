//! Walks over objects as server-side apply sees them: each field's shape (a scalar or
//! something replaced whole, a struct, a map, a list merged by keys, a set) comes from the
//! typed model, and from it the set of fields an object sets, the merge of an applied
//! configuration into a live object, the comparison of two objects, and the removal of
//! fields nobody manages any more. All pure.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, display};
use crate::protobuf::{PatchField, is_atomic_message, patch_field};

/// How a value merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A scalar, or a list, map or struct replaced whole.
    Leaf,
    /// A struct of the typed model, merged field by field.
    Struct(&'static str),
    /// A map merged key by key; its values are structs of this message, or leaves.
    Map(Option<&'static str>),
    /// A list whose items are told apart by the comma-separated key fields.
    Keyed {
        keys: &'static str,
        item: Option<&'static str>,
    },
    /// A list of distinct scalars.
    Set,
    /// JSON the model does not describe: objects merge, everything else is replaced.
    Free,
}

/// Why an applied configuration cannot be read as its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WalkError {
    pub path: String,
    pub message: String,
}

/// The shape of an object of `kind` in `api_version`.
pub fn root(api_version: &str, kind: &str) -> Shape {
    crate::protobuf::message_of(api_version, kind).map_or(Shape::Free, Shape::Struct)
}

fn message_shape(message: Option<&'static str>) -> Shape {
    match message {
        None => Shape::Leaf,
        Some(m) if crate::strategic::ATOMIC.contains(&m) || is_atomic_message(m) => Shape::Leaf,
        Some(m) => Shape::Struct(m),
    }
}

fn merges(strategy: Option<&str>) -> bool {
    strategy.is_some_and(|s| s.split(',').any(|p| p == "merge"))
}

/// A field's shape from its Go markers, or, where it has none, from its strategic merge
/// patch tags, as Kubernetes derives it: a merge key makes a keyed list, the merge strategy
/// alone a set, and any other list is replaced whole.
fn of_field(field: PatchField) -> Shape {
    if field.list {
        return match field.apply {
            Some(a) if a.starts_with("map:") => Shape::Keyed {
                keys: &a[4..],
                item: field.message,
            },
            Some("set") => Shape::Set,
            Some(_) => Shape::Leaf,
            None => match field.merge_key {
                Some(key) if merges(field.strategy) => Shape::Keyed {
                    keys: key,
                    item: field.message,
                },
                None if merges(field.strategy) => Shape::Set,
                _ => Shape::Leaf,
            },
        };
    }
    if field.apply == Some("atomic") {
        return Shape::Leaf;
    }
    if field.map {
        return match message_shape(field.message) {
            Shape::Struct(m) => Shape::Map(Some(m)),
            _ => Shape::Map(None),
        };
    }
    message_shape(field.message)
}

/// The shape of the field `name` of a value of shape `shape` (`None`: a field the model does
/// not have).
fn field_shape(shape: Shape, name: &str) -> Option<Shape> {
    match shape {
        Shape::Struct(message) => patch_field(message, name).map(of_field),
        Shape::Map(value) => Some(message_shape(value)),
        Shape::Free => Some(Shape::Free),
        _ => None,
    }
}

fn item_shape(shape: Shape) -> Shape {
    match shape {
        Shape::Keyed { item, .. } => message_shape(item),
        _ => Shape::Leaf,
    }
}

/// The value a key field takes when an item leaves it out: the defaults of the keys
/// Kubernetes defaults (a port's protocol).
fn key_default(field: &str) -> Option<Value> {
    (field == "protocol").then(|| Value::String("TCP".into()))
}

/// The path element of a list item: `k:{…}` for a keyed list, `v:…` for a set.
fn element_of(shape: Shape, item: &Value) -> Option<String> {
    match shape {
        Shape::Keyed { keys, .. } => {
            let object = item.as_object()?;
            let mut fields = BTreeMap::new();
            for key in keys.split(',') {
                if let Some(v) = object.get(key).filter(|v| !v.is_null()) {
                    fields.insert(key, v.clone());
                } else if let Some(v) = key_default(key) {
                    fields.insert(key, v);
                }
            }
            if fields.is_empty() {
                return None;
            }
            Some(format!("k:{}", serde_json::to_string(&fields).ok()?))
        }
        Shape::Set => Some(format!("v:{}", serde_json::to_string(item).ok()?)),
        _ => None,
    }
}

fn is_list(shape: Shape) -> bool {
    matches!(shape, Shape::Keyed { .. } | Shape::Set)
}

fn field_element(name: &str) -> String {
    format!("f:{name}")
}

/// The fields an applied configuration sets: every scalar and whole-replaced value, and
/// every item of a keyed list or set. Duplicate or unidentifiable list items are errors.
pub fn to_set(config: &Value, shape: Shape) -> Result<FieldSet, WalkError> {
    let mut out = FieldSet::new();
    set_walk(config, shape, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn set_walk(
    value: &Value,
    shape: Shape,
    path: &mut Vec<String>,
    out: &mut FieldSet,
) -> Result<(), WalkError> {
    match (shape, value) {
        (Shape::Struct(_) | Shape::Map(_) | Shape::Free, Value::Object(map)) => {
            for (name, child) in map {
                let child_shape = field_shape(shape, name).unwrap_or(Shape::Leaf);
                path.push(field_element(name));
                set_walk(child, child_shape, path, out)?;
                path.pop();
            }
        }
        (Shape::Keyed { .. } | Shape::Set, Value::Array(items)) => {
            let mut seen = HashSet::new();
            for item in items {
                let Some(element) = element_of(shape, item) else {
                    return Err(WalkError {
                        path: display(path),
                        message: format!(
                            "an item of this list does not carry its key fields ({})",
                            match shape {
                                Shape::Keyed { keys, .. } => keys,
                                _ => "value",
                            }
                        ),
                    });
                };
                if !seen.insert(element.clone()) {
                    path.push(element);
                    let at = display(path);
                    return Err(WalkError {
                        path: at,
                        message: "duplicate entries for this key".into(),
                    });
                }
                path.push(element);
                out.insert(path);
                if let Shape::Struct(_) = item_shape(shape) {
                    set_walk(item, item_shape(shape), path, out)?;
                }
                path.pop();
            }
        }
        _ => out.insert(path),
    }
    Ok(())
}

/// `config` merged into `live`: its scalars and whole-replaced values win, structs and maps
/// merge field by field, keyed lists and sets item by item. A `null` removes the field.
pub fn merge(live: Option<&Value>, config: &Value, shape: Shape) -> Value {
    match (shape, live, config) {
        (
            Shape::Struct(_) | Shape::Map(_) | Shape::Free,
            Some(Value::Object(old)),
            Value::Object(new),
        ) => {
            let mut out = old.clone();
            for (name, value) in new {
                if value.is_null() {
                    out.remove(name);
                    continue;
                }
                let child_shape = field_shape(shape, name).unwrap_or(Shape::Leaf);
                let merged = merge(old.get(name), value, child_shape);
                out.insert(name.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::Keyed { .. } | Shape::Set, Some(Value::Array(old)), Value::Array(new)) => {
            Value::Array(merge_items(old, new, shape))
        }
        (_, _, Value::Object(new)) if shape != Shape::Leaf => {
            // Nothing to merge into: the configuration's fields, without its nulls.
            let mut out = Map::new();
            for (name, value) in new {
                if !value.is_null() {
                    let child_shape = field_shape(shape, name).unwrap_or(Shape::Leaf);
                    out.insert(name.clone(), merge(None, value, child_shape));
                }
            }
            Value::Object(out)
        }
        _ => config.clone(),
    }
}

/// The items of two lists merged: the configuration's items in its order, each merged into
/// the live item with its key; live items the configuration does not name stay where they
/// were among them.
fn merge_items(old: &[Value], new: &[Value], shape: Shape) -> Vec<Value> {
    let item = item_shape(shape);
    let old_keys: Vec<Option<String>> = old.iter().map(|v| element_of(shape, v)).collect();
    let new_keys: Vec<Option<String>> = new.iter().map(|v| element_of(shape, v)).collect();
    let in_new: HashSet<&String> = new_keys.iter().flatten().collect();
    let mut by_key: BTreeMap<&String, &Value> = BTreeMap::new();
    for (key, value) in old_keys.iter().zip(old) {
        if let Some(key) = key {
            by_key.entry(key).or_insert(value);
        }
    }
    let mut out = Vec::with_capacity(old.len() + new.len());
    let mut done: HashSet<&String> = HashSet::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() {
            match &old_keys[i] {
                Some(key) if in_new.contains(key) => {
                    if done.contains(key) {
                        i += 1;
                        continue;
                    }
                }
                _ => {
                    out.push(old[i].clone());
                    i += 1;
                    continue;
                }
            }
        }
        if j < new.len() {
            let live = new_keys[j].as_ref().and_then(|k| by_key.get(k).copied());
            out.push(merge(live, &new[j], item));
            if let Some(key) = &new_keys[j] {
                done.insert(key);
            }
            j += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// What changed between two objects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

/// Compares `old` with `new`, field by field as `shape` says.
pub fn compare(old: &Value, new: &Value, shape: Shape) -> Comparison {
    let mut out = Comparison::default();
    compare_walk(Some(old), Some(new), shape, &mut Vec::new(), &mut out);
    out
}

fn compare_walk(
    old: Option<&Value>,
    new: Option<&Value>,
    shape: Shape,
    path: &mut Vec<String>,
    out: &mut Comparison,
) {
    match (old, new) {
        (None, None) => {}
        (None, Some(value)) => all_paths(value, shape, path, &mut out.added),
        (Some(value), None) => all_paths(value, shape, path, &mut out.removed),
        (Some(old), Some(new)) => match (shape, old, new) {
            (
                Shape::Struct(_) | Shape::Map(_) | Shape::Free,
                Value::Object(a),
                Value::Object(b),
            ) => {
                let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for name in names {
                    let child_shape = field_shape(shape, name).unwrap_or(Shape::Leaf);
                    path.push(field_element(name));
                    compare_walk(a.get(name), b.get(name), child_shape, path, out);
                    path.pop();
                }
            }
            (Shape::Keyed { .. } | Shape::Set, Value::Array(a), Value::Array(b)) => {
                let index = |items: &'_ Vec<Value>| {
                    let mut map: BTreeMap<String, Value> = BTreeMap::new();
                    for item in items {
                        if let Some(key) = element_of(shape, item) {
                            map.entry(key).or_insert_with(|| item.clone());
                        }
                    }
                    map
                };
                let (a, b) = (index(a), index(b));
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    path.push(key.clone());
                    compare_walk(a.get(key), b.get(key), item_shape(shape), path, out);
                    path.pop();
                }
            }
            _ => {
                if old != new {
                    out.modified.insert(path);
                }
            }
        },
    }
}

/// Every path of a value added or removed whole: its scalars, maps and list items (structs
/// and lists are only on the way, as Kubernetes records them).
fn all_paths(value: &Value, shape: Shape, path: &mut Vec<String>, out: &mut FieldSet) {
    match (shape, value) {
        (Shape::Struct(_), Value::Object(map))
        | (Shape::Map(_) | Shape::Free, Value::Object(map)) => {
            if !matches!(shape, Shape::Struct(_)) {
                out.insert(path);
            }
            for (name, child) in map {
                let child_shape = field_shape(shape, name).unwrap_or(Shape::Leaf);
                path.push(field_element(name));
                all_paths(child, child_shape, path, out);
                path.pop();
            }
        }
        (Shape::Keyed { .. } | Shape::Set, Value::Array(items)) => {
            for item in items {
                if let Some(element) = element_of(shape, item) {
                    path.push(element);
                    out.insert(path);
                    if let Shape::Struct(_) = item_shape(shape) {
                        all_paths(item, item_shape(shape), path, out);
                    }
                    path.pop();
                }
            }
        }
        _ => out.insert(path),
    }
}

/// Removes from `value` every member of `last` that no set in `owned` has anything at or
/// under; a map or list this empties goes too, unless something owns it.
pub fn prune(value: &mut Value, last: &FieldSet, owned: &FieldSet, shape: Shape) {
    prune_walk(value, last, Some(owned), shape);
}

fn prune_walk(value: &mut Value, last: &FieldSet, owned: Option<&FieldSet>, shape: Shape) {
    for (element, last_child) in last.children() {
        let owned_child = owned.and_then(|o| o.child(element));
        let unowned = owned_child.is_none_or(FieldSet::is_empty);
        if last_child.is_member() && unowned {
            remove_element(value, element, shape);
            continue;
        }
        let child_shape = if is_list(shape) {
            item_shape(shape)
        } else {
            element
                .strip_prefix("f:")
                .and_then(|name| field_shape(shape, name))
                .unwrap_or(Shape::Leaf)
        };
        let Some(child) = element_mut(value, element, shape) else {
            continue;
        };
        let was_empty = is_empty_container(child);
        prune_walk(child, last_child, owned_child, child_shape);
        let owned_itself = owned_child.is_some_and(FieldSet::is_member);
        if !was_empty && is_empty_container(child) && !owned_itself {
            remove_element(value, element, shape);
        }
    }
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn element_index(items: &[Value], element: &str, shape: Shape) -> Option<usize> {
    items
        .iter()
        .position(|item| element_of(shape, item).as_deref() == Some(element))
}

fn element_mut<'a>(value: &'a mut Value, element: &str, shape: Shape) -> Option<&'a mut Value> {
    match value {
        Value::Object(map) => map.get_mut(element.strip_prefix("f:")?),
        Value::Array(items) => {
            let index = element_index(items, element, shape)?;
            items.get_mut(index)
        }
        _ => None,
    }
}

fn remove_element(value: &mut Value, element: &str, shape: Shape) {
    match value {
        Value::Object(map) => {
            if let Some(name) = element.strip_prefix("f:") {
                map.remove(name);
            }
        }
        Value::Array(items) => {
            if let Some(index) = element_index(items, element, shape) {
                items.remove(index);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment() -> Shape {
        root("apps/v1", "Deployment")
    }

    fn names(set: &FieldSet) -> Vec<String> {
        set.paths().iter().map(|p| display(p)).collect()
    }

    #[test]
    fn shapes_come_from_the_markers_and_the_patch_tags() {
        let Shape::Struct(pod_spec) =
            of_field(patch_field("k8s.io.api.core.v1.PodTemplateSpec", "spec").expect("spec"))
        else {
            panic!("a pod spec is a struct");
        };
        let shape = |name| of_field(patch_field(pod_spec, name).expect(name));
        assert!(matches!(
            shape("containers"),
            Shape::Keyed { keys: "name", .. }
        ));
        assert_eq!(shape("nodeSelector"), Shape::Leaf, "+mapType=atomic");
        assert_eq!(shape("tolerations"), Shape::Leaf, "+listType=atomic");
        let container = "k8s.io.api.core.v1.Container";
        assert!(matches!(
            of_field(patch_field(container, "ports").expect("ports")),
            Shape::Keyed {
                keys: "containerPort,protocol",
                ..
            }
        ));
        assert_eq!(
            of_field(patch_field(container, "args").expect("args")),
            Shape::Leaf
        );
        let meta = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";
        assert_eq!(
            of_field(patch_field(meta, "finalizers").expect("f")),
            Shape::Set
        );
        assert_eq!(
            of_field(patch_field(meta, "labels").expect("l")),
            Shape::Map(None)
        );
        let deployment_spec = "k8s.io.api.apps.v1.DeploymentSpec";
        assert_eq!(
            of_field(patch_field(deployment_spec, "selector").expect("selector")),
            Shape::Leaf,
            "a label selector is +structType=atomic"
        );
    }

    #[test]
    fn an_applied_configuration_owns_its_leaves_and_list_items() {
        let config = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}
                ]}}
            }
        });
        let set = to_set(&config, deployment()).expect("reads");
        assert_eq!(
            names(&set),
            vec![
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.selector",
                ".spec.template.spec.containers[name=\"web\"]",
                ".spec.template.spec.containers[name=\"web\"].image",
                ".spec.template.spec.containers[name=\"web\"].name",
                ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"]",
                ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
            ]
        );
        let twice =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        let err = to_set(&twice, deployment()).expect_err("duplicates");
        assert_eq!(err.path, ".spec.template.spec.containers[name=\"a\"]");
        let keyless = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert!(to_set(&keyless, deployment()).is_err());
    }

    #[test]
    fn merging_keeps_live_items_and_replaces_atomic_values() {
        let live = json!({"spec": {
            "selector": {"matchLabels": {"a": "1", "b": "2"}},
            "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "s"},
                {"name": "web", "image": "old", "imagePullPolicy": "Always"}
            ]}}
        }});
        let config = json!({"spec": {
            "selector": {"matchLabels": {"a": "1"}},
            "template": {"spec": {"containers": [
                {"name": "web", "image": "new"},
                {"name": "extra", "image": "e"}
            ]}}
        }});
        let merged = merge(Some(&live), &config, deployment());
        assert_eq!(
            merged["spec"]["selector"],
            json!({"matchLabels": {"a": "1"}})
        );
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "sidecar", "image": "s"},
                {"name": "web", "image": "new", "imagePullPolicy": "Always"},
                {"name": "extra", "image": "e"}
            ])
        );
    }

    #[test]
    fn comparison_records_maps_and_items_added_whole() {
        let old = json!({"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}});
        let new =
            json!({"metadata": {"name": "x", "labels": {"l": "v"}}, "data": {"a": "9", "c": "3"}});
        let c = compare(&old, &new, root("v1", "ConfigMap"));
        assert_eq!(
            names(&c.added),
            vec![".data.c", ".metadata.labels", ".metadata.labels.l"]
        );
        assert_eq!(names(&c.modified), vec![".data.a"]);
        assert_eq!(names(&c.removed), vec![".data.b"]);
    }

    #[test]
    fn pruning_removes_only_what_nobody_owns() {
        let mut value =
            json!({"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}});
        let mut last = FieldSet::new();
        for p in [
            ["f:data", "f:x"],
            ["f:data", "f:y"],
            ["f:metadata", "f:labels"],
        ] {
            last.insert(&p.map(String::from));
        }
        last.insert(&["f:metadata", "f:labels", "f:a"].map(String::from));
        let mut owned = FieldSet::new();
        owned.insert(&["f:data", "f:y"].map(String::from));
        prune(&mut value, &last, &owned, root("v1", "ConfigMap"));
        assert_eq!(
            value,
            json!({"metadata": {"name": "c"}, "data": {"y": "2"}})
        );
    }
}
