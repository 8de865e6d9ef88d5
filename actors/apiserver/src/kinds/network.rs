//! Service, Endpoints and discovery.k8s.io/v1 EndpointSlice.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use shoal_core::error::FieldCause;

use super::{
    AGE, Column, NAME, default_field, ensure_object, format_labels, invalid, or_none, required,
    str_at, string_map, unsupported,
};
use crate::table::age;

const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// Whether a Service of this spec gets a cluster IP (all but ExternalName and headless).
pub fn wants_cluster_ip(spec: &Value) -> bool {
    str_at(spec, "/type") != "ExternalName" && str_at(spec, "/clusterIP") != "None"
}

/// Whether a Service of this spec gets node ports.
pub fn wants_node_ports(spec: &Value) -> bool {
    matches!(str_at(spec, "/type"), "NodePort" | "LoadBalancer")
}

/// Fills in the defaults Kubernetes sets on every write of a Service (the addresses and
/// node ports are allocated by the caller).
pub fn defaults(kind: &str, object: &mut Map<String, Value>) {
    if kind != "Service" {
        return;
    }
    let spec = ensure_object(object, "spec");
    default_field(spec, "type", json!("ClusterIP"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    default_field(spec, "sessionAffinity", json!("None"));
    if ty != "ExternalName" {
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
        default_field(spec, "ipFamilies", json!(["IPv4"]));
        default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(port, "protocol", json!("TCP"));
            if let Some(number) = port.get("port").cloned() {
                default_field(port, "targetPort", number);
            }
        }
    }
    // One address given as `clusterIP` is also the first of `clusterIPs`.
    if let Some(ip) = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .map(str::to_owned)
        && !ip.is_empty()
    {
        default_field(spec, "clusterIPs", json!([ip]));
    }
}

fn port_number_problem(n: i64) -> Option<&'static str> {
    (!(1..=65535).contains(&n)).then_some("must be between 1 and 65535, inclusive")
}

/// The checks Kubernetes makes of a Service beyond its types.
pub fn validate(kind: &str, object: &Value, causes: &mut Vec<FieldCause>) {
    if kind != "Service" {
        return;
    }
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let ty = str_at(spec, "/type");
    if !SERVICE_TYPES.contains(&ty) {
        causes.push(unsupported("spec.type", ty, SERVICE_TYPES));
    }
    if let Some(affinity) = spec.get("sessionAffinity").and_then(Value::as_str)
        && !matches!(affinity, "None" | "ClientIP")
    {
        causes.push(unsupported(
            "spec.sessionAffinity",
            affinity,
            &["ClientIP", "None"],
        ));
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ty == "ExternalName" {
        if str_at(spec, "/externalName").is_empty() {
            causes.push(required("spec.externalName"));
        }
    } else if ports.is_empty() && str_at(spec, "/clusterIP") != "None" {
        causes.push(required("spec.ports"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = |field: &str| format!("spec.ports[{i}].{field}");
        let name = str_at(port, "/name");
        if ports.len() > 1 && name.is_empty() {
            causes.push(required(at("name")));
        }
        if !name.is_empty() && !names.insert(name.to_owned()) {
            causes.push(FieldCause {
                reason: "FieldValueDuplicate",
                field: at("name"),
                message: format!("Duplicate value: {name:?}"),
            });
        }
        match port.get("port").and_then(Value::as_i64) {
            None => causes.push(required(at("port"))),
            Some(n) => {
                if let Some(why) = port_number_problem(n) {
                    causes.push(invalid(at("port"), &json!(n), why));
                }
            }
        }
        let protocol = str_at(port, "/protocol");
        if !PROTOCOLS.contains(&protocol) {
            causes.push(unsupported(at("protocol"), protocol, PROTOCOLS));
        }
        if let Some(n) = port.get("targetPort").and_then(Value::as_i64)
            && let Some(why) = port_number_problem(n)
        {
            causes.push(invalid(at("targetPort"), &json!(n), why));
        }
        if let Some(n) = port.get("nodePort").and_then(Value::as_i64) {
            if !matches!(ty, "NodePort" | "LoadBalancer") && n != 0 {
                causes.push(FieldCause {
                    reason: "FieldValueForbidden",
                    field: at("nodePort"),
                    message: "Forbidden: may not be used when `type` is 'ClusterIP'".into(),
                });
            } else if let Some(why) = port_number_problem(n) {
                causes.push(invalid(at("nodePort"), &json!(n), why));
            }
        }
    }
    let ip = str_at(spec, "/clusterIP");
    if !ip.is_empty() && ip != "None" && ip.parse::<std::net::Ipv4Addr>().is_err() {
        causes.push(invalid(
            "spec.clusterIPs[0]",
            &json!(ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
}

/// The checks of a Service update against the stored one: its address may not change.
pub fn validate_update(kind: &str, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    if kind != "Service" {
        return;
    }
    let before = str_at(old, "/spec/clusterIP");
    let after = str_at(new, "/spec/clusterIP");
    // Leaving the address out keeps it; changing the type to ExternalName drops it.
    if !before.is_empty() && !after.is_empty() && before != after {
        causes.push(invalid(
            "spec.clusterIPs[0]",
            &json!(after),
            "may not change once set",
        ));
    }
}

/// The columns `kubectl get` shows for a network kind.
pub fn columns(kind: &str) -> Option<Vec<Column>> {
    Some(match kind {
        "Service" => vec![
            NAME,
            Column(
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            Column(
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            Column(
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            Column(
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            Column(
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "Endpoints" => vec![
            NAME,
            Column(
                "Endpoints",
                "string",
                0,
                "The set of all endpoints is the union of all subsets.",
            ),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            Column(
                "AddressType",
                "string",
                0,
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            Column(
                "Ports",
                "string",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            Column(
                "Endpoints",
                "string",
                0,
                "endpoints is a list of unique endpoints in this slice.",
            ),
            AGE,
        ],
        _ => return None,
    })
}

/// At most three entries, then how many more, as kubectl shortens long lists.
fn shorten(items: &[String]) -> String {
    match items.len() {
        0 => "<none>".into(),
        n if n <= 3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

fn service_ports(spec: &Value) -> String {
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let shown: Vec<String> = ports
        .iter()
        .map(|p| {
            let port = p["port"].as_i64().unwrap_or(0);
            let protocol = str_at(p, "/protocol");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node) if node != 0 => format!("{port}:{node}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    or_none(shown.join(","))
}

fn external_ips(service: &Value) -> String {
    let spec = service.get("spec").unwrap_or(&Value::Null);
    let listed = |v: Option<&Value>, field: &str| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| {
                if field.is_empty() {
                    x.as_str().map(str::to_owned)
                } else {
                    x.get(field).and_then(Value::as_str).map(str::to_owned)
                }
            })
            .collect()
    };
    let mut ips = listed(spec.get("externalIPs"), "");
    match str_at(spec, "/type") {
        "ExternalName" => return str_at(spec, "/externalName").to_owned(),
        "LoadBalancer" => {
            let ingress = service.pointer("/status/loadBalancer/ingress");
            ips.extend(listed(ingress, "ip"));
            ips.extend(listed(ingress, "hostname"));
            if ips.is_empty() {
                return "<pending>".into();
            }
        }
        _ => {}
    }
    or_none(ips.join(","))
}

fn endpoints_of(endpoints: &Value) -> String {
    let mut shown = Vec::new();
    for subset in endpoints
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        for address in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = str_at(address, "/ip");
            if ports.is_empty() {
                shown.push(ip.to_owned());
            }
            for port in &ports {
                shown.push(format!("{ip}:{port}"));
            }
        }
    }
    shorten(&shown)
}

/// The cells of one row.
pub fn cells(kind: &str, object: &Value, now: Timestamp) -> Option<Vec<Value>> {
    let name = json!(str_at(object, "/metadata/name"));
    let spec = object.get("spec").unwrap_or(&Value::Null);
    Some(match kind {
        "Service" => vec![
            name,
            json!(str_at(spec, "/type")),
            json!(or_none(str_at(spec, "/clusterIP").to_owned())),
            json!(external_ips(object)),
            json!(service_ports(spec)),
            json!(age(object, now)),
            json!(or_none(format_labels(&string_map(spec.get("selector"))))),
        ],
        "Endpoints" => vec![name, json!(endpoints_of(object)), json!(age(object, now))],
        "EndpointSlice" => {
            let ports: Vec<String> = object
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64())
                .map(|p| p.to_string())
                .collect();
            let addresses: Vec<String> = object
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            vec![
                name,
                json!(str_at(object, "/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".to_owned()
                } else {
                    ports.join(",")
                }),
                json!(shorten(&addresses)),
                json!(age(object, now)),
            ]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(mut object: Value) -> Value {
        defaults("Service", object.as_object_mut().expect("an object"));
        object
    }

    #[test]
    fn a_service_gets_kubernetes_defaults() {
        let s = defaulted(
            json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}),
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        assert!(
            crate::kinds::roundtrip("Service", &s)
                .expect("modelled")
                .is_ok()
        );
        let mut causes = Vec::new();
        validate("Service", &s, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn bad_ports_are_named() {
        let s = defaulted(json!({"spec": {"type": "ClusterIP", "ports": [
            {"port": 0},
            {"name": "a", "port": 80, "protocol": "ICMP", "nodePort": 30000},
        ]}}));
        let mut causes = Vec::new();
        validate("Service", &s, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ports[0].name",
                "spec.ports[0].port",
                // Defaulted from the port.
                "spec.ports[0].targetPort",
                "spec.ports[1].protocol",
                "spec.ports[1].nodePort"
            ]
        );
        let mut causes = Vec::new();
        validate("Service", &json!({"spec": {"type": "Weird"}}), &mut causes);
        assert_eq!(causes[0].reason, "FieldValueNotSupported");
        assert_eq!(causes[1].field, "spec.ports");
    }

    #[test]
    fn the_cluster_ip_may_not_change() {
        let old = json!({"spec": {"clusterIP": "10.96.0.10"}});
        let mut causes = Vec::new();
        validate_update(
            "Service",
            &old,
            &json!({"spec": {"clusterIP": "10.96.0.11"}}),
            &mut causes,
        );
        assert_eq!(causes.len(), 1);
        let mut causes = Vec::new();
        validate_update(
            "Service",
            &old,
            &json!({"spec": {"clusterIP": "10.96.0.10"}}),
            &mut causes,
        );
        assert!(causes.is_empty());
    }

    #[test]
    fn rows_read_like_kubectl_get() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let s = json!({"metadata": {"name": "web"}, "spec": {
            "type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"},
        }});
        let row = cells("Service", &s, now).expect("a network kind");
        assert_eq!(row[1], "NodePort");
        assert_eq!(row[2], "10.96.0.10");
        assert_eq!(row[3], "<none>");
        assert_eq!(row[4], "80:30080/TCP,53/UDP");
        assert_eq!(row[6], "app=web");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!(cells("Service", &lb, now).expect("row")[3], "<pending>");
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}, {"ip": "10.1.0.3"}, {"ip": "10.1.0.4"}],
            "ports": [{"port": 80}],
        }]});
        assert_eq!(
            cells("Endpoints", &ep, now).expect("row")[1],
            "10.1.0.1:80,10.1.0.2:80,10.1.0.3:80 + 1 more..."
        );
        for kind in ["Service", "Endpoints", "EndpointSlice"] {
            let n = columns(kind).expect("columns").len();
            assert_eq!(
                cells(kind, &json!({}), now).expect("cells").len(),
                n,
                "{kind}"
            );
        }
    }
}
