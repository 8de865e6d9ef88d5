//! Server-side printing: `meta.k8s.io/v1 Table` with the columns kubectl shows against
//! Kubernetes for each kind (kubectl-contract §9).

use jiff::Timestamp;
use serde_json::{Value, json};
use shoal_core::time::{human_duration, parse_time};

use crate::kinds::{Column, network, or_none, str_at, workloads};
use crate::resources::ResourceInfo;

fn columns(info: &ResourceInfo) -> Vec<Column> {
    let name = Column(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = Column("Age", "string", 0, "The age of the object.");
    match info.kind {
        "Namespace" => vec![
            name,
            Column("Status", "string", 0, "The status of the namespace"),
            age,
        ],
        "Node" => vec![
            name,
            Column("Status", "string", 0, "The status of the node"),
            Column("Roles", "string", 0, "The roles of the node"),
            age,
            Column(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            Column(
                "Internal-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            Column(
                "External-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            Column(
                "OS-Image",
                "string",
                1,
                "OS Image reported by the node from /etc/os-release.",
            ),
            Column(
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node from 'uname -r'.",
            ),
            Column(
                "Container-Runtime",
                "string",
                1,
                "Container runtime version reported by the node.",
            ),
        ],
        "Pod" => vec![
            name,
            Column(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            Column(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            Column(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age,
            Column("IP", "string", 1, "IP address allocated to the pod."),
            Column(
                "Node",
                "string",
                1,
                "Name of the Node this pod is assigned to.",
            ),
            Column(
                "Nominated Node",
                "string",
                1,
                "Name of the node where the pod is nominated to run.",
            ),
            Column(
                "Readiness Gates",
                "string",
                1,
                "Readiness gates of the pod.",
            ),
        ],
        "Lease" => vec![
            name,
            Column("Holder", "string", 0, "The holder of the lease."),
            age,
        ],
        "Event" => vec![
            Column(
                "Last Seen",
                "string",
                0,
                "The time since the event was last seen.",
            ),
            Column("Type", "string", 0, "The type of the event."),
            Column("Reason", "string", 0, "Why the event happened."),
            Column("Object", "string", 0, "The object the event is about."),
            Column(
                "Subobject",
                "string",
                1,
                "The part of the object the event is about.",
            ),
            Column(
                "Source",
                "string",
                1,
                "The component that reported the event.",
            ),
            Column("Message", "string", 0, "What happened."),
            Column(
                "First Seen",
                "string",
                1,
                "The time since the event was first seen.",
            ),
            Column("Count", "string", 1, "How often the event happened."),
            Column("Name", "string", 1, "The event's name."),
        ],
        "ConfigMap" => vec![
            name,
            Column("Data", "integer", 0, "The number of keys."),
            age,
        ],
        "Secret" => vec![
            name,
            Column("Type", "string", 0, "The type of secret."),
            Column("Data", "integer", 0, "The number of keys."),
            age,
        ],
        "ServiceAccount" => vec![
            name,
            Column("Secrets", "integer", 0, "The number of secrets."),
            age,
        ],
        kind => workloads::columns(kind)
            .or_else(|| network::columns(kind))
            .or_else(|| crate::kinds::policy::columns(kind))
            .unwrap_or_else(|| {
                vec![
                    name,
                    Column("Created At", "date", 0, "The creation time of the object."),
                ]
            }),
    }
}

pub(crate) fn age(object: &Value, now: Timestamp) -> String {
    match parse_time(str_at(object, "/metadata/creationTimestamp")) {
        Some(created) => human_duration(now.as_second() - created.as_second()),
        None => "<unknown>".into(),
    }
}

pub(crate) fn since(object: &Value, pointer: &str, now: Timestamp) -> String {
    match parse_time(str_at(object, pointer)) {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    let first = since(event, "/firstTimestamp", now);
    let last_pointer = if str_at(event, "/lastTimestamp").is_empty() {
        "/eventTime"
    } else {
        "/lastTimestamp"
    };
    let last = since(event, last_pointer, now);
    let count = event["count"].as_i64().unwrap_or(1);
    let seen = if count > 1 {
        format!("{last} (x{count} over {first})")
    } else {
        last
    };
    let component = str_at(event, "/source/component");
    let host = str_at(event, "/source/host");
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(seen),
        json!(str_at(event, "/type")),
        json!(str_at(event, "/reason")),
        json!(format!(
            "{}/{}",
            str_at(event, "/involvedObject/kind").to_lowercase(),
            str_at(event, "/involvedObject/name")
        )),
        json!(str_at(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(event, "/message")),
        json!(first),
        json!(count.to_string()),
        json!(str_at(event, "/metadata/name")),
    ]
}

fn count_keys(object: &Value, fields: &[&str]) -> usize {
    fields
        .iter()
        .filter_map(|f| object.get(*f))
        .filter_map(Value::as_object)
        .map(|m| m.len())
        .sum()
}

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let conditions = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    let mut status = match ready {
        Some(c) if c["status"] == "True" => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if node
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_owned)
                        .or_else(|| {
                            (k == "kubernetes.io/role")
                                .then(|| v.as_str().unwrap_or_default().to_owned())
                        })
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let address = |kind: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == kind))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("<none>")
            .to_owned()
    };
    vec![
        json!(str_at(node, "/metadata/name")),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(node, now)),
        json!(str_at(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(
            or_none(str_at(node, "/status/nodeInfo/osImage").to_owned())
                .replace("<none>", "<unknown>")
        ),
        json!(
            or_none(str_at(node, "/status/nodeInfo/kernelVersion").to_owned())
                .replace("<none>", "<unknown>")
        ),
        json!(
            or_none(str_at(node, "/status/nodeInfo/containerRuntimeVersion").to_owned())
                .replace("<none>", "<unknown>")
        ),
    ]
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let mut status = str_at(pod, "/status/reason").to_owned();
    if status.is_empty() {
        status = str_at(pod, "/status/phase").to_owned();
    }
    for s in &statuses {
        if let Some(reason) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = reason.to_owned();
        } else if let Some(reason) = s
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            status = reason.to_owned();
        }
    }
    if pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .is_some()
    {
        status = "Terminating".into();
    }
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![
        json!(str_at(pod, "/metadata/name")),
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(pod, now)),
        json!(or_none(str_at(pod, "/status/podIP").to_owned())),
        json!(or_none(str_at(pod, "/spec/nodeName").to_owned())),
        json!(or_none(str_at(pod, "/status/nominatedNodeName").to_owned())),
        json!(if gates == 0 {
            "<none>".to_owned()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn cells(info: &ResourceInfo, object: &Value, now: Timestamp) -> Vec<Value> {
    if let Some(view) = info.view {
        // A view's rows are those of the objects it shows, in their stored form.
        return cells(view.stored(), &view.to_stored(object.clone()), now);
    }
    match info.kind {
        "Namespace" => vec![
            json!(str_at(object, "/metadata/name")),
            json!(str_at(object, "/status/phase")),
            json!(age(object, now)),
        ],
        "Node" => node_cells(object, now),
        "Pod" => pod_cells(object, now),
        "Lease" => vec![
            json!(str_at(object, "/metadata/name")),
            json!(str_at(object, "/spec/holderIdentity")),
            json!(age(object, now)),
        ],
        "Event" => event_cells(object, now),
        "ConfigMap" => vec![
            json!(str_at(object, "/metadata/name")),
            json!(count_keys(object, &["data", "binaryData"])),
            json!(age(object, now)),
        ],
        "Secret" => vec![
            json!(str_at(object, "/metadata/name")),
            json!(str_at(object, "/type")),
            json!(count_keys(object, &["data"])),
            json!(age(object, now)),
        ],
        "ServiceAccount" => vec![
            json!(str_at(object, "/metadata/name")),
            json!(
                object
                    .get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(age(object, now)),
        ],
        kind => workloads::cells(kind, object, now)
            .or_else(|| network::cells(kind, object, now))
            .or_else(|| crate::kinds::policy::cells(kind, object, now))
            .unwrap_or_else(|| {
                vec![
                    json!(str_at(object, "/metadata/name")),
                    json!(str_at(object, "/metadata/creationTimestamp")),
                ]
            }),
    }
}

/// What each row embeds: nothing, the object's metadata (the default), or the whole object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// From the `includeObject` query parameter.
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn row(info: &ResourceInfo, object: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let mut row = json!({"cells": cells(info, object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = crate::objects::partial_metadata(object);
        }
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

/// A Table of `objects`. `with_columns` is false for watch events after the first.
pub fn render(
    info: &ResourceInfo,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = Timestamp::now();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "rows": objects.iter().map(|o| row(info, o, include, now)).collect::<Vec<_>>(),
    });
    table["columnDefinitions"] = if with_columns {
        json!(
            columns(info)
                .into_iter()
                .map(|Column(name, ty, priority, description)| json!({
                    "name": name,
                    "type": ty,
                    "format": if name == "Name" { "name" } else { "" },
                    "description": description,
                    "priority": priority,
                }))
                .collect::<Vec<_>>()
        )
    } else {
        json!([])
    };
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn a_node_row_shows_readiness_roles_and_runtime() {
        let info = find("", "v1", "nodes").expect("served");
        let node = json!({
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}, "creationTimestamp": "2020-01-01T00:00:00Z"},
            "status": {
                "conditions": [{"type": "Ready", "status": "Unknown"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.2"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "containerRuntimeVersion": "docker://20.10.24"}
            }
        });
        let t = render(info, &[node], "7", IncludeObject::Metadata, true);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "n1");
        assert_eq!(cells[1], "NotReady");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[5], "127.0.0.2");
        assert_eq!(cells[9], "docker://20.10.24");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "n1");
    }

    #[test]
    fn a_pending_pod_row() {
        let info = find("", "v1", "pods").expect("served");
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
        let t = render(info, &[pod], "1", IncludeObject::None, false);
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert_eq!(t["rows"][0]["cells"][2], "Pending");
        assert_eq!(t["rows"][0]["cells"][6], "<none>");
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(t["columnDefinitions"], json!([]));
    }

    #[test]
    fn config_rows_count_their_keys() {
        let cm = find("", "v1", "configmaps").expect("served");
        let t = render(
            cm,
            &[json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}})],
            "1",
            IncludeObject::None,
            true,
        );
        assert_eq!(t["rows"][0]["cells"][1], 2);
        let secret = find("", "v1", "secrets").expect("served");
        let t = render(
            secret,
            &[json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "eA=="}})],
            "1",
            IncludeObject::None,
            true,
        );
        assert_eq!(t["rows"][0]["cells"][1], "Opaque");
        assert_eq!(t["rows"][0]["cells"][2], 1);
        assert_eq!(t["columnDefinitions"][2]["name"], "Data");
    }

    #[test]
    fn an_event_row_reads_like_kubectl_get_events() {
        let info = find("", "v1", "events").expect("served");
        let event = json!({
            "metadata": {"name": "n1.1"}, "type": "Normal", "reason": "NodeNotReady", "message": "gone",
            "involvedObject": {"kind": "Node", "name": "n1"}, "source": {"component": "node-controller"},
            "firstTimestamp": "2020-01-01T00:00:00Z", "lastTimestamp": "2020-01-01T00:00:00Z", "count": 3,
        });
        let t = render(info, &[event], "1", IncludeObject::None, true);
        let cells = &t["rows"][0]["cells"];
        assert!(
            cells[0].as_str().unwrap_or_default().contains("(x3 over"),
            "{cells}"
        );
        assert_eq!(cells[3], "node/n1");
        assert_eq!(cells[5], "node-controller");
        assert_eq!(t["columnDefinitions"][0]["name"], "Last Seen");
    }
}
