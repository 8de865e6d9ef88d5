//! Events through both of their groups: an Event written as events.k8s.io/v1 reads as core/v1
//! and the other way round, with selectors, tables, patches, apply, watches and deletion
//! working on either form.

use serde_json::{Value, json};
use shoal_tests::{Cluster, Kubectl};

use super::json;

fn new_event(name: &str, note: &str) -> String {
    format!(
        r#"apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: {name}
  namespace: default
eventTime: "2026-11-23T10:00:00.000000Z"
type: Warning
reason: Unhealthy
action: Probe
note: {note}
reportingController: example.com/prober
reportingInstance: prober-1
regarding:
  kind: Pod
  name: web
  namespace: default
"#
    )
}

#[test]
fn events_read_and_write_through_both_groups() {
    let cluster = Cluster::start("event-groups", &[]);
    let file = cluster.dir.join("event.yaml");
    for (i, k) in Kubectl::ALL.into_iter().enumerate() {
        let name = format!("web.probe{i}");
        std::fs::write(&file, new_event(&name, "readiness probe failed")).expect("written");
        let out = cluster.kubectl_ok(k, &["create", "-f", &file.display().to_string()]);
        assert!(
            out.contains(&format!("event.events.k8s.io/{name} created")),
            "{out}"
        );

        // The new form as written, and the core form of the same Event.
        let new =
            json(&cluster.kubectl_ok(k, &["get", "events.v1.events.k8s.io", &name, "-o", "json"]));
        assert_eq!(new["apiVersion"], "events.k8s.io/v1", "{new}");
        assert_eq!(new["note"], "readiness probe failed", "{new}");
        assert_eq!(new["regarding"]["name"], "web", "{new}");
        assert!(new.get("message").is_none(), "{new}");
        let core = json(&cluster.kubectl_ok(k, &["get", "events", &name, "-o", "json"]));
        assert_eq!(core["apiVersion"], "v1", "{core}");
        assert_eq!(core["message"], "readiness probe failed", "{core}");
        assert_eq!(core["involvedObject"]["kind"], "Pod", "{core}");
        assert_eq!(core["reportingComponent"], "example.com/prober", "{core}");
        assert_eq!(core["metadata"]["uid"], new["metadata"]["uid"]);

        // Field selectors name the new form's fields.
        let selected = |selector: &str| {
            cluster.kubectl_ok(
                k,
                &[
                    "get",
                    "events.events.k8s.io",
                    "--field-selector",
                    selector,
                    "-o",
                    "name",
                ],
            )
        };
        assert!(selected("regarding.name=web").contains(&name));
        assert!(selected("reportingController=example.com/prober").contains(&name));
        assert!(!selected("regarding.name=other").contains(&name));
        let bad = cluster.kubectl(
            k,
            &[
                "get",
                "events.events.k8s.io",
                "--field-selector",
                "involvedObject.name=web",
            ],
        );
        assert!(
            !bad.status.success(),
            "the core form's field names are not the new one's"
        );

        // The table is the Events table.
        let table = cluster.kubectl_ok(k, &["get", "events.events.k8s.io"]);
        let row = table
            .lines()
            .find(|l| l.contains("readiness probe failed"))
            .unwrap_or_else(|| panic!("no row for the event:\n{table}"));
        assert_eq!(
            row.split_whitespace().skip(1).take(3).collect::<Vec<_>>(),
            ["Warning", "Unhealthy", "pod/web"],
            "{table}"
        );

        // A merge patch of the new form changes the core one.
        cluster.kubectl_ok(
            k,
            &[
                "patch",
                "events.events.k8s.io",
                &name,
                "--type=merge",
                "-p",
                r#"{"note":"probe recovered"}"#,
            ],
        );
        let core = json(&cluster.kubectl_ok(k, &["get", "events", &name, "-o", "json"]));
        assert_eq!(core["message"], "probe recovered", "{core}");
    }

    // Server-side apply of the new form.
    std::fs::write(&file, new_event("web.probe0", "applied again")).expect("written");
    cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &file.display().to_string(),
        ],
    );
    let core = json(&cluster.kubectl_ok(
        Kubectl::V132,
        &["get", "events", "web.probe0", "-o", "json"],
    ));
    assert_eq!(core["message"], "applied again", "{core}");

    // An Event written through core/v1 reads in the new form, its deprecated fields named.
    let old = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "old.1"},
        "involvedObject": {"kind": "ConfigMap", "name": "settings", "namespace": "default"},
        "reason": "Seen", "message": "seen twice", "type": "Normal", "count": 2,
        "source": {"component": "legacy"},
        "firstTimestamp": "2026-11-23T09:00:00Z", "lastTimestamp": "2026-11-23T09:05:00Z",
    });
    let (code, body) = cluster.curl(
        "POST",
        "/api/v1/namespaces/default/events",
        "application/json",
        &old.to_string(),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = cluster.curl(
        "GET",
        "/apis/events.k8s.io/v1/namespaces/default/events/old.1",
        "application/json",
        "",
    );
    assert_eq!(code, 200, "{body}");
    let new = json(&body);
    assert_eq!(new["note"], "seen twice", "{new}");
    assert_eq!(new["deprecatedCount"], 2, "{new}");
    assert_eq!(new["deprecatedSource"]["component"], "legacy", "{new}");
    assert_eq!(
        new["deprecatedFirstTimestamp"], "2026-11-23T09:00:00Z",
        "{new}"
    );
    assert_eq!(new["regarding"]["name"], "settings", "{new}");

    // Watches from the cache ("0") and from a list's version show the new form. A watch
    // from "0" may start from any version the cache has: asked until it shows the last
    // write (the apply above).
    let added = shoal_tests::wait_for(
        "a watch from 0 to show every Event as last written",
        std::time::Duration::from_secs(10),
        || {
            let (code, body) = cluster.curl(
                "GET",
                "/apis/events.k8s.io/v1/namespaces/default/events?watch=1&resourceVersion=0&timeoutSeconds=1",
                "application/json",
                "",
            );
            assert_eq!(code, 200, "{body}");
            // The node's own Events are there too.
            let added: Vec<Value> = shoal_tests::watch_events(&body)
                .into_iter()
                .filter(|e| {
                    ["web.probe0", "web.probe1", "old.1"]
                        .contains(&e["object"]["metadata"]["name"].as_str().unwrap_or_default())
                })
                .collect();
            let current = added.iter().any(|e| {
                e["object"]["metadata"]["name"] == "web.probe0"
                    && e["object"]["note"] == "applied again"
            });
            (added.len() == 3 && current).then_some(added)
        },
    );
    for event in &added {
        assert_eq!(event["type"], "ADDED");
        assert_eq!(event["object"]["apiVersion"], "events.k8s.io/v1");
        assert!(event["object"]["note"].is_string(), "{event}");
        assert!(event["object"].get("message").is_none(), "{event}");
    }
    let (_, body) = cluster.curl(
        "GET",
        "/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name%3Dsettings",
        "application/json",
        "",
    );
    let list = json(&body);
    assert_eq!(list["kind"], "EventList", "{list}");
    assert_eq!(list["apiVersion"], "events.k8s.io/v1", "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("a version")
        .to_owned();
    cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "patch",
            "event",
            "old.1",
            "--type=merge",
            "-p",
            r#"{"message":"seen three times","count":3}"#,
        ],
    );
    let (code, body) = cluster.curl(
        "GET",
        &format!(
            "/apis/events.k8s.io/v1/namespaces/default/events?watch=1&resourceVersion={version}&timeoutSeconds=1&fieldSelector=regarding.name%3Dsettings"
        ),
        "application/json",
        "",
    );
    assert_eq!(code, 200, "{body}");
    let changes = shoal_tests::watch_events(&body);
    assert_eq!(changes.len(), 1, "{body}");
    assert_eq!(changes[0]["type"], "MODIFIED");
    assert_eq!(changes[0]["object"]["note"], "seen three times");
    assert_eq!(changes[0]["object"]["deprecatedCount"], 3);

    // What the new API requires of a new Event, each named.
    let bad = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "bad"},
        "eventTime": "2026-11-23T10:00:00.000000Z",
        "type": "Odd", "reason": "R", "reportingController": "c", "reportingInstance": "i",
        "deprecatedCount": 4,
    });
    let (code, body) = cluster.curl(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "application/json",
        &bad.to_string(),
    );
    assert_eq!(code, 422, "{body}");
    let status = json(&body);
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(fields, ["type", "deprecatedCount", "action"], "{body}");

    // Deleting through one group deletes the one Event.
    let out = cluster.kubectl_ok(
        Kubectl::V120,
        &["delete", "events.events.k8s.io", "web.probe1"],
    );
    assert!(out.contains("deleted"), "{out}");
    let gone = cluster.kubectl(Kubectl::V132, &["get", "event", "web.probe1"]);
    assert!(!gone.status.success(), "deleted through events.k8s.io");
    let out = cluster.kubectl_ok(
        Kubectl::V132,
        &["explain", "events.note", "--api-version=events.k8s.io/v1"],
    );
    assert!(out.contains("note"), "{out}");
}
