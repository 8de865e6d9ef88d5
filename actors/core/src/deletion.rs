//! What the API server and the garbage collector both read of an object's deletion: its
//! finalizers, whether it is marked, and the collector's own finalizers.

use serde_json::Value;

/// The finalizer that keeps an owner until its dependents have lost their references to it.
pub const ORPHAN: &str = "orphan";
/// The finalizer that keeps an owner until its blocking dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";

/// The object's finalizers (`metadata.finalizers`), in order.
pub fn finalizers_of(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Whether the object is marked for deletion (`metadata.deletionTimestamp`).
pub fn is_deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finalizers_and_the_mark_are_read_from_the_metadata() {
        let marked = json!({"metadata": {"finalizers": ["a.io/x", 7, "orphan"], "deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert_eq!(finalizers_of(&marked), vec!["a.io/x", ORPHAN]);
        assert!(is_deleting(&marked));
        let live = json!({"metadata": {"deletionTimestamp": null}});
        assert!(finalizers_of(&live).is_empty());
        assert!(!is_deleting(&live));
    }
}
