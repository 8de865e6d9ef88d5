//! kubectl's patching commands — `label`, `annotate`, `patch --type=merge|json` — with kubectl
//! 1.32 and 1.20, and patches that must fail.

use std::time::Duration;

use shoal_tests::{Cluster, Kubectl};

fn labels(cluster: &Cluster) -> serde_json::Value {
    let out = cluster.kubectl_ok(Kubectl::V132, &["get", "pod", "p", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&out).expect("json");
    pod["metadata"]["labels"].clone()
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
