//! kubectl's patching commands — `label`, `annotate`, `patch --type=merge|json`, `diff` and
//! `edit` — with kubectl 1.32 and 1.20, and patches that must fail.

use std::time::Duration;

use shoal_tests::{Cluster, Kubectl};

fn labels(cluster: &Cluster) -> serde_json::Value {
    let out = cluster.kubectl_ok(Kubectl::V132, &["get", "pod", "p", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&out).expect("json");
    pod["metadata"]["labels"].clone()
}

#[test]
fn diff_shows_what_apply_would_change_and_edit_changes_it() {
    let cluster = Cluster::start("diff-edit", &[]);
    // An editor that changes the value of `a` from 2 to 3 in the file kubectl hands it.
    let editor = cluster.dir.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/a: \"2\"/a: \"3\"/' \"$1\"\n").expect("write");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    for k in Kubectl::ALL {
        let name = format!("ed-{}", format!("{k:?}").to_lowercase());
        cluster.kubectl_ok(k, &["create", "configmap", &name, "--from-literal=a=1"]);
        let file = cluster.dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"2\"\n"
            ),
        )
        .expect("write");
        let path = file.display().to_string();
        let data = || {
            let out = cluster.kubectl_ok(k, &["get", "configmap", &name, "-o", "json"]);
            serde_json::from_str::<serde_json::Value>(&out).expect("json")["data"].clone()
        };
        // diff asks the server for the result of a dry-run write: exit 1 and the change.
        let out = cluster.kubectl(k, &["diff", "-f", &path]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{k:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("-  a: \"1\""), "{k:?}: {text}");
        assert!(text.contains("+  a: \"2\""), "{k:?}: {text}");
        assert_eq!(
            data(),
            serde_json::json!({"a": "1"}),
            "{k:?}: a dry run changes nothing"
        );
        cluster.kubectl_ok(k, &["apply", "-f", &path]);
        let out = cluster.kubectl(k, &["diff", "-f", &path]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{k:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "{k:?}");
        // edit hands the live object to the editor and writes back what it saved.
        let out = cluster.kubectl_env(
            k,
            &[("EDITOR", &editor.display().to_string())],
            &["edit", "configmap", &name],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{k:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("configmap/{name} edited")),
            "{k:?}: {text}"
        );
        assert_eq!(data(), serde_json::json!({"a": "3"}), "{k:?}");
    }
}

#[test]
fn label_annotate_and_patch_change_the_live_object() {
    let cluster = Cluster::start("patch", &[]);
    cluster.create_pod("p", &[("app", "web")]);
    for k in Kubectl::ALL {
        let v = format!("{k:?}").to_lowercase();
        let out = cluster.kubectl_ok(k, &["label", "pod", "p", &format!("tier={v}")]);
        assert!(out.contains("pod/p labeled"), "{k:?}: {out}");
        assert_eq!(labels(&cluster)["tier"], v.as_str());
        cluster.kubectl_ok(k, &["label", "pod", "p", "tier-"]);
        assert!(
            labels(&cluster).get("tier").is_none(),
            "{k:?}: the label must be gone"
        );
        let out = cluster.kubectl_ok(
            k,
            &["annotate", "pod", "p", "--overwrite", &format!("note={v}")],
        );
        assert!(out.contains("pod/p annotated"), "{k:?}: {out}");
        let note = cluster.kubectl_ok(
            Kubectl::V132,
            &[
                "get",
                "pod",
                "p",
                "-o",
                "jsonpath={.metadata.annotations.note}",
            ],
        );
        assert_eq!(note, v);
        cluster.kubectl_ok(
            k,
            &[
                "patch",
                "pod",
                "p",
                "--type=merge",
                "-p",
                &format!(r#"{{"metadata":{{"labels":{{"merge":"{v}"}}}}}}"#),
            ],
        );
        cluster.kubectl_ok(
            k,
            &[
                "patch",
                "pod",
                "p",
                "--type=json",
                "-p",
                &format!(r#"[{{"op":"add","path":"/metadata/labels/json","value":"{v}"}}]"#),
            ],
        );
        let now = labels(&cluster);
        assert_eq!(
            (
                now["app"].as_str(),
                now["merge"].as_str(),
                now["json"].as_str()
            ),
            (Some("web"), Some(v.as_str()), Some(v.as_str())),
            "{k:?}"
        );
    }
    // A patch carrying a stale resourceVersion is a conflict, and changes nothing.
    let out = cluster.kubectl(
        Kubectl::V132,
        &["label", "pod", "p", "stale=yes", "--resource-version=1"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the object has been modified"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(labels(&cluster).get("stale").is_none());
    // A JSON patch that cannot apply is 422; a patch of something missing is 404.
    let (code, body) = cluster.curl(
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/spec/nothing"}]"#,
    );
    assert_eq!(code, 422, "{body}");
    let (code, _) = cluster.curl(
        "PATCH",
        "/api/v1/namespaces/default/pods/missing",
        "application/merge-patch+json",
        "{}",
    );
    assert_eq!(code, 404);
    // A patch may not change the object's identity or its kind's types.
    let (code, body) = cluster.curl(
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        "application/merge-patch+json",
        r#"{"spec":{"containers":"nope"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = cluster.curl(
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        "application/merge-patch+json",
        r#"{"metadata":{"uid":"forged"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let uid = cluster.kubectl_ok(
        Kubectl::V132,
        &["get", "pod", "p", "-o", "jsonpath={.metadata.uid}"],
    );
    assert_ne!(uid, "forged");
    cluster.wait_nodes(&[("master-1", "Ready")], Duration::from_secs(10));
}

fn json_of(cluster: &Cluster, what: &[&str]) -> serde_json::Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&cluster.kubectl_ok(Kubectl::V132, &args)).expect("json")
}

/// The managers of an object and the fields each owns, as `manager/operation: [paths]`.
fn managers(object: &serde_json::Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        format!(
                            "{}/{}",
                            e["manager"].as_str().unwrap_or(""),
                            e["operation"].as_str().unwrap_or("")
                        ),
                        e["fieldsV1"].to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn apply_file(
    cluster: &Cluster,
    k: Kubectl,
    file: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let path = file.to_str().expect("utf-8 path");
    let mut args = vec!["apply", "--server-side", "-f", path];
    args.extend_from_slice(extra);
    cluster.kubectl(k, &args)
}

#[test]
fn server_side_apply_owns_fields_removes_what_it_dropped_and_reports_conflicts() {
    let cluster = Cluster::start("ssa", &[]);
    for k in Kubectl::ALL {
        let v = format!("{k:?}").to_lowercase();
        let name = format!("ssa-{v}");
        let file = cluster.dir.join(format!("{name}.yaml"));
        let write = |data: &str, labels: &str| {
            let text = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\ndata: {{{data}}}\n"
            );
            std::fs::write(&file, text).expect("write the file");
        };
        // Created by an apply, and owned by it field by field.
        write("a: \"1\", b: \"2\"", "app: web, tier: x");
        let out = apply_file(&cluster, k, &file, &[]);
        assert!(
            out.status.success(),
            "{k:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("serverside-applied"));
        let live = json_of(&cluster, &["configmap", &name]);
        assert_eq!(live["data"], serde_json::json!({"a": "1", "b": "2"}));
        assert_eq!(
            managers(&live),
            vec![(
                "kubectl/Apply".to_owned(),
                r#"{"f:data":{"f:a":{},"f:b":{}},"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}}}"#.to_owned()
            )],
            "{k:?}"
        );
        // Applying the same again writes nothing.
        let version = live["metadata"]["resourceVersion"].clone();
        assert!(apply_file(&cluster, k, &file, &[]).status.success());
        assert_eq!(
            json_of(&cluster, &["configmap", &name])["metadata"]["resourceVersion"],
            version
        );
        // Another manager changes a field: applying a different value is a conflict
        // naming it, and changes nothing.
        cluster.kubectl_ok(
            k,
            &[
                "patch",
                "configmap",
                &name,
                "-p",
                r#"{"data":{"a":"patched"}}"#,
            ],
        );
        write("a: \"3\", b: \"2\"", "app: web, tier: x");
        let out = apply_file(&cluster, k, &file, &[]);
        assert!(!out.status.success(), "{k:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl-patch\"")
                && stderr.contains(".data.a"),
            "{k:?}: {stderr}"
        );
        assert_eq!(
            json_of(&cluster, &["configmap", &name])["data"]["a"],
            "patched"
        );
        // Forced, the field changes hands.
        let out = apply_file(&cluster, k, &file, &["--force-conflicts"]);
        assert!(
            out.status.success(),
            "{k:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let live = json_of(&cluster, &["configmap", &name]);
        assert_eq!(live["data"]["a"], "3");
        assert!(
            managers(&live).iter().all(|(m, _)| m == "kubectl/Apply"),
            "{k:?}: the patcher's only field was taken: {:?}",
            managers(&live)
        );
        // Dropping a field and a label from the file removes them.
        write("a: \"3\"", "app: web");
        assert!(apply_file(&cluster, k, &file, &[]).status.success());
        let live = json_of(&cluster, &["configmap", &name]);
        assert_eq!(live["data"], serde_json::json!({"a": "3"}), "{k:?}");
        assert_eq!(
            live["metadata"]["labels"],
            serde_json::json!({"app": "web"}),
            "{k:?}"
        );
    }

    // A Deployment: containers merge by name and ports by port and protocol.
    let file = cluster.dir.join("web.yaml");
    let deployment = |containers: &str| {
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n{containers}"
        );
        std::fs::write(&file, text).expect("write the file");
    };
    deployment(
        "      - name: web\n        image: busybox:1\n        ports:\n        - containerPort: 80\n",
    );
    for k in Kubectl::ALL {
        assert!(
            apply_file(&cluster, k, &file, &[]).status.success(),
            "{k:?}"
        );
    }
    deployment(
        "      - name: web\n        image: busybox:2\n        ports:\n        - containerPort: 80\n        - containerPort: 81\n      - name: side\n        image: busybox:1\n",
    );
    assert!(
        apply_file(&cluster, Kubectl::V120, &file, &[])
            .status
            .success()
    );
    let live = json_of(&cluster, &["deployment", "web"]);
    let containers = &live["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "busybox:2");
    assert_eq!(containers[0]["ports"].as_array().map(Vec::len), Some(2));
    assert_eq!(containers[1]["name"], "side");
    // A default filled in by the server stays; the dropped container goes.
    assert_eq!(containers[0]["imagePullPolicy"], "IfNotPresent");
    deployment(
        "      - name: web\n        image: busybox:2\n        ports:\n        - containerPort: 80\n",
    );
    assert!(
        apply_file(&cluster, Kubectl::V132, &file, &[])
            .status
            .success()
    );
    let live = json_of(&cluster, &["deployment", "web"]);
    let containers = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["ports"].as_array().map(Vec::len), Some(1));

    // From client-side to server-side apply: kubectl takes over the fields its last
    // client-side apply set without a conflict.
    let file = cluster.dir.join("moved.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: moved\ndata:\n  a: \"1\"\n",
    )
    .expect("write");
    cluster.kubectl_ok(
        Kubectl::V132,
        &["apply", "-f", file.to_str().expect("utf-8")],
    );
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: moved\ndata:\n  a: \"2\"\n",
    )
    .expect("write");
    let out = apply_file(&cluster, Kubectl::V132, &file, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&cluster, &["configmap", "moved"])["data"]["a"], "2");
}

#[test]
fn apply_requests_that_cannot_be_served_are_refused_with_their_status() {
    let cluster = Cluster::start("ssa-wire", &[]);
    let path = "/api/v1/namespaces/default/configmaps/wire";
    let apply = "application/apply-patch+yaml";
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wire\ndata:\n  a: \"1\"\n";
    // Apply needs a field manager.
    let (code, body) = cluster.curl("PATCH", path, apply, config);
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("PatchOptions.meta.k8s.io") && body.contains("fieldManager"),
        "{body}"
    );
    // An apply of something missing creates it (YAML in, 201 out).
    let (code, body) = cluster.curl("PATCH", &format!("{path}?fieldManager=tool"), apply, config);
    assert_eq!(code, 201, "{body}");
    let (code, _) = cluster.curl("PATCH", &format!("{path}?fieldManager=tool"), apply, config);
    assert_eq!(code, 200);
    // `force` belongs to apply alone.
    let (code, body) = cluster.curl(
        "PATCH",
        &format!("{path}?force=true"),
        "application/merge-patch+json",
        "{}",
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("force"), "{body}");
    // A conflict is 409 with a cause naming the field and its manager.
    let (code, body) = cluster.curl(
        "PATCH",
        &format!("{path}?fieldManager=other"),
        apply,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wire\ndata:\n  a: \"2\"\n",
    );
    assert_eq!(code, 409, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );
    assert_eq!(status["details"]["causes"][0]["field"], ".data.a");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "conflict with \"tool\""
    );
    // A configuration must say what it is, name only fields its kind has, and list each
    // keyed item once.
    for (bad, want) in [
        ("metadata:\n  name: wire\n", 400),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wire\nbogus: 1\n",
            400,
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: wire\n",
            400,
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n",
            400,
        ),
        ("apiVersion: v1\nkind: ConfigMap\ndata: [1,\n", 400),
    ] {
        let (code, body) = cluster.curl("PATCH", &format!("{path}?fieldManager=tool"), apply, bad);
        assert_eq!(code, want, "{bad}: {body}");
    }
    let (code, body) = cluster.curl(
        "PATCH",
        "/api/v1/namespaces/default/pods/p?fieldManager=tool",
        apply,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: x\n  - name: a\n    image: y\n",
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("duplicate"), "{body}");
    // The object is as the first apply left it.
    let (_, body) = cluster.curl("GET", path, "", "");
    let live: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(live["data"], serde_json::json!({"a": "1"}));
    // managedFields that do not read are 422; `[{}]` clears them.
    let mut replaced = live.clone();
    replaced["metadata"]["managedFields"] = serde_json::json!([{"operation": "Delete"}]);
    let (code, body) = cluster.curl("PUT", path, "application/json", &replaced.to_string());
    assert_eq!(code, 422, "{body}");
    replaced["metadata"]["managedFields"] = serde_json::json!([{}]);
    let (code, body) = cluster.curl("PUT", path, "application/json", &replaced.to_string());
    assert_eq!(code, 200, "{body}");
    let cleared: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(cleared["metadata"].get("managedFields").is_none(), "{body}");

    // Through the scale subresource, an applied Scale owns its parent's replica count.
    let deployment = "/apis/apps/v1/namespaces/default/deployments/scaled";
    let config = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: scaled\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: s}\n  template:\n    metadata:\n      labels: {app: s}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n";
    let (code, body) = cluster.curl(
        "PATCH",
        &format!("{deployment}?fieldManager=deployer"),
        apply,
        config,
    );
    assert_eq!(code, 201, "{body}");
    let scale = |manager: &str, force: bool, body: &str| {
        let force = if force { "&force=true" } else { "" };
        cluster.curl(
            "PATCH",
            &format!("{deployment}/scale?fieldManager={manager}{force}"),
            apply,
            body,
        )
    };
    let five = "apiVersion: autoscaling/v1\nkind: Scale\nmetadata:\n  name: scaled\nspec:\n  replicas: 5\n";
    let (code, body) = scale("scaler", false, five);
    assert_eq!(code, 409, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["details"]["causes"][0]["field"], ".spec.replicas");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "conflict with \"deployer\""
    );
    let (code, body) = scale("scaler", true, five);
    assert_eq!(code, 200, "{body}");
    let applied: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(applied["kind"], "Scale", "{body}");
    assert_eq!(applied["spec"]["replicas"], 5, "{body}");
    let (_, body) = cluster.curl("GET", deployment, "", "");
    let live: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(live["spec"]["replicas"], 5, "{body}");
    let entries = live["metadata"]["managedFields"]
        .as_array()
        .expect("managers");
    let scaler = entries
        .iter()
        .find(|e| e["manager"] == "scaler")
        .unwrap_or_else(|| panic!("no entry of the scaler: {body}"));
    assert_eq!(scaler["operation"], "Apply");
    assert_eq!(scaler["subresource"], "scale");
    assert_eq!(
        scaler["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}})
    );
    let deployer = entries
        .iter()
        .find(|e| e["manager"] == "deployer")
        .expect("the deployer's entry");
    assert!(
        deployer["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "forced, the replicas changed hands: {body}"
    );
    // A Scale applies only to a workload that exists, and only as a Scale.
    let (code, body) = cluster.curl(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/missing/scale?fieldManager=scaler",
        apply,
        "apiVersion: autoscaling/v1\nkind: Scale\nmetadata:\n  name: missing\nspec:\n  replicas: 1\n",
    );
    assert_eq!(code, 404, "{body}");
    let (code, body) = scale(
        "scaler",
        false,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: scaled\n",
    );
    assert_eq!(code, 400, "{body}");
}
