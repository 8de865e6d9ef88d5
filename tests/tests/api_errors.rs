//! Bad input never panics and never loses data: each failure is a Kubernetes `Status` with the
//! right code, and what was stored stays.

use std::time::Duration;

use shoal_tests::{Cluster, Kubectl};

fn status(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

#[test]
fn bad_requests_get_the_kubernetes_status_codes() {
    let cluster = Cluster::start("errors", &["--watch-history", "5"]);
    let pods = "/api/v1/namespaces/default/pods";
    let good = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let (code, body) = cluster.curl("POST", pods, "application/json", good);
    assert_eq!(code, 201, "{body}");
    let created = status(&body);
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("a version")
        .to_owned();

    let cases: Vec<(&str, &str, &str, &str, u16, &str)> = vec![
        (
            "POST",
            pods,
            "application/json",
            r#"{"metadata": {"name": "#,
            400,
            "BadRequest",
        ),
        (
            "POST",
            pods,
            "application/yaml",
            "metadata:\n  name: [unclosed\n",
            400,
            "BadRequest",
        ),
        (
            "POST",
            pods,
            "application/json",
            r#"{"metadata":{"name":"q"},"spec":{"containers":"nope"}}"#,
            400,
            "BadRequest",
        ),
        (
            "POST",
            pods,
            "application/json",
            "[1,2,3]",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/widgets",
            "application/json",
            "",
            404,
            "NotFound",
        ),
        // A resource no served group has, and a group that is not served.
        (
            "GET",
            "/apis/apps/v1/namespaces/default/widgets",
            "application/json",
            "",
            404,
            "NotFound",
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            "application/json",
            "",
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/missing",
            "application/json",
            "",
            404,
            "NotFound",
        ),
        ("POST", pods, "application/json", good, 409, "AlreadyExists"),
        (
            "POST",
            pods,
            "application/json",
            r#"{"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
            422,
            "Invalid",
        ),
        (
            "POST",
            "/api/v1/namespaces",
            "application/json",
            r#"{"metadata":{"name":"not.a.label"}}"#,
            422,
            "Invalid",
        ),
        (
            "POST",
            pods,
            "application/vnd.unknown",
            good,
            415,
            "UnsupportedMediaType",
        ),
        (
            "GET",
            "/api/v1/pods?labelSelector=a%20in%20b",
            "application/json",
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/pods?fieldSelector=spec.bogus%3D1",
            "application/json",
            "",
            400,
            "BadRequest",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default",
            "application/json",
            "",
            403,
            "Forbidden",
        ),
    ];
    for (method, path, content_type, body, want_code, want_reason) in cases {
        let (code, text) = cluster.curl(method, path, content_type, body);
        assert_eq!(code, want_code, "{method} {path} {body:?}: {text}");
        let st = status(&text);
        assert_eq!(st["kind"], "Status", "{text}");
        assert_eq!(st["reason"], want_reason, "{method} {path}: {text}");
        assert_eq!(st["code"], want_code);
    }
    // 422 names the field.
    let (_, text) = cluster.curl(
        "POST",
        pods,
        "application/json",
        r#"{"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
    );
    assert_eq!(
        status(&text)["details"]["causes"][0]["field"],
        "metadata.name",
        "{text}"
    );

    // A stale resourceVersion is a conflict; the current one succeeds.
    let update = |version: &str, label: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p","resourceVersion":"{version}","labels":{{"v":"{label}"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        )
    };
    let (code, text) = cluster.curl(
        "PUT",
        &format!("{pods}/p"),
        "application/json",
        &update(&rv, "one"),
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = cluster.curl(
        "PUT",
        &format!("{pods}/p"),
        "application/json",
        &update(&rv, "two"),
    );
    assert_eq!(code, 409, "{text}");
    assert_eq!(status(&text)["reason"], "Conflict");

    // Nothing stored was lost or changed by the failures.
    let (code, text) = cluster.curl("GET", &format!("{pods}/p"), "application/json", "");
    assert_eq!(code, 200);
    let pod = status(&text);
    assert_eq!(pod["metadata"]["labels"]["v"], "one");
    assert_eq!(pod["metadata"]["uid"], created["metadata"]["uid"]);

    // A watch from a version older than the retained history is 410 Gone, as an ERROR event.
    for i in 0..12 {
        let body = format!(
            r#"{{"metadata":{{"name":"churn-{i}"}},"spec":{{"containers":[{{"name":"c","image":"i"}}]}}}}"#
        );
        assert_eq!(cluster.curl("POST", pods, "application/json", &body).0, 201);
    }
    let (code, text) = cluster.curl("GET", "/api/v1/namespaces/default/pods?watch=true&resourceVersion=1.1.1.1.1.1.1.1&timeoutSeconds=2", "application/json", "");
    assert_eq!(code, 200, "{text}");
    let event = status(text.lines().next().unwrap_or_default());
    assert_eq!(event["type"], "ERROR", "{text}");
    assert_eq!(event["object"]["code"], 410);

    // kubectl renders these errors as Kubernetes does.
    for k in Kubectl::ALL {
        let out = cluster.kubectl(k, &["get", "pod", "missing"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("pods \"missing\" not found"),
            "{k:?}"
        );
    }
    cluster.wait_nodes(&[("master-1", "Ready")], Duration::from_secs(10));
}
