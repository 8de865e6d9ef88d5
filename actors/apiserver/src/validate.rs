//! Validation and defaulting per kind: names, typed decoding through `k8s-openapi`, and the
//! defaults Kubernetes fills in.

use serde_json::{Map, Value, json};
use shoal_core::ApiError;
use shoal_core::error::{FieldCause, Subject};

pub(crate) use crate::kinds::ensure_object;
use crate::kinds::{default_field, network, workloads};
use crate::resources::ResourceInfo;

/// The subject of errors about `name` of `info`'s kind.
pub fn subject(info: &ResourceInfo, name: &str) -> Subject {
    Subject {
        group: info.group.to_owned(),
        resource: info.resource.to_owned(),
        kind: info.kind.to_owned(),
        name: name.to_owned(),
    }
}

fn dns_label_problem(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        None
    } else {
        Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if name
        .split('.')
        .all(|part| dns_label_problem(part).is_none())
    {
        None
    } else {
        Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into())
    }
}

/// Checks an object's name as Kubernetes does for its kind (namespaces: DNS label; the rest:
/// DNS subdomain).
pub fn check_name(info: &ResourceInfo, name: &str) -> Result<(), ApiError> {
    let problem = if info.resource == "namespaces" {
        dns_label_problem(name)
    } else {
        dns_subdomain_problem(name)
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(ApiError::invalid_field(
            subject(info, name),
            "metadata.name",
            name,
            &why,
        )),
    }
}

/// Checks a namespace name given in a URL or body.
pub fn check_namespace_name(
    info: &ResourceInfo,
    name: &str,
    namespace: &str,
) -> Result<(), ApiError> {
    match dns_label_problem(namespace) {
        None => Ok(()),
        Some(why) => Err(ApiError::invalid_field(
            subject(info, name),
            "metadata.namespace",
            namespace,
            &why,
        )),
    }
}

/// Decodes the object into its `k8s-openapi` type, so wrong types and shapes are refused
/// before anything is stored.
pub fn check_typed(info: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    match crate::kinds::roundtrip_of(info, object) {
        Some(Err(e)) => Err(ApiError::BadRequest(format!(
            "unable to decode {} body: {e}",
            info.kind
        ))),
        _ => Ok(()),
    }
}

/// Kind-specific checks beyond types.
pub fn check_semantics(info: &ResourceInfo, name: &str, object: &Value) -> Result<(), ApiError> {
    let mut causes = metadata_causes(object.get("metadata").unwrap_or(&Value::Null));
    if info.kind == "Pod" {
        causes.extend(container_causes(
            object.get("spec").unwrap_or(&Value::Null),
            "spec",
        ));
    }
    workloads::validate(info.kind, object, &mut causes);
    network::validate(info.kind, object, &mut causes);
    crate::kinds::policy::validate(info.kind, object, &mut causes);
    if info.kind == "Lease"
        && let Some(d) = object
            .pointer("/spec/leaseDurationSeconds")
            .and_then(Value::as_i64)
        && d <= 0
    {
        causes.push(FieldCause {
            reason: "FieldValueInvalid",
            field: "spec.leaseDurationSeconds".into(),
            message: format!("Invalid value: {d}: must be greater than 0"),
        });
    }
    if matches!(info.kind, "ConfigMap" | "Secret") {
        causes.extend(config_key_causes(object));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(subject(info, name), causes))
    }
}

/// A qualified name (a label or annotation key, or a label value's form): at most 63
/// characters, alphanumeric at both ends, `-`, `_` and `.` between.
fn qualified_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("name part must be non-empty");
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters");
    }
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then_some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(why) = dns_subdomain_problem(prefix) {
            return Some(format!("prefix part {why}"));
        }
    }
    qualified_name_problem(name).map(str::to_owned)
}

/// The most bytes an object's annotations may hold, keys and values together.
const ANNOTATIONS_MOST: usize = 256 * 1024;

/// The checks of every object's labels and annotations.
fn metadata_causes(meta: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let invalid = |field: &str, value: &str, why: &str| FieldCause {
        reason: "FieldValueInvalid",
        field: field.to_owned(),
        message: format!("Invalid value: {value:?}: {why}"),
    };
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(why) = key_problem(key) {
                causes.push(invalid("metadata.labels", key, &why));
            }
            let value = value.as_str().unwrap_or_default();
            if !value.is_empty()
                && let Some(why) = qualified_name_problem(value)
            {
                let why = why.replacen("name part", "a valid label value", 1);
                causes.push(invalid(&format!("metadata.labels[{key}]"), value, &why));
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (key, value) in annotations {
            if let Some(why) = key_problem(key) {
                causes.push(invalid("metadata.annotations", key, &why));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MOST {
            causes.push(FieldCause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!("Too long: may not be more than {ANNOTATIONS_MOST} bytes"),
            });
        }
    }
    if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, finalizer) in finalizers.iter().enumerate() {
            let text = finalizer.as_str().unwrap_or_default();
            if let Some(why) = key_problem(text) {
                causes.push(invalid(&format!("metadata.finalizers[{i}]"), text, &why));
            }
        }
    }
    if let Some(owners) = meta.get("ownerReferences").and_then(Value::as_array) {
        for owner in owners {
            for (field, what) in [
                ("apiVersion", "version"),
                ("kind", "kind"),
                ("name", "name"),
                ("uid", "uid"),
            ] {
                if owner
                    .get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(invalid(
                        &format!("metadata.ownerReferences.{field}"),
                        "",
                        &format!("{what} must not be empty"),
                    ));
                }
            }
        }
        let controllers = owners
            .iter()
            .filter(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
            .count();
        if controllers > 1 {
            causes.push(FieldCause {
                reason: "FieldValueInvalid",
                field: "metadata.ownerReferences".into(),
                message: "Invalid value: only one reference can have Controller set to true".into(),
            });
        }
    }
    causes
}

/// Checks an update against the stored object: the fields that may not change.
pub fn check_update(
    info: &ResourceInfo,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    workloads::validate_update(info.kind, old, new, &mut causes);
    network::validate_update(info.kind, old, new, &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(subject(info, name), causes))
    }
}

/// The containers of a pod spec at `path`: at least one, each named and with an image.
pub(crate) fn container_causes(spec: &Value, path: &str) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let containers = spec.pointer("/containers").and_then(Value::as_array);
    match containers {
        None => causes.push(FieldCause {
            reason: "FieldValueRequired",
            field: format!("{path}.containers"),
            message: "Required value".into(),
        }),
        Some(list) if list.is_empty() => causes.push(FieldCause {
            reason: "FieldValueRequired",
            field: format!("{path}.containers"),
            message: "Required value".into(),
        }),
        Some(list) => {
            for (i, c) in list.iter().enumerate() {
                let cname = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if let Some(why) = dns_label_problem(cname) {
                    causes.push(FieldCause {
                        reason: if cname.is_empty() {
                            "FieldValueRequired"
                        } else {
                            "FieldValueInvalid"
                        },
                        field: format!("{path}.containers[{i}].name"),
                        message: if cname.is_empty() {
                            "Required value".into()
                        } else {
                            format!("Invalid value: {cname:?}: {why}")
                        },
                    });
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
                {
                    causes.push(FieldCause {
                        reason: "FieldValueRequired",
                        field: format!("{path}.containers[{i}].image"),
                        message: "Required value".into(),
                    });
                }
            }
        }
    }
    causes
}

/// A ConfigMap's or Secret's keys must be valid config keys.
fn config_key_causes(object: &Value) -> Vec<FieldCause> {
    let keys = ["data", "binaryData", "stringData"]
        .into_iter()
        .filter_map(|f| object.get(f))
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys());
    keys.filter(|key| {
        key.is_empty() || key.len() > 253 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    })
    .map(|key| FieldCause {
        reason: "FieldValueInvalid",
        field: format!("data[{key}]"),
        message: format!("Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
    })
    .collect()
}

/// Fills in the defaults Kubernetes sets on create.
pub fn apply_defaults(info: &ResourceInfo, object: &mut Map<String, Value>) {
    match info.kind {
        "Namespace" => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "finalizers", json!(["kubernetes"]));
            let status = ensure_object(object, "status");
            default_field(status, "phase", json!("Active"));
        }
        "Pod" => {
            let spec = ensure_object(object, "spec");
            pod_spec_defaults(spec);
            default_field(spec, "restartPolicy", json!("Always"));
            default_field(spec, "serviceAccountName", json!("default"));
            default_field(spec, "enableServiceLinks", json!(true));
            default_field(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            default_field(spec, "priority", json!(0));
            let status = ensure_object(object, "status");
            default_field(status, "phase", json!("Pending"));
            default_field(status, "qosClass", json!("BestEffort"));
        }
        "Secret" => {
            default_field(object, "type", json!("Opaque"));
            fold_string_data(object);
        }
        kind => {
            workloads::defaults(kind, object);
            network::defaults(kind, object);
            crate::kinds::policy::defaults(kind, object);
        }
    }
}

/// The defaults of a pod spec, in a pod or a template (the restart policy aside, which
/// Jobs must choose).
pub(crate) fn pod_spec_defaults(spec: &mut Map<String, Value>) {
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "securityContext", json!({}));
    if let Some(Value::Array(containers)) = spec.get_mut("containers") {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            default_field(c, "imagePullPolicy", json!("IfNotPresent"));
            default_field(c, "terminationMessagePath", json!("/dev/termination-log"));
            default_field(c, "terminationMessagePolicy", json!("File"));
            default_field(c, "resources", json!({}));
        }
    }
}

/// Moves a Secret's `stringData` into `data`, base64-encoded, as Kubernetes does on every write;
/// `stringData` wins over `data` for the same key.
pub fn fold_string_data(object: &mut Map<String, Value>) {
    use base64::Engine;
    let Some(Value::Object(strings)) = object.remove("stringData") else {
        return;
    };
    let data = ensure_object(object, "data");
    for (key, value) in strings {
        let text = value
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        data.insert(
            key,
            json!(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn info(resource: &str) -> &'static ResourceInfo {
        let group = if resource == "leases" {
            "coordination.k8s.io"
        } else {
            ""
        };
        find(group, "v1", resource).expect("served")
    }

    #[test]
    fn labels_and_annotations_are_checked_as_kubernetes_checks_them() {
        let good = json!({"labels": {"app": "web", "example.com/tier": "front-end", "empty": ""},
                          "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}});
        assert!(metadata_causes(&good).is_empty());
        let bad = json!({"labels": {"-x": "ok", "a/b/c": "ok", "v": "not ok!", "long": "x".repeat(64)},
                         "annotations": {"Bad Key": "x", "big": "y".repeat(300 * 1024)}});
        let fields: Vec<String> = metadata_causes(&bad).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.labels",
                "metadata.labels",
                "metadata.labels[long]",
                "metadata.labels[v]",
                "metadata.annotations",
                "metadata.annotations",
            ]
        );
    }

    #[test]
    fn namespace_names_must_be_dns_labels() {
        assert!(check_name(info("namespaces"), "team-a").is_ok());
        let err = check_name(info("namespaces"), "Team_A").expect_err("invalid");
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.to_status()["details"]["causes"][0]["field"],
            "metadata.name"
        );
        assert!(check_name(info("namespaces"), "a.b").is_err());
        assert!(check_name(info("pods"), "a.b").is_ok());
        assert!(check_name(info("pods"), &"x".repeat(254)).is_err());
    }

    #[test]
    fn wrong_types_are_bad_requests() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        assert_eq!(
            check_typed(info("pods"), &pod).expect_err("bad").code(),
            400
        );
        let ok = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        assert!(check_typed(info("pods"), &ok).is_ok());
    }

    #[test]
    fn a_pod_without_containers_names_the_field() {
        let err = check_semantics(info("pods"), "p", &json!({"spec": {}})).expect_err("invalid");
        assert_eq!(
            err.to_status()["details"]["causes"][0]["field"],
            "spec.containers"
        );
        let err = check_semantics(
            info("pods"),
            "p",
            &json!({"spec": {"containers": [{"name": "Bad", "image": ""}]}}),
        )
        .expect_err("invalid");
        let causes = err.to_status()["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(causes.len(), 2);
    }

    #[test]
    fn secret_string_data_becomes_base64_data() {
        let info = find("", "v1", "secrets").expect("served");
        let mut secret = json!({"data": {"a": "eA=="}, "stringData": {"b": "hello", "a": "y"}});
        apply_defaults(info, secret.as_object_mut().expect("object"));
        assert_eq!(secret["type"], "Opaque");
        assert_eq!(secret["data"], json!({"a": "eQ==", "b": "aGVsbG8="}));
        assert!(secret.get("stringData").is_none());
    }

    #[test]
    fn config_keys_are_checked_and_base64_is_required() {
        let cm = find("", "v1", "configmaps").expect("served");
        assert!(check_semantics(cm, "c", &json!({"data": {"ok.key_1": "v"}})).is_ok());
        let err =
            check_semantics(cm, "c", &json!({"data": {"bad key": "v"}})).expect_err("invalid");
        assert_eq!(
            err.to_status()["details"]["causes"][0]["field"],
            "data[bad key]"
        );
        let secret = find("", "v1", "secrets").expect("served");
        assert_eq!(
            check_typed(secret, &json!({"data": {"a": "not base64!"}}))
                .expect_err("bad")
                .code(),
            400
        );
    }

    #[test]
    fn pods_get_kubernetes_defaults() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
        let map = pod.as_object_mut().expect("object");
        apply_defaults(info("pods"), map);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["status"]["phase"], "Pending");
    }
}
