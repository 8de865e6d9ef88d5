//! Legacy discovery documents (kubectl-contract §3.1): only what is served is advertised.

use serde_json::{Value, json};

use crate::resources::{self, ResourceInfo};

/// `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_object(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::named_groups()
        .iter()
        .map(|(g, vs)| group_object(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`, if the group is served.
pub fn api_group(group: &str) -> Option<Value> {
    let (name, versions) = resources::named_groups()
        .into_iter()
        .find(|(g, _)| *g == group)?;
    let mut object = group_object(name, &versions);
    object["kind"] = json!("APIGroup");
    object["apiVersion"] = json!("v1");
    Some(object)
}

fn resource_entry(info: &ResourceInfo) -> Value {
    json!({
        "name": info.resource,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": info.verbs(),
        "shortNames": info.short_names,
        "categories": info.categories,
    })
}

/// `GET /api/v1` or `/apis/{group}/{version}`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let served = resources::of_group_version(group, version);
    if served.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for info in served {
        entries.push(resource_entry(info));
        if info.has_status {
            entries.push(json!({
                "name": format!("{}/status", info.resource),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": info.status_verbs(),
            }));
        }
        if crate::kinds::workloads::scalable(info.kind) {
            entries.push(json!({
                "name": format!("{}/scale", info.resource),
                "singularName": "",
                "namespaced": info.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_list_has_what_the_python_client_requires() {
        let list = api_resource_list("", "v1").expect("served");
        for r in list["resources"].as_array().expect("array") {
            for field in ["name", "singularName", "namespaced", "kind", "verbs"] {
                assert!(r.get(field).is_some(), "{field} missing in {r}");
            }
        }
        assert!(
            list["resources"]
                .as_array()
                .expect("array")
                .iter()
                .any(|r| r["name"] == "pods" && r["shortNames"][0] == "po")
        );
    }

    #[test]
    fn only_served_groups_are_advertised() {
        let groups = api_group_list();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(
            names,
            vec!["apps", "batch", "coordination.k8s.io", "discovery.k8s.io"]
        );
        for name in names {
            let (_, versions) = resources::named_groups()
                .into_iter()
                .find(|(g, _)| *g == name)
                .expect("group");
            for v in versions {
                assert!(api_resource_list(name, v).is_some());
            }
        }
        assert!(api_group("rbac.authorization.k8s.io").is_none());
        assert!(api_resource_list("rbac.authorization.k8s.io", "v1").is_none());
        assert!(api_resource_list("apps", "v2").is_none());
    }
}
