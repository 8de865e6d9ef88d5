//! Discovery documents: legacy (kubectl-contract §3.1) and aggregated (`apidiscovery.k8s.io`
//! v2 and v2beta1, all groups in one document). Only what is served is advertised.

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

/// A group served by routes of its own rather than from the store: `kubectl auth whoami`'s
/// review.
const AUTHENTICATION: &str = "authentication.k8s.io";

/// Every named group with its versions: the stored kinds' groups, then the reviews'.
fn all_named_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups = resources::named_groups();
    groups.push((AUTHENTICATION, vec!["v1"]));
    groups
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = all_named_groups()
        .iter()
        .map(|(g, vs)| group_object(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`, if the group is served.
pub fn api_group(group: &str) -> Option<Value> {
    let (name, versions) = all_named_groups().into_iter().find(|(g, _)| *g == group)?;
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
    if (group, version) == (AUTHENTICATION, "v1") {
        return Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authentication.k8s.io/v1",
            "resources": [{
                "name": "selfsubjectreviews", "singularName": "selfsubjectreview",
                "namespaced": false, "kind": "SelfSubjectReview", "verbs": ["create"],
            }],
        }));
    }
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
        if info.kind == "Pod" {
            entries.push(json!({
                "name": "pods/eviction",
                "singularName": "",
                "namespaced": true,
                "group": "policy",
                "version": "v1",
                "kind": "Eviction",
                "verbs": ["create"],
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

/// The aggregated discovery versions served, as `Accept` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregated {
    V2,
    V2Beta1,
}

impl Aggregated {
    fn version(self) -> &'static str {
        match self {
            Aggregated::V2 => "v2",
            Aggregated::V2Beta1 => "v2beta1",
        }
    }

    /// The response's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Aggregated::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            Aggregated::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }
}

fn kind_of(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// One resource of an aggregated document, with its subresources.
fn aggregated_resource(info: &ResourceInfo) -> Value {
    let own_kind = kind_of(info.group, info.version, info.kind);
    let mut subresources = Vec::new();
    if info.kind == "Pod" {
        subresources.push(json!({
            "subresource": "eviction",
            "responseKind": kind_of("policy", "v1", "Eviction"),
            "verbs": ["create"],
        }));
    }
    if crate::kinds::workloads::scalable(info.kind) {
        subresources.push(json!({
            "subresource": "scale",
            "responseKind": kind_of("autoscaling", "v1", "Scale"),
            "verbs": ["get", "patch", "update"],
        }));
    }
    if info.has_status {
        subresources.push(json!({
            "subresource": "status",
            "responseKind": own_kind,
            "verbs": info.status_verbs(),
        }));
    }
    let mut entry = json!({
        "resource": info.resource,
        "responseKind": own_kind,
        "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": info.singular,
        "verbs": info.verbs(),
    });
    if !info.short_names.is_empty() {
        entry["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        entry["categories"] = json!(info.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = Value::Array(subresources);
    }
    entry
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = if (group, *version) == (AUTHENTICATION, "v1") {
                vec![json!({
                    "resource": "selfsubjectreviews",
                    "responseKind": kind_of(AUTHENTICATION, "v1", "SelfSubjectReview"),
                    "scope": "Cluster",
                    "singularResource": "selfsubjectreview",
                    "verbs": ["create"],
                })]
            } else {
                resources::of_group_version(group, version)
                    .into_iter()
                    .map(aggregated_resource)
                    .collect()
            };
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": versions})
}

/// The aggregated document of `/api` (`legacy`: the core group) or `/apis` (every named
/// group), as an `APIGroupDiscoveryList` of `version`.
pub fn aggregated(legacy: bool, version: Aggregated) -> Value {
    let items: Vec<Value> = if legacy {
        vec![aggregated_group("", &["v1"])]
    } else {
        all_named_groups()
            .iter()
            .map(|(g, vs)| aggregated_group(g, vs))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{}", version.version()),
        "metadata": {},
        "items": items,
    })
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
            vec![
                "apps",
                "batch",
                "coordination.k8s.io",
                "discovery.k8s.io",
                "policy",
                "events.k8s.io",
                "authentication.k8s.io"
            ]
        );
        for name in names {
            let (_, versions) = all_named_groups()
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

    #[test]
    fn the_aggregated_documents_hold_what_the_legacy_ones_do() {
        for version in [Aggregated::V2, Aggregated::V2Beta1] {
            let core = aggregated(true, version);
            assert_eq!(
                core["apiVersion"],
                format!("apidiscovery.k8s.io/{}", version.version())
            );
            assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
            assert!(core["items"][0]["metadata"].get("name").is_none());
            let named = aggregated(false, version);
            let groups: Vec<&str> = named["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter_map(|g| g["metadata"]["name"].as_str())
                .collect();
            let legacy = api_group_list();
            let legacy: Vec<&str> = legacy["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .filter_map(|g| g["name"].as_str())
                .collect();
            assert_eq!(groups, legacy);
            // Every resource of every version, with the legacy list's verbs and kinds.
            for (doc, group) in std::iter::once((&core["items"][0], "")).chain(
                named["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|g| (g, g["metadata"]["name"].as_str().unwrap_or_default())),
            ) {
                for v in doc["versions"].as_array().expect("versions") {
                    let version = v["version"].as_str().expect("version");
                    let list = api_resource_list(group, version).expect("served");
                    for r in list["resources"].as_array().expect("resources") {
                        let name = r["name"].as_str().expect("name");
                        let (resource, sub) = match name.split_once('/') {
                            Some((resource, sub)) => (resource, Some(sub)),
                            None => (name, None),
                        };
                        let entry = v["resources"]
                            .as_array()
                            .expect("resources")
                            .iter()
                            .find(|e| e["resource"] == resource)
                            .unwrap_or_else(|| panic!("{group}/{version} {name} missing"));
                        let entry = match sub {
                            Some(sub) => entry["subresources"]
                                .as_array()
                                .expect("subresources")
                                .iter()
                                .find(|e| e["subresource"] == sub)
                                .unwrap_or_else(|| panic!("{name} missing")),
                            None => entry,
                        };
                        assert_eq!(entry["verbs"], r["verbs"], "{name}");
                        assert_eq!(entry["responseKind"]["kind"], r["kind"], "{name}");
                    }
                }
            }
        }
    }
}
