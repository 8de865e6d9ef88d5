//! The columns and rows `kubectl get` shows for the workload kinds.

use jiff::Timestamp;
use serde_json::{Value, json};
use shoal_core::time::{human_duration, parse_time};

use super::scale_selector;
use crate::kinds::{
    AGE, CONTAINERS, Column, IMAGES, NAME, format_labels, format_selector, int_at, or_none, str_at,
    string_map,
};
use crate::table::{age, since};

/// The columns `kubectl get` shows for a workload kind.
pub fn columns(kind: &str) -> Option<Vec<Column>> {
    let selector = Column(
        "Selector",
        "string",
        1,
        "A label query over pods that should match the replica count.",
    );
    let desired = Column("Desired", "integer", 0, "The number of replicas wanted.");
    let current = Column(
        "Current",
        "integer",
        0,
        "The most recently observed number of replicas.",
    );
    let ready_count = Column("Ready", "integer", 0, "The number of ready replicas.");
    Some(match kind {
        "Deployment" => vec![
            NAME,
            Column("Ready", "string", 0, "Number of the pod with ready state"),
            Column(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            Column(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            selector,
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            NAME,
            desired,
            current,
            ready_count,
            AGE,
            CONTAINERS,
            IMAGES,
            selector,
        ],
        "DaemonSet" => vec![
            NAME,
            Column(
                "Desired",
                "integer",
                0,
                "The total number of nodes that should be running the daemon pod.",
            ),
            Column(
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            Column(
                "Ready",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            Column(
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod.",
            ),
            Column(
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            ),
            Column(
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            selector,
        ],
        "StatefulSet" => vec![
            NAME,
            Column("Ready", "string", 0, "Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        "ControllerRevision" => vec![
            NAME,
            Column("Controller", "string", 0, "Controller of the object"),
            Column(
                "Revision",
                "integer",
                0,
                "Revision indicates the revision of the state represented by Data.",
            ),
            AGE,
        ],
        "Job" => vec![
            NAME,
            Column("Status", "string", 0, "Status of the job."),
            Column(
                "Completions",
                "string",
                0,
                "The completion status of the job.",
            ),
            Column(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            selector,
        ],
        "CronJob" => vec![
            NAME,
            Column("Schedule", "string", 0, "The schedule in Cron format."),
            Column(
                "Timezone",
                "string",
                0,
                "The time zone name for the given schedule.",
            ),
            Column(
                "Suspend",
                "boolean",
                0,
                "This flag tells the controller to suspend subsequent executions.",
            ),
            Column(
                "Active",
                "integer",
                0,
                "A list of pointers to currently running jobs.",
            ),
            Column(
                "Last Schedule",
                "string",
                0,
                "Information when was the last time the job was successfully scheduled.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            selector,
        ],
        _ => return None,
    })
}

/// The container names and images of a pod template, comma-separated.
fn template_containers(template: &Value) -> (String, String) {
    let containers = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// A Job's state as kubectl shows it, from its conditions.
fn job_status(job: &Value) -> &'static str {
    let conditions = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    };
    if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if holds("FailureTarget") {
        "FailureTarget"
    } else if holds("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if holds("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_completions(spec: &Value, status: &Value) -> String {
    let succeeded = int_at(status, "/succeeded");
    match spec.get("completions").and_then(Value::as_i64) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match spec.get("parallelism").and_then(Value::as_i64) {
            Some(p) if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn job_duration(status: &Value, now: Timestamp) -> String {
    let Some(start) = parse_time(str_at(status, "/startTime")) else {
        return String::new();
    };
    let end = parse_time(str_at(status, "/completionTime")).unwrap_or(now);
    human_duration(end.as_second() - start.as_second())
}

/// `kind.group/name` of the controller that owns `object`, or `<none>`.
fn controller_of(object: &Value) -> String {
    let owners = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(owner) = owners.iter().find(|o| o["controller"] == true) else {
        return "<none>".into();
    };
    let kind = str_at(owner, "/kind").to_lowercase();
    let group = str_at(owner, "/apiVersion")
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or_default();
    let name = str_at(owner, "/name");
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

/// The cells of one workload's row.
pub fn cells(kind: &str, object: &Value, now: Timestamp) -> Option<Vec<Value>> {
    let name = json!(str_at(object, "/metadata/name"));
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let status = object.get("status").unwrap_or(&Value::Null);
    let (containers, images) = template_containers(spec.get("template").unwrap_or(&Value::Null));
    let selector = || {
        json!(or_none(format_selector(
            spec.get("selector").unwrap_or(&Value::Null)
        )))
    };
    Some(match kind {
        "Deployment" => vec![
            name,
            json!(format!(
                "{}/{}",
                int_at(status, "/readyReplicas"),
                int_at(spec, "/replicas")
            )),
            json!(int_at(status, "/updatedReplicas")),
            json!(int_at(status, "/availableReplicas")),
            json!(age(object, now)),
            json!(containers),
            json!(images),
            selector(),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            name,
            json!(int_at(spec, "/replicas")),
            json!(int_at(status, "/replicas")),
            json!(int_at(status, "/readyReplicas")),
            json!(age(object, now)),
            json!(containers),
            json!(images),
            // A ReplicationController's selector is a plain label map.
            json!(or_none(scale_selector(kind, object))),
        ],
        "DaemonSet" => vec![
            name,
            json!(int_at(status, "/desiredNumberScheduled")),
            json!(int_at(status, "/currentNumberScheduled")),
            json!(int_at(status, "/numberReady")),
            json!(int_at(status, "/updatedNumberScheduled")),
            json!(int_at(status, "/numberAvailable")),
            json!(or_none(format_labels(&string_map(
                spec.pointer("/template/spec/nodeSelector")
            )))),
            json!(age(object, now)),
            json!(containers),
            json!(images),
            selector(),
        ],
        "StatefulSet" => vec![
            name,
            json!(format!(
                "{}/{}",
                int_at(status, "/readyReplicas"),
                int_at(spec, "/replicas")
            )),
            json!(age(object, now)),
            json!(containers),
            json!(images),
        ],
        "ControllerRevision" => vec![
            name,
            json!(controller_of(object)),
            json!(int_at(object, "/revision")),
            json!(age(object, now)),
        ],
        "Job" => vec![
            name,
            json!(job_status(object)),
            json!(job_completions(spec, status)),
            json!(job_duration(status, now)),
            json!(age(object, now)),
            json!(containers),
            json!(images),
            selector(),
        ],
        "CronJob" => {
            let job = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
            let (containers, images) =
                template_containers(job.get("template").unwrap_or(&Value::Null));
            let last = if str_at(status, "/lastScheduleTime").is_empty() {
                "<none>".to_owned()
            } else {
                since(object, "/status/lastScheduleTime", now)
            };
            vec![
                name,
                json!(str_at(spec, "/schedule")),
                json!(or_none(str_at(spec, "/timeZone").to_owned())),
                json!(
                    spec.get("suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(
                    status
                        .get("active")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                ),
                json!(last),
                json!(age(object, now)),
                json!(containers),
                json!(images),
                json!(or_none(format_selector(
                    job.get("selector").unwrap_or(&Value::Null)
                ))),
            ]
        }
        _ => return None,
    })
}
