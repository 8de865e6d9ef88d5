//! The garbage collector: deletes objects whose owners are gone, and finishes the deletion of
//! owners deleted with the `Orphan` or `Foreground` policy, as Kubernetes' collector does.
//!
//! - A dependent none of whose owners is left (owners that are gone, or deleted in the
//!   foreground) is deleted: in the foreground when an owner waits for it and it has
//!   dependents of its own, else in the background. A dependent that keeps a live owner only
//!   loses its references to the others.
//! - An owner marked for deletion with the `orphan` finalizer has its references removed
//!   from every dependent, and then loses the finalizer.
//! - An owner marked for deletion with the `foregroundDeletion` finalizer loses it once no
//!   dependent that blocks its deletion (`blockOwnerDeletion`) is left.
//!
//! An owner is matched by uid: an object of the same name made again is another owner.
//!
//! Each look reads every resource's objects as metadata from the API server's watch cache,
//! as Kubernetes' collector keeps metadata informers. The resources are read one after
//! another, and a cache may be a little behind, so an owner the look did not see is looked
//! up live before a dependent is deleted or loses its reference to it; and an object is read
//! live before it is changed, its update carrying the version read.
//!
//! This module is the pure core: what the collector decides from what it saw. [`actor`] is
//! the shell that reads the objects and does what was decided.

mod actor;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use shoal_core::deletion::{FOREGROUND, ORPHAN, finalizers_of, is_deleting};

pub use actor::{GarbageCollector, GarbageCollectorArgs, GarbageCollectorMsg};

/// A resource the collector looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    /// Plural: `configmaps`.
    pub resource: String,
    /// The kind its objects are, as owner references name it: `ConfigMap`.
    pub kind: String,
    pub namespaced: bool,
}

impl Resource {
    /// Whether an owner reference's `apiVersion` and `kind` name this resource's objects.
    pub fn holds(&self, api_version: &str, kind: &str) -> bool {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.kind == kind && self.group == group
    }
}

/// Where an object lives: its resource (an index into the collector's list), namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
}

/// One owner reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub uid: String,
    /// `blockOwnerDeletion`: a foreground deletion of the owner waits for this dependent.
    pub blocks: bool,
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// What the collector sees of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectView {
    pub target: Target,
    pub uid: String,
    pub owners: Vec<OwnerRef>,
    pub finalizers: Vec<String>,
    /// Marked for deletion (`deletionTimestamp`).
    pub deleting: bool,
}

impl ObjectView {
    /// Reads the collector's fields from an object of `resource`.
    pub fn from_object(resource: usize, object: &Value) -> Option<ObjectView> {
        let meta = object.get("metadata")?;
        Some(ObjectView {
            target: Target {
                resource,
                namespace: meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                name: meta.get("name")?.as_str()?.to_owned(),
            },
            uid: meta.get("uid")?.as_str()?.to_owned(),
            owners: meta
                .get("ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let text =
                        |field: &str| r.get(field).and_then(Value::as_str).map(str::to_owned);
                    Some(OwnerRef {
                        uid: text("uid")?,
                        blocks: r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true),
                        api_version: text("apiVersion").unwrap_or_default(),
                        kind: text("kind").unwrap_or_default(),
                        name: text("name").unwrap_or_default(),
                    })
                })
                .collect(),
            finalizers: finalizers_of(object),
            deleting: is_deleting(object),
        })
    }
}

/// The deletion policy of a delete the collector makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
}

/// What the collector does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete the object (only if it is still the one with this uid).
    Delete {
        target: Target,
        uid: String,
        policy: Policy,
    },
    /// Remove the references to these owners from the object.
    DropOwners { target: Target, owners: Vec<String> },
    /// Remove a finalizer of the collector's from the object.
    RemoveFinalizer {
        target: Target,
        finalizer: &'static str,
    },
}

impl Action {
    /// The object the action is about.
    pub fn target(&self) -> &Target {
        match self {
            Action::Delete { target, .. }
            | Action::DropOwners { target, .. }
            | Action::RemoveFinalizer { target, .. } => target,
        }
    }
}

/// The pure core: what to do, given every object.
pub fn decide(objects: &[ObjectView]) -> Vec<Action> {
    let by_uid: HashMap<&str, &ObjectView> = objects.iter().map(|o| (o.uid.as_str(), o)).collect();
    // An owner of a namespaced object lives in its namespace or is cluster-scoped.
    let owner_of = |dependent: &ObjectView, uid: &str| -> Option<&ObjectView> {
        by_uid.get(uid).copied().filter(|owner| {
            owner.target.namespace.is_none() || owner.target.namespace == dependent.target.namespace
        })
    };
    let mut dependents: HashMap<&str, Vec<(&ObjectView, bool)>> = HashMap::new();
    for object in objects {
        for owner in &object.owners {
            if owner_of(object, &owner.uid).is_some() {
                dependents
                    .entry(owner.uid.as_str())
                    .or_default()
                    .push((object, owner.blocks));
            }
        }
    }
    let mut actions = Vec::new();
    for object in objects {
        // As a dependent.
        if !object.owners.is_empty() && !object.deleting {
            let mut solid = false;
            let mut gone = Vec::new();
            let mut waiting = false;
            for owner in &object.owners {
                match owner_of(object, &owner.uid) {
                    None => gone.push(owner.uid.clone()),
                    Some(o) if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) => {
                        waiting = true;
                        gone.push(owner.uid.clone());
                    }
                    Some(_) => solid = true,
                }
            }
            if solid {
                if !gone.is_empty() {
                    actions.push(Action::DropOwners {
                        target: object.target.clone(),
                        owners: gone,
                    });
                }
            } else {
                let has_dependents = dependents.contains_key(object.uid.as_str());
                actions.push(Action::Delete {
                    target: object.target.clone(),
                    uid: object.uid.clone(),
                    policy: if waiting && has_dependents {
                        Policy::Foreground
                    } else {
                        Policy::Background
                    },
                });
            }
        }
        // As an owner being deleted.
        if object.deleting {
            let mine = dependents.get(object.uid.as_str());
            if object.finalizers.iter().any(|f| f == ORPHAN) {
                let mut orphaned = HashSet::new();
                for (dependent, _) in mine.into_iter().flatten() {
                    if orphaned.insert(&dependent.target) {
                        actions.push(Action::DropOwners {
                            target: dependent.target.clone(),
                            owners: vec![object.uid.clone()],
                        });
                    }
                }
                if orphaned.is_empty() {
                    actions.push(Action::RemoveFinalizer {
                        target: object.target.clone(),
                        finalizer: ORPHAN,
                    });
                }
            }
            if object.finalizers.iter().any(|f| f == FOREGROUND)
                && !mine.into_iter().flatten().any(|(_, blocks)| *blocks)
            {
                actions.push(Action::RemoveFinalizer {
                    target: object.target.clone(),
                    finalizer: FOREGROUND,
                });
            }
        }
    }
    actions
}

/// Whether an owner, as read live (`None`: not found), lets its dependent go: it is gone, is
/// another object of the same name (another uid), or is being deleted by the collector (in
/// the foreground, or orphaning its dependents).
pub fn owner_lets_go(live: Option<&Value>, uid: &str) -> bool {
    let Some(owner) = live else {
        return true;
    };
    if owner.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
        return true;
    }
    is_deleting(owner)
        && finalizers_of(owner)
            .iter()
            .any(|f| f == FOREGROUND || f == ORPHAN)
}

/// The wait before the next look: `period` after a look that found work, else twice the
/// last wait, up to `idle_period`.
pub fn next_wait(
    last: Duration,
    found_work: bool,
    period: Duration,
    idle_period: Duration,
) -> Duration {
    if found_work {
        period
    } else {
        (last * 2).clamp(period, idle_period.max(period))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn target(name: &str) -> Target {
        Target {
            resource: 0,
            namespace: Some("default".into()),
            name: name.into(),
        }
    }

    fn view(
        name: &str,
        owners: &[(&str, bool)],
        finalizers: &[&str],
        deleting: bool,
    ) -> ObjectView {
        ObjectView {
            target: target(name),
            uid: format!("uid-{name}"),
            owners: owners
                .iter()
                .map(|(o, blocks)| OwnerRef {
                    uid: format!("uid-{o}"),
                    blocks: *blocks,
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.to_string(),
                })
                .collect(),
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
            deleting,
        }
    }

    fn delete(name: &str, policy: Policy) -> Action {
        Action::Delete {
            target: target(name),
            uid: format!("uid-{name}"),
            policy,
        }
    }

    #[test]
    fn owned_objects_with_a_live_owner_stay() {
        let objects = [
            view("owner", &[], &[], false),
            view("d", &[("owner", true)], &[], false),
        ];
        assert_eq!(decide(&objects), vec![]);
    }

    #[test]
    fn a_dependent_whose_owner_is_gone_is_deleted_in_the_background() {
        let objects = [view("d", &[("owner", false)], &[], false)];
        assert_eq!(decide(&objects), vec![delete("d", Policy::Background)]);
        // Already on its way: left alone.
        let objects = [view("d", &[("owner", false)], &["x.io/f"], true)];
        assert_eq!(decide(&objects), vec![]);
    }

    #[test]
    fn a_dependent_with_another_live_owner_only_loses_the_dead_reference() {
        let objects = [
            view("alive", &[], &[], false),
            view("d", &[("dead", false), ("alive", false)], &[], false),
        ];
        assert_eq!(
            decide(&objects),
            vec![Action::DropOwners {
                target: target("d"),
                owners: vec!["uid-dead".into()],
            }]
        );
    }

    #[test]
    fn an_owner_in_another_namespace_does_not_count() {
        let mut owner = view("owner", &[], &[], false);
        owner.target.namespace = Some("elsewhere".into());
        let objects = [owner, view("d", &[("owner", false)], &[], false)];
        assert_eq!(decide(&objects), vec![delete("d", Policy::Background)]);
        // A cluster-scoped owner does.
        let mut node = view("owner", &[], &[], false);
        node.target.namespace = None;
        let objects = [node, view("d", &[("owner", false)], &[], false)];
        assert_eq!(decide(&objects), vec![]);
    }

    #[test]
    fn orphaning_drops_the_references_then_the_finalizer() {
        let objects = [
            view("owner", &[], &[ORPHAN], true),
            view("a", &[("owner", true)], &[], false),
            view("b", &[("owner", false)], &[], false),
        ];
        assert_eq!(
            decide(&objects),
            vec![
                Action::DropOwners {
                    target: target("a"),
                    owners: vec!["uid-owner".into()]
                },
                Action::DropOwners {
                    target: target("b"),
                    owners: vec!["uid-owner".into()]
                },
            ]
        );
        let objects = [
            view("owner", &[], &[ORPHAN], true),
            view("a", &[], &[], false),
        ];
        assert_eq!(
            decide(&objects),
            vec![Action::RemoveFinalizer {
                target: target("owner"),
                finalizer: ORPHAN
            }]
        );
    }

    #[test]
    fn foreground_deletes_the_dependents_first_and_waits_for_the_blocking_ones() {
        let objects = [
            view("owner", &[], &[FOREGROUND], true),
            view("blocks", &[("owner", true)], &[], false),
            view("free", &[("owner", false)], &[], false),
            view("grandchild", &[("blocks", true)], &[], false),
        ];
        assert_eq!(
            decide(&objects),
            vec![
                // It has a dependent of its own, so it goes in the foreground too.
                delete("blocks", Policy::Foreground),
                delete("free", Policy::Background),
            ]
        );
        // Only the non-blocking dependent is left: the owner may go.
        let objects = [
            view("owner", &[], &[FOREGROUND], true),
            view("free", &[("owner", false)], &["x.io/slow"], true),
        ];
        assert_eq!(
            decide(&objects),
            vec![Action::RemoveFinalizer {
                target: target("owner"),
                finalizer: FOREGROUND
            }]
        );
        // A blocking dependent still finishing holds it.
        let objects = [
            view("owner", &[], &[FOREGROUND], true),
            view("blocks", &[("owner", true)], &["x.io/slow"], true),
        ];
        assert_eq!(decide(&objects), vec![]);
    }

    #[test]
    fn idle_looks_back_off_and_work_brings_the_period_back() {
        let (p, idle) = (Duration::from_secs(1), Duration::from_secs(8));
        let mut wait = p;
        let mut waits = Vec::new();
        for _ in 0..5 {
            wait = next_wait(wait, false, p, idle);
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, vec![2, 4, 8, 8, 8]);
        assert_eq!(next_wait(wait, true, p, idle), p);
    }

    #[test]
    fn views_read_the_collectors_fields() {
        let object = json!({"metadata": {
            "name": "d", "namespace": "default", "uid": "u1",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u0", "blockOwnerDeletion": true}],
            "finalizers": ["orphan"], "deletionTimestamp": "2024-01-01T00:00:00Z",
        }});
        let v = ObjectView::from_object(3, &object).expect("a view");
        assert_eq!(v.target.resource, 3);
        assert_eq!(v.target.namespace.as_deref(), Some("default"));
        assert_eq!(
            v.owners,
            vec![OwnerRef {
                uid: "u0".into(),
                blocks: true,
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "o".into(),
            }]
        );
        assert_eq!(v.finalizers, vec!["orphan"]);
        assert!(v.deleting);
        assert!(ObjectView::from_object(0, &json!({"metadata": {"name": "x"}})).is_none());
        // A metadata-only object reads the same.
        let partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"].clone()});
        assert_eq!(ObjectView::from_object(3, &partial), Some(v));
    }

    #[test]
    fn an_owner_read_live_lets_go_only_when_gone_replaced_or_collected() {
        let owner = |uid: &str, deleting: bool, finalizers: &[&str]| {
            let mut o = json!({"metadata": {"name": "o", "uid": uid, "finalizers": finalizers}});
            if deleting {
                o["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
            }
            o
        };
        assert!(owner_lets_go(None, "u0"));
        assert!(owner_lets_go(Some(&owner("u9", false, &[])), "u0"));
        assert!(!owner_lets_go(Some(&owner("u0", false, &[])), "u0"));
        // Deleted in the background (no finalizer of the collector's): it is still there,
        // and its dependents go once it has.
        assert!(!owner_lets_go(Some(&owner("u0", true, &[])), "u0"));
        assert!(!owner_lets_go(
            Some(&owner("u0", true, &["example.com/x"])),
            "u0"
        ));
        assert!(owner_lets_go(Some(&owner("u0", true, &[FOREGROUND])), "u0"));
        assert!(owner_lets_go(Some(&owner("u0", true, &[ORPHAN])), "u0"));
    }

    #[test]
    fn owner_references_name_resources_by_group_and_kind() {
        let r = |group: &str, kind: &str| Resource {
            group: group.into(),
            version: "v1".into(),
            resource: "x".into(),
            kind: kind.into(),
            namespaced: true,
        };
        assert!(r("apps", "ReplicaSet").holds("apps/v1", "ReplicaSet"));
        assert!(!r("apps", "ReplicaSet").holds("extensions/v1beta1", "ReplicaSet"));
        assert!(r("", "ConfigMap").holds("v1", "ConfigMap"));
        assert!(!r("", "ConfigMap").holds("v1", "Secret"));
    }
}
