//! Sets of field paths, as `metadata.managedFields[].fieldsV1` spells them: a tree whose
//! edges are path elements (`f:<field>`, `k:<key fields as JSON>` for an item of a list
//! merged by keys, `v:<value as JSON>` for an item of a set, `i:<index>`) and whose nodes
//! are members of the set or only on the way to members. In JSON a member with nothing
//! under it is `{}`; a member with children also has `".": {}`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A set of field paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

/// Why a `fieldsV1` document does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    #[error("{0}: a fields entry must be an object")]
    NotAnObject(String),
    #[error("{0}: {1:?} is not a path element (f:, k:, v: or i:)")]
    BadElement(String, String),
    #[error("the fields nest deeper than {0} levels")]
    TooDeep(usize),
}

/// How deep a set read from a client may nest.
const MOST_DEPTH: usize = 64;

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Whether no path is a member.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Whether the path this node stands for is a member.
    pub fn is_member(&self) -> bool {
        self.member
    }

    /// The node under the element `element`, if anything lies under it.
    pub fn child(&self, element: &str) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// The elements under this node, each with its node.
    pub fn children(&self) -> impl Iterator<Item = (&String, &FieldSet)> {
        self.children.iter()
    }

    /// Makes `path` a member.
    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }

    /// Whether `path` is a member.
    pub fn contains(&self, path: &[String]) -> bool {
        self.at(path).is_some_and(|n| n.member)
    }

    /// The node at `path`, if anything lies there.
    pub fn at(&self, path: &[String]) -> Option<&FieldSet> {
        let mut node = self;
        for element in path {
            node = node.children.get(element)?;
        }
        Some(node)
    }

    /// Every path in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, theirs) in &other.children {
            self.children
                .entry(element.clone())
                .or_default()
                .union_with(theirs);
        }
    }

    /// The paths of this set that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (element, mine) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => mine.difference(theirs),
                None => mine.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, mine) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = mine.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// Every member path, parents before children.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The set without the members at the top-level paths in `paths` and without anything
    /// under `subtrees`.
    pub fn without(&self, paths: &[&[&str]], subtrees: &[&[&str]]) -> FieldSet {
        let mut out = self.clone();
        for path in paths {
            if let Some(node) = out.at_mut(path) {
                node.member = false;
            }
        }
        for path in subtrees {
            if let Some((last, parent)) = path.split_last()
                && let Some(node) = out.at_mut(parent)
            {
                node.children.remove(*last);
            }
        }
        out.prune();
        out
    }

    /// Only what lies under `subtree` (and the path to it).
    pub fn only(&self, subtree: &[&str]) -> FieldSet {
        let mut out = FieldSet::new();
        let mut node = self;
        for element in subtree {
            match node.children.get(*element) {
                Some(next) => node = next,
                None => return out,
            }
        }
        let mut slot = &mut out;
        for element in subtree {
            slot = slot.children.entry((*element).to_owned()).or_default();
        }
        *slot = node.clone();
        out
    }

    fn at_mut(&mut self, path: &[&str]) -> Option<&mut FieldSet> {
        let mut node = self;
        for element in path {
            node = node.children.get_mut(*element)?;
        }
        Some(node)
    }

    /// Drops nodes with no member under them.
    fn prune(&mut self) {
        self.children.retain(|_, child| {
            child.prune();
            !child.is_empty()
        });
    }

    /// The `fieldsV1` form.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            map.insert(element.clone(), child.to_json());
        }
        Value::Object(map)
    }

    /// Reads the `fieldsV1` form.
    pub fn from_json(value: &Value) -> Result<FieldSet, FieldsError> {
        FieldSet::read(value, "", 0)
    }

    fn read(value: &Value, at: &str, depth: usize) -> Result<FieldSet, FieldsError> {
        if depth > MOST_DEPTH {
            return Err(FieldsError::TooDeep(MOST_DEPTH));
        }
        let Value::Object(map) = value else {
            return Err(FieldsError::NotAnObject(at.to_owned()));
        };
        let mut out = FieldSet {
            member: map.is_empty() || map.contains_key("."),
            children: BTreeMap::new(),
        };
        for (element, child) in map {
            if element == "." {
                continue;
            }
            if !["f:", "k:", "v:", "i:"]
                .iter()
                .any(|p| element.starts_with(p))
            {
                return Err(FieldsError::BadElement(at.to_owned(), element.clone()));
            }
            let path = format!("{at}{}", display_element(element));
            out.children
                .insert(element.clone(), FieldSet::read(child, &path, depth + 1)?);
        }
        Ok(out)
    }
}

/// A path as Kubernetes prints it in conflicts: `.spec.containers[name="web"].image`.
pub fn display(path: &[String]) -> String {
    path.iter().map(|e| display_element(e)).collect()
}

fn display_element(element: &str) -> String {
    if let Some(field) = element.strip_prefix("f:") {
        return format!(".{field}");
    }
    if let Some(value) = element.strip_prefix("v:") {
        return format!("[={value}]");
    }
    if let Some(index) = element.strip_prefix("i:") {
        return format!("[{index}]");
    }
    if let Some(key) = element.strip_prefix("k:") {
        if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(key) {
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return format!("[{}]", parts.join(","));
        }
        return format!("[{key}]");
    }
    element.to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn the_json_form_round_trips_with_members_marked_by_a_dot() {
        let text = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}
        });
        let set = FieldSet::from_json(&text).expect("reads");
        assert!(set.contains(&path(&["f:metadata", "f:labels"])));
        assert!(set.contains(&path(&["f:metadata", "f:labels", "f:app"])));
        assert!(!set.contains(&path(&["f:metadata"])));
        assert!(set.contains(&path(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image"
        ])));
        assert_eq!(set.to_json(), text);
        assert_eq!(set.paths().len(), 5);
    }

    #[test]
    fn set_algebra_drops_what_is_left_empty() {
        let mut a = FieldSet::new();
        a.insert(&path(&["f:data", "f:x"]));
        a.insert(&path(&["f:data", "f:y"]));
        let mut b = FieldSet::new();
        b.insert(&path(&["f:data", "f:y"]));
        b.insert(&path(&["f:data", "f:z"]));
        let diff = a.difference(&b);
        assert_eq!(diff.paths(), vec![path(&["f:data", "f:x"])]);
        assert_eq!(a.intersection(&b).paths(), vec![path(&["f:data", "f:y"])]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.difference(&a).is_empty());
        assert_eq!(a.difference(&a).to_json(), json!({}));
    }

    #[test]
    fn bad_documents_are_refused() {
        assert!(FieldSet::from_json(&json!([])).is_err());
        assert!(FieldSet::from_json(&json!({"spec": {}})).is_err());
        assert!(FieldSet::from_json(&json!({"f:spec": 3})).is_err());
        let mut deep = json!({});
        for _ in 0..100 {
            deep = json!({ "f:a": deep });
        }
        assert_eq!(
            FieldSet::from_json(&deep),
            Err(FieldsError::TooDeep(MOST_DEPTH))
        );
    }

    #[test]
    fn paths_print_as_kubernetes_prints_them() {
        assert_eq!(
            display(&path(&[
                "f:spec",
                "f:containers",
                "k:{\"name\":\"web\"}",
                "f:ports",
                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}"
            ])),
            ".spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"]"
        );
        assert_eq!(
            display(&path(&["f:metadata", "f:finalizers", "v:\"a\""])),
            ".metadata.finalizers[=\"a\"]"
        );
    }
}
