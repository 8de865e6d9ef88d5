//! How objects end, through kubectl 1.32 and 1.20: deletion with finalizers and each
//! propagation policy (and the garbage collector behind them), `drain` through the eviction
//! subresource and the disruption budgets that hold it back, pods' graceful deletion, and
//! Events expiring after the event TTL.

use shoal_tests::{Cluster, Kubectl};

use super::json;

/// A ConfigMap owned by `owner` (uid `uid`), blocking its foreground deletion or not.
fn owned_configmap(name: &str, owner: &str, uid: &str, blocks: bool) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n    blockOwnerDeletion: {blocks}\ndata:\n  k: v\n"
    )
}

#[test]
fn deletion_follows_finalizers_and_the_propagation_policy() {
    let cluster = Cluster::start("delete", &[]);
    let exists = |k: Kubectl, name: &str| {
        let out = cluster.kubectl(k, &["get", "configmap", name, "-o", "json"]);
        out.status
            .success()
            .then(|| json(&String::from_utf8_lossy(&out.stdout)))
    };
    // An owner and two dependents, one of which blocks a foreground deletion.
    let family = |k: Kubectl, owner: &str| {
        cluster.kubectl_ok(k, &["create", "configmap", owner, "--from-literal=a=b"]);
        let uid = exists(k, owner).expect("the owner")["metadata"]["uid"]
            .as_str()
            .expect("a uid")
            .to_owned();
        let file = cluster.dir.join(format!("{owner}-dependents.yaml"));
        let yaml = format!(
            "{}---\n{}",
            owned_configmap(&format!("{owner}-blocks"), owner, &uid, true),
            owned_configmap(&format!("{owner}-free"), owner, &uid, false)
        );
        std::fs::write(&file, yaml).expect("write the file");
        cluster.kubectl_ok(k, &["apply", "-f", &file.display().to_string()]);
    };
    let gone = |k: Kubectl, name: &str| {
        shoal_tests::wait_for(
            &format!("{name} to be collected"),
            std::time::Duration::from_secs(20),
            || exists(k, name).is_none().then_some(()),
        )
    };

    for (k, orphan_flag) in [
        (Kubectl::V132, "--cascade=orphan"),
        (Kubectl::V120, "--cascade=false"),
    ] {
        let p = format!("{k:?}").to_lowercase();
        // Background (kubectl's default): the owner goes at once, its dependents after it.
        let owner = format!("{p}-bg");
        family(k, &owner);
        let out = cluster.kubectl_ok(k, &["delete", "configmap", &owner]);
        assert!(out.contains("deleted"), "{k:?}: {out}");
        assert!(exists(k, &owner).is_none(), "{k:?}: the owner stayed");
        gone(k, &format!("{owner}-blocks"));
        gone(k, &format!("{owner}-free"));

        // Orphan: the dependents stay, without their reference to the owner.
        let owner = format!("{p}-orphan");
        family(k, &owner);
        cluster.kubectl_ok(k, &["delete", "configmap", &owner, orphan_flag]);
        gone(k, &owner);
        for d in ["blocks", "free"] {
            let d = exists(k, &format!("{owner}-{d}")).expect("an orphan stays");
            assert!(
                d["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(Vec::is_empty),
                "{k:?}: {d}"
            );
        }
    }

    // Foreground: the owner is marked and waits for its blocking dependent.
    family(Kubectl::V132, "fg");
    cluster.kubectl_ok(
        Kubectl::V132,
        &["delete", "configmap", "fg", "--cascade=foreground"],
    );
    assert!(exists(Kubectl::V132, "fg").is_none());
    assert!(exists(Kubectl::V132, "fg-blocks").is_none());
    gone(Kubectl::V132, "fg-free");

    // Finalizers hold an object: deleting marks it, a new finalizer is refused, removing the
    // last one deletes it.
    let held = cluster.dir.join("held.yaml");
    std::fs::write(
        &held,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n",
    )
    .expect("write the file");
    for k in Kubectl::ALL {
        cluster.kubectl_ok(k, &["create", "-f", &held.display().to_string()]);
        cluster.kubectl_ok(k, &["delete", "configmap", "held", "--wait=false"]);
        let marked = exists(k, "held").expect("held by its finalizer");
        assert!(
            marked["metadata"]["deletionTimestamp"].is_string(),
            "{k:?}: {marked}"
        );
        assert_eq!(
            marked["metadata"]["deletionGracePeriodSeconds"], 0,
            "{k:?}: {marked}"
        );
        let out = cluster.kubectl(
            k,
            &[
                "patch",
                "configmap",
                "held",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]"#,
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{k:?}: a new finalizer was taken");
        assert!(
            err.contains("no new finalizers can be added"),
            "{k:?}: {err}"
        );
        // A label still may change.
        cluster.kubectl_ok(k, &["label", "configmap", "held", "still=here"]);
        cluster.kubectl_ok(
            k,
            &[
                "patch",
                "configmap",
                "held",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
        );
        assert!(exists(k, "held").is_none(), "{k:?}: still there");
    }

    // The wire: a Status for a removed object; preconditions and bad options refused.
    cluster.kubectl_ok(Kubectl::V132, &["create", "configmap", "wire"]);
    let path = "/api/v1/namespaces/default/configmaps/wire";
    let (code, body) = cluster.curl(
        "DELETE",
        path,
        "application/json",
        r#"{"preconditions": {"uid": "not-its-uid"}}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("Precondition failed: UID in precondition"),
        "{body}"
    );
    let (code, body) = cluster.curl(
        "DELETE",
        &format!("{path}?propagationPolicy=Sideways"),
        "application/json",
        "",
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("supported values"), "{body}");
    let (code, body) = cluster.curl(
        "DELETE",
        path,
        "application/json",
        r#"{"propagationPolicy": "Orphan", "orphanDependents": true}"#,
    );
    assert_eq!(code, 422, "{body}");
    let (code, body) = cluster.curl(
        "DELETE",
        &format!("{path}?gracePeriodSeconds=0"),
        "application/json",
        "",
    );
    assert_eq!(code, 200, "{body}");
    let status = json(&body);
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["status"], "Success", "{body}");
    assert_eq!(status["details"]["name"], "wire", "{body}");
    assert_eq!(status["details"]["kind"], "configmaps", "{body}");

    // A collection goes by its selectors; namespaces go one at a time.
    for (name, label) in [("b1", "batch=1"), ("b2", "batch=1"), ("b3", "batch=2")] {
        cluster.kubectl_ok(Kubectl::V132, &["create", "configmap", name]);
        cluster.kubectl_ok(Kubectl::V132, &["label", "configmap", name, label]);
    }
    let (code, body) = cluster.curl(
        "DELETE",
        "/api/v1/namespaces/default/configmaps?labelSelector=batch%3D1",
        "application/json",
        "",
    );
    assert_eq!(code, 200, "{body}");
    let list = json(&body);
    assert_eq!(list["kind"], "ConfigMapList", "{body}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{body}");
    assert!(exists(Kubectl::V132, "b1").is_none() && exists(Kubectl::V132, "b2").is_none());
    assert!(exists(Kubectl::V132, "b3").is_some());
    let (code, body) = cluster.curl("DELETE", "/api/v1/namespaces", "application/json", "");
    assert_eq!(code, 405, "{body}");
}

#[test]
fn drain_evicts_the_pods_of_a_node() {
    let cluster = Cluster::start("drain", &[]);
    cluster.wait_nodes(&[("master-1", "Ready")], std::time::Duration::from_secs(20));
    let pod = |name: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": "master-1", "containers": [{"name": "c", "image": "busybox"}]},
        })
        .to_string()
    };
    let pods_on_node = |k: Kubectl| {
        let out = cluster.kubectl_ok(
            k,
            &[
                "get",
                "pods",
                "--field-selector=spec.nodeName=master-1",
                "-o",
                "name",
            ],
        );
        out.lines().count()
    };
    for k in Kubectl::ALL {
        for name in ["a", "b"] {
            let (code, body) = cluster.curl(
                "POST",
                "/api/v1/namespaces/default/pods",
                "application/json",
                &pod(name),
            );
            assert_eq!(code, 201, "{body}");
        }
        assert_eq!(pods_on_node(k), 2);
        // Pods without a controller go only with --force. Both evict them through the
        // eviction subresource (1.20 finds it through the policy group).
        let out = cluster.kubectl_ok(
            k,
            &[
                "drain",
                "master-1",
                "--force",
                "--ignore-daemonsets",
                "--timeout=30s",
            ],
        );
        assert!(out.contains("node/master-1 cordoned"), "{k:?}: {out}");
        assert!(out.contains("pod/a evicted"), "{k:?}: {out}");
        // 1.20 names its last line with the verb it used for the pods.
        let last = if k == Kubectl::V132 {
            "drained"
        } else {
            "evicted"
        };
        assert!(
            out.contains(&format!("node/master-1 {last}")),
            "{k:?}: {out}"
        );
        assert_eq!(pods_on_node(k), 0, "{k:?}");
        let node = json(&cluster.kubectl_ok(k, &["get", "node", "master-1", "-o", "json"]));
        assert_eq!(node["spec"]["unschedulable"], true, "{k:?}: {node}");
        cluster.kubectl_ok(k, &["uncordon", "master-1"]);
    }

    // The wire: an Eviction is answered 201 with a Status; a mismatched name is a 400, a
    // missing pod a 404, and only create is allowed.
    let (code, body) = cluster.curl(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &pod("c"),
    );
    assert_eq!(code, 201, "{body}");
    let eviction = |name: &str| {
        serde_json::json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 0},
        })
        .to_string()
    };
    let path = "/api/v1/namespaces/default/pods/c/eviction";
    let (code, body) = cluster.curl("POST", path, "application/json", &eviction("other"));
    assert_eq!(code, 400, "{body}");
    let (code, body) = cluster.curl("GET", path, "application/json", "");
    assert_eq!(code, 405, "{body}");
    let (code, body) = cluster.curl("POST", path, "application/json", &eviction("c"));
    assert_eq!(code, 201, "{body}");
    assert_eq!(json(&body)["status"], "Success", "{body}");
    let (code, body) = cluster.curl("POST", path, "application/json", &eviction("c"));
    assert_eq!(code, 404, "{body}");
}

/// Marks a pod Running and Ready through its status subresource, as a kubelet would.
fn make_ready(cluster: &Cluster, namespace: &str, name: &str) {
    let (code, body) = cluster.curl(
        "PATCH",
        &format!("/api/v1/namespaces/{namespace}/pods/{name}/status"),
        "application/merge-patch+json",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    );
    assert_eq!(code, 200, "{body}");
}

fn budget_yaml(name: &str, namespace: &str, app: &str) -> String {
    format!(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: {app}\n"
    )
}

#[test]
fn disruption_budgets_hold_evictions_back() {
    let cluster = Cluster::start("budgets", &[]);
    cluster.wait_nodes(&[("master-1", "Ready")], std::time::Duration::from_secs(20));
    for k in Kubectl::ALL {
        let v = format!("{k:?}").to_lowercase();
        let ns = format!("pdb-{v}");
        let app = format!("web-{v}");
        cluster.kubectl_ok(k, &["create", "namespace", &ns]);
        for name in ["a", "b"] {
            let pod = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"nodeName": "master-1", "containers": [{"name": "c", "image": "busybox"}]},
            });
            let (code, body) = cluster.curl(
                "POST",
                &format!("/api/v1/namespaces/{ns}/pods"),
                "application/json",
                &pod.to_string(),
            );
            assert_eq!(code, 201, "{body}");
            make_ready(&cluster, &ns, name);
        }
        // 1.32 has a generator for policy/v1; 1.20's makes policy/v1beta1, which
        // Kubernetes no longer serves either, so it applies a file.
        if k == Kubectl::V132 {
            cluster.kubectl_ok(
                k,
                &[
                    "create",
                    "pdb",
                    "web",
                    "-n",
                    &ns,
                    &format!("--selector=app={app}"),
                    "--min-available=1",
                ],
            );
        } else {
            let file = cluster.dir.join(format!("{ns}.yaml"));
            std::fs::write(&file, budget_yaml("web", &ns, &app)).expect("write");
            cluster.kubectl_ok(k, &["apply", "-f", &file.display().to_string()]);
        }
        // The controller finds two healthy pods, one more than the budget needs.
        let row = shoal_tests::wait_for(
            "the budget's status",
            std::time::Duration::from_secs(20),
            || {
                let table = cluster.kubectl_ok(k, &["get", "pdb", "-n", &ns]);
                let (header, row) = super::header_and_row(&table, "web");
                assert_eq!(
                    super::cells(&header),
                    [
                        "NAME",
                        "MIN",
                        "AVAILABLE",
                        "MAX",
                        "UNAVAILABLE",
                        "ALLOWED",
                        "DISRUPTIONS",
                        "AGE"
                    ],
                    "{k:?}"
                );
                (super::cells(&row)[1..4] == ["1", "N/A", "1"]).then_some(row)
            },
        );
        assert!(row.starts_with("web"), "{row}");
        // drain evicts one pod; the budget refuses the other until drain gives up.
        let out = cluster.kubectl(
            k,
            &[
                "drain",
                "master-1",
                &format!("--pod-selector=app={app}"),
                "--force",
                "--ignore-daemonsets",
                "--timeout=7s",
            ],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{k:?}: {text}");
        assert!(
            text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
            "{k:?}: {text}"
        );
        assert_eq!(text.matches(" evicted").count(), 1, "{k:?}: {text}");
        let left = cluster.kubectl_ok(k, &["get", "pods", "-n", &ns, "-o", "name"]);
        assert_eq!(left.lines().count(), 1, "{k:?}: {left}");
        cluster.kubectl_ok(k, &["uncordon", "master-1"]);
        let status = shoal_tests::wait_for(
            "one healthy pod",
            std::time::Duration::from_secs(20),
            || {
                let budget =
                    json(&cluster.kubectl_ok(k, &["get", "pdb", "web", "-n", &ns, "-o", "json"]));
                (budget["status"]["currentHealthy"] == 1).then_some(budget["status"].clone())
            },
        );
        assert_eq!(status["disruptionsAllowed"], 0, "{status}");
        assert_eq!(status["desiredHealthy"], 1, "{status}");
        assert_eq!(status["expectedPods"], 1, "{status}");
        assert_eq!(
            status["conditions"][0]["reason"], "InsufficientPods",
            "{status}"
        );
    }

    // The wire: a refused eviction is 429 with the budget's reason, and the pod stays.
    let ns = "pdb-v132";
    let left = cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let eviction = serde_json::json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": left, "namespace": ns},
    })
    .to_string();
    let path = format!("/api/v1/namespaces/{ns}/pods/{left}/eviction");
    let (code, body) = cluster.curl("POST", &path, "application/json", &eviction);
    assert_eq!(code, 429, "{body}");
    let status = json(&body);
    assert_eq!(status["reason"], "TooManyRequests", "{body}");
    assert_eq!(
        status["details"]["causes"][0]["reason"], "DisruptionBudget",
        "{body}"
    );
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "The disruption budget web needs 1 healthy pods and has 1 currently",
        "{body}"
    );
    // Two budgets over one pod cannot be served: Kubernetes answers 500.
    let file = cluster.dir.join("second.yaml");
    std::fs::write(&file, budget_yaml("second", ns, "web-v132")).expect("write");
    cluster.kubectl_ok(Kubectl::V132, &["apply", "-f", &file.display().to_string()]);
    let (code, body) = cluster.curl("POST", &path, "application/json", &eviction);
    assert_eq!(code, 500, "{body}");
    let status = json(&body);
    assert_eq!(status["reason"], "InternalError", "{body}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("more than one PodDisruptionBudget")),
        "{body}"
    );
    let (code, _) = cluster.curl(
        "GET",
        &format!("/api/v1/namespaces/{ns}/pods/{left}"),
        "application/json",
        "",
    );
    assert_eq!(code, 200, "the refused pod is still there");
    // A budget is checked as Kubernetes checks it.
    let (code, body) = cluster.curl(
        "POST",
        &format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"),
        "application/json",
        r#"{"metadata":{"name":"both"},"spec":{"minAvailable":1,"maxUnavailable":"150%"}}"#,
    );
    assert_eq!(code, 422, "{body}");
    let fields: Vec<String> = json(&body)["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(fields, ["spec", "spec.maxUnavailable"], "{body}");
}

#[test]
fn events_expire_after_the_event_ttl() {
    let cluster = Cluster::start("event-ttl", &["--event-ttl-seconds=3"]);
    let event = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "probe.1"},
        "involvedObject": {"kind": "ConfigMap", "name": "probe", "namespace": "default"},
        "reason": "Probed", "message": "seen once", "type": "Normal",
    });
    let (code, body) = cluster.curl(
        "POST",
        "/api/v1/namespaces/default/events",
        "application/json",
        &event.to_string(),
    );
    assert_eq!(code, 201, "{body}");
    let present = || {
        cluster
            .kubectl(Kubectl::V132, &["get", "event", "probe.1"])
            .status
            .success()
    };
    assert!(present(), "an event is kept within its time to live");
    shoal_tests::wait_for(
        "the event to expire",
        std::time::Duration::from_secs(20),
        || (!present()).then_some(()),
    );
}

#[test]
fn pods_on_a_node_end_gracefully() {
    let cluster = Cluster::start("graceful", &[]);
    cluster.wait_nodes(&[("master-1", "Ready")], std::time::Duration::from_secs(20));
    let create = |name: &str, node: &str| {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        });
        let (code, body) = cluster.curl(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            &pod.to_string(),
        );
        assert_eq!(code, 201, "{body}");
    };
    let get = |name: &str| {
        let (code, body) = cluster.curl(
            "GET",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            "",
            "",
        );
        (code == 200).then(|| json(&body))
    };
    for (i, k) in Kubectl::ALL.into_iter().enumerate() {
        // On a node whose kubelet never confirms, a deleted pod stays, marked, for its
        // grace period and after: the kubelet has not said its containers stopped.
        let stuck = format!("stuck{i}");
        create(&stuck, "gone-node");
        let out = cluster.kubectl_ok(k, &["delete", "pod", &stuck, "--wait=false"]);
        assert!(out.contains("deleted"), "{out}");
        let marked = get(&stuck).expect("still there");
        let meta = &marked["metadata"];
        assert_eq!(meta["deletionGracePeriodSeconds"], 30, "{marked}");
        let end: jiff::Timestamp = meta["deletionTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("a deletion time");
        let created: jiff::Timestamp = meta["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("a creation time");
        let ahead = end.duration_since(created).as_secs();
        assert!((29..=40).contains(&ahead), "ends {ahead}s after it began");
        let table = cluster.kubectl_ok(k, &["get", "pod", &stuck, "--no-headers"]);
        assert!(table.contains("Terminating"), "{table}");
        // An update does not end it.
        cluster.kubectl_ok(k, &["label", "pod", &stuck, "seen=yes"]);
        assert!(
            get(&stuck).is_some(),
            "an update does not end a graceful deletion"
        );
        // A shorter grace period moves the end earlier; a longer one changes nothing.
        cluster.kubectl_ok(
            k,
            &["delete", "pod", &stuck, "--grace-period=10", "--wait=false"],
        );
        let shorter = get(&stuck).expect("still there");
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 10);
        let sooner: jiff::Timestamp = shorter["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("a deletion time");
        assert_eq!(end.duration_since(sooner).as_secs(), 20, "{shorter}");
        cluster.kubectl_ok(
            k,
            &["delete", "pod", &stuck, "--grace-period=60", "--wait=false"],
        );
        assert_eq!(
            get(&stuck).expect("still there")["metadata"]["deletionGracePeriodSeconds"],
            10
        );
        // Forced, it goes at once.
        let out = cluster.kubectl_ok(k, &["delete", "pod", &stuck, "--grace-period=0", "--force"]);
        assert!(out.contains("deleted"), "{out}");
        assert!(get(&stuck).is_none());

        // On a node with a kubelet, the kubelet confirms the deletion and `delete` returns
        // once the pod is gone.
        let served = format!("served{i}");
        create(&served, "master-1");
        let out = cluster.kubectl_ok(k, &["delete", "pod", &served, "--timeout=20s"]);
        assert!(out.contains("deleted"), "{out}");
        assert!(get(&served).is_none());
        // A pod on no node goes at once.
        let unscheduled = format!("unscheduled{i}");
        create(&unscheduled, "");
        let (code, body) = cluster.curl(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{unscheduled}"),
            "",
            "",
        );
        assert_eq!(code, 200, "{body}");
        assert!(get(&unscheduled).is_none());
    }
}
