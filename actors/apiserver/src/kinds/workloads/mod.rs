//! Workloads: apps/v1 Deployment, ReplicaSet, DaemonSet, StatefulSet and ControllerRevision,
//! batch/v1 Job and CronJob, and core/v1 ReplicationController: their defaults and checks
//! here, their rows in `kubectl get` in [`print`].

mod print;

pub use print::{cells, columns};

use serde_json::{Map, Value, json};
use shoal_core::error::FieldCause;

use super::{
    default_field, ensure_object, format_labels, format_selector, invalid, required,
    selector_matches, str_at, string_map, unsupported,
};
use crate::validate::{container_causes, pod_spec_defaults};

/// Whether `metadata.generation` starts at 1 and counts the changes to `spec`.
pub fn tracks_generation(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment"
            | "ReplicaSet"
            | "DaemonSet"
            | "StatefulSet"
            | "Job"
            | "CronJob"
            | "ReplicationController"
            | "PodDisruptionBudget"
    )
}

/// Whether the kind has a `scale` subresource.
pub fn scalable(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
    )
}

/// The defaults of a pod template's spec (those of a pod's, less the ones admission sets).
fn template_defaults(template: &mut Map<String, Value>, restart_policy: Option<&str>) {
    let spec = ensure_object(template, "spec");
    pod_spec_defaults(spec);
    if let Some(policy) = restart_policy {
        default_field(spec, "restartPolicy", json!(policy));
    }
}

fn spec_template_defaults(spec: &mut Map<String, Value>, restart_policy: Option<&str>) {
    template_defaults(ensure_object(spec, "template"), restart_policy);
}

/// Fills in the defaults Kubernetes sets on every write of a workload.
pub fn defaults(kind: &str, object: &mut Map<String, Value>) {
    match kind {
        "Deployment" => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "replicas", json!(1));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "progressDeadlineSeconds", json!(600));
            let strategy = ensure_object(spec, "strategy");
            default_field(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let rolling = ensure_object(strategy, "rollingUpdate");
                default_field(rolling, "maxSurge", json!("25%"));
                default_field(rolling, "maxUnavailable", json!("25%"));
            }
            spec_template_defaults(spec, Some("Always"));
        }
        "ReplicaSet" => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "replicas", json!(1));
            spec_template_defaults(spec, Some("Always"));
        }
        "ReplicationController" => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "replicas", json!(1));
            spec_template_defaults(spec, Some("Always"));
            // The selector and the controller's labels default to the template's labels.
            let template_labels = spec
                .get("template")
                .and_then(|t| t.pointer("/metadata/labels"))
                .cloned();
            if let Some(labels) = template_labels {
                let empty =
                    |v: Option<&Value>| v.and_then(Value::as_object).is_none_or(Map::is_empty);
                if empty(spec.get("selector")) {
                    spec.insert("selector".into(), labels.clone());
                }
                let meta = ensure_object(object, "metadata");
                if empty(meta.get("labels")) {
                    meta.insert("labels".into(), labels);
                }
            }
        }
        "DaemonSet" => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "revisionHistoryLimit", json!(10));
            let strategy = ensure_object(spec, "updateStrategy");
            default_field(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let rolling = ensure_object(strategy, "rollingUpdate");
                default_field(rolling, "maxUnavailable", json!(1));
                default_field(rolling, "maxSurge", json!(0));
            }
            spec_template_defaults(spec, Some("Always"));
        }
        "StatefulSet" => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "replicas", json!(1));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "podManagementPolicy", json!("OrderedReady"));
            let strategy = ensure_object(spec, "updateStrategy");
            default_field(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let rolling = ensure_object(strategy, "rollingUpdate");
                default_field(rolling, "partition", json!(0));
            }
            let retention = ensure_object(spec, "persistentVolumeClaimRetentionPolicy");
            default_field(retention, "whenDeleted", json!("Retain"));
            default_field(retention, "whenScaled", json!("Retain"));
            spec_template_defaults(spec, Some("Always"));
        }
        "Job" => job_spec_defaults(ensure_object(object, "spec")),
        "CronJob" => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "concurrencyPolicy", json!("Allow"));
            default_field(spec, "suspend", json!(false));
            default_field(spec, "successfulJobsHistoryLimit", json!(3));
            default_field(spec, "failedJobsHistoryLimit", json!(1));
            let job = ensure_object(spec, "jobTemplate");
            job_spec_defaults(ensure_object(job, "spec"));
        }
        _ => {}
    }
}

/// A Job's defaults. Its template's restart policy has none: it must be chosen.
fn job_spec_defaults(spec: &mut Map<String, Value>) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    default_field(spec, "parallelism", json!(1));
    default_field(spec, "backoffLimit", json!(6));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    default_field(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    spec_template_defaults(spec, None);
}

/// What a new object gets once, on create: a Job's generated selector and the labels that
/// tie its pods to it (unless the Job chose its selector with `manualSelector`).
pub fn on_create(kind: &str, object: &mut Map<String, Value>) {
    if kind != "Job" {
        return;
    }
    let uid = object
        .get("metadata")
        .map(|m| str_at(m, "/uid").to_owned())
        .unwrap_or_default();
    let name = object
        .get("metadata")
        .map(|m| str_at(m, "/name").to_owned())
        .unwrap_or_default();
    let spec = ensure_object(object, "spec");
    if spec.get("manualSelector") == Some(&json!(true)) {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = ensure_object(spec, "template");
    let labels = ensure_object(ensure_object(template, "metadata"), "labels");
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels.insert(key.into(), json!(value));
    }
}

/// A selector that must be present, non-empty, and match its template's labels.
fn selector_causes(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    let selector = spec.get("selector").filter(|s| !s.is_null());
    let template_labels = string_map(spec.pointer("/template/metadata/labels"));
    match selector {
        None => causes.push(required(format!("{path}.selector"))),
        Some(s) if s.get("matchLabels").is_none() && s.get("matchExpressions").is_none() => causes
            .push(invalid(
                format!("{path}.selector"),
                s,
                "empty selector is invalid for deployment",
            )),
        Some(s) if !selector_matches(s, &template_labels) => causes.push(invalid(
            format!("{path}.template.metadata.labels"),
            &json!(template_labels),
            "`selector` does not match template `labels`",
        )),
        Some(_) => {}
    }
}

fn non_negative(spec: &Value, field: &str, path: &str, causes: &mut Vec<FieldCause>) {
    if let Some(n) = spec.get(field).and_then(Value::as_i64)
        && n < 0
    {
        causes.push(invalid(
            format!("{path}.{field}"),
            &json!(n),
            "must be greater than or equal to 0",
        ));
    }
}

fn template_causes(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    match spec.get("template").filter(|t| !t.is_null()) {
        None => causes.push(required(format!("{path}.template"))),
        Some(t) => causes.extend(container_causes(
            t.get("spec").unwrap_or(&Value::Null),
            &format!("{path}.template.spec"),
        )),
    }
}

fn job_causes(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    template_causes(spec, path, causes);
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        non_negative(spec, field, path, causes);
    }
    let policy = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let field = format!("{path}.template.spec.restartPolicy");
    match policy {
        "OnFailure" | "Never" => {}
        "" => causes.push(FieldCause {
            reason: "FieldValueRequired",
            field,
            message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
        }),
        other => causes.push(unsupported(field, other, &["OnFailure", "Never"])),
    }
}

/// The checks Kubernetes makes of a workload beyond its types.
pub fn validate(kind: &str, object: &Value, causes: &mut Vec<FieldCause>) {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            selector_causes(spec, "spec", causes);
            template_causes(spec, "spec", causes);
            for field in ["replicas", "revisionHistoryLimit", "minReadySeconds"] {
                non_negative(spec, field, "spec", causes);
            }
            if kind == "Deployment"
                && let Some(deadline) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64)
                && deadline
                    <= spec
                        .get("minReadySeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
            {
                causes.push(invalid(
                    "spec.progressDeadlineSeconds",
                    &json!(deadline),
                    "must be greater than minReadySeconds",
                ));
            }
        }
        "ReplicationController" => {
            template_causes(spec, "spec", causes);
            non_negative(spec, "replicas", "spec", causes);
            let selector = string_map(spec.get("selector"));
            let labels = string_map(spec.pointer("/template/metadata/labels"));
            if selector.is_empty() {
                causes.push(required("spec.selector"));
            } else if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                causes.push(invalid(
                    "spec.template.metadata.labels",
                    &json!(labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        "Job" => job_causes(spec, "spec", causes),
        "CronJob" => {
            if str_at(spec, "/schedule").trim().is_empty() {
                causes.push(required("spec.schedule"));
            }
            if let Some(policy) = spec.get("concurrencyPolicy").and_then(Value::as_str)
                && !matches!(policy, "Allow" | "Forbid" | "Replace")
            {
                causes.push(unsupported(
                    "spec.concurrencyPolicy",
                    policy,
                    &["Allow", "Forbid", "Replace"],
                ));
            }
            let job = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
            job_causes(job, "spec.jobTemplate.spec", causes);
        }
        _ => {}
    }
}

/// The checks of an update against the stored object: fields that may not change.
pub fn validate_update(kind: &str, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let immutable: &[&str] = match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" => &["/spec/selector"],
        "StatefulSet" => &[
            "/spec/selector",
            "/spec/serviceName",
            "/spec/podManagementPolicy",
        ],
        "Job" => &["/spec/selector", "/spec/completionMode"],
        "ControllerRevision" => &["/data", "/revision"],
        _ => &[],
    };
    for pointer in immutable {
        let (before, after) = (old.pointer(pointer), new.pointer(pointer));
        if before != after {
            let field = pointer.trim_start_matches('/').replace('/', ".");
            causes.push(invalid(
                field,
                after.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}

/// The selector of a scalable workload in its string form (`Scale.status.selector`).
pub fn scale_selector(kind: &str, object: &Value) -> String {
    let selector = object.pointer("/spec/selector").unwrap_or(&Value::Null);
    if kind == "ReplicationController" {
        format_labels(&string_map(Some(selector)))
    } else {
        format_selector(selector)
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::time::parse_time;

    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox"}]},
                },
            },
        })
    }

    fn defaulted(kind: &str, mut object: Value) -> Value {
        defaults(kind, object.as_object_mut().expect("an object"));
        object
    }

    #[test]
    fn a_deployment_gets_kubernetes_defaults() {
        let d = defaulted("Deployment", deployment());
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["containers"][0]["terminationMessagePolicy"], "File");
        // Set by admission on pods, not on templates.
        assert!(pod.get("serviceAccountName").is_none());
        assert!(
            crate::kinds::roundtrip("Deployment", &d)
                .expect("modelled")
                .is_ok()
        );
        let mut causes = Vec::new();
        validate("Deployment", &d, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn a_recreate_strategy_gets_no_rolling_update() {
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        let d = defaulted("Deployment", d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn a_selector_that_misses_the_template_is_named() {
        let mut d = deployment();
        d["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        let mut causes = Vec::new();
        validate("Deployment", &defaulted("Deployment", d), &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image",
                "spec.replicas"
            ]
        );
        assert!(causes[0].message.contains("does not match template"));
    }

    #[test]
    fn a_missing_selector_is_required() {
        let mut d = deployment();
        d["spec"].as_object_mut().expect("spec").remove("selector");
        let mut causes = Vec::new();
        validate("Deployment", &d, &mut causes);
        assert_eq!(causes[0].field, "spec.selector");
        assert_eq!(causes[0].reason, "FieldValueRequired");
    }

    #[test]
    fn the_selector_may_not_change() {
        let old = deployment();
        let mut new = deployment();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
        let mut causes = Vec::new();
        validate_update("Deployment", &old, &new, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.selector");
        assert!(causes[0].message.contains("field is immutable"));
    }

    #[test]
    fn a_job_gets_its_selector_and_must_choose_a_restart_policy() {
        let mut job = json!({
            "metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "busybox"}]}}},
        });
        let map = job.as_object_mut().expect("an object");
        defaults("Job", map);
        on_create("Job", map);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["parallelism"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u-1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        let mut causes = Vec::new();
        validate("Job", &job, &mut causes);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.spec.restartPolicy");
        job["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let mut causes = Vec::new();
        validate("Job", &job, &mut causes);
        assert_eq!(causes[0].reason, "FieldValueNotSupported");
        job["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let mut causes = Vec::new();
        validate("Job", &job, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn a_replication_controller_selects_its_template_labels_by_default() {
        let rc = defaulted(
            "ReplicationController",
            json!({
                "metadata": {"name": "rc"},
                "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            }),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(scale_selector("ReplicationController", &rc), "app=a");
    }

    #[test]
    fn rows_read_like_kubectl_get() {
        let now = parse_time("2026-01-01T00:05:00Z").expect("a time");
        let mut d = defaulted("Deployment", deployment());
        d["spec"]["replicas"] = json!(3);
        d["status"] = json!({"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2});
        let web = cells("Deployment", &d, now).expect("a workload");
        assert_eq!(
            web,
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5m"),
                json!("web"),
                json!("busybox"),
                json!("app=web")
            ]
        );
        assert_eq!(columns("Deployment").expect("columns").len(), web.len());
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"completions": 2, "template": {"spec": {"containers": []}}},
            "status": {"succeeded": 1, "startTime": "2026-01-01T00:01:00Z"},
        });
        let row = cells("Job", &job, now).expect("a workload");
        assert_eq!(row[1], "Running");
        assert_eq!(row[2], "1/2");
        assert_eq!(row[3], "4m");
        for kind in [
            "ReplicaSet",
            "ReplicationController",
            "DaemonSet",
            "StatefulSet",
            "ControllerRevision",
            "Job",
            "CronJob",
        ] {
            let n = columns(kind).expect("columns").len();
            assert_eq!(
                cells(kind, &json!({}), now).expect("cells").len(),
                n,
                "{kind}"
            );
        }
    }
}
