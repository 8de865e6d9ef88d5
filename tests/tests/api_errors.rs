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

    // Verbs a resource does not serve, answers no client accepts, and versions from the
    // future.
    let (code, text) = cluster.curl(
        "POST",
        &format!("{pods}/p/status"),
        "application/json",
        good,
    );
    assert_eq!(
        (code, status(&text)["reason"].clone()),
        (405, "MethodNotAllowed".into()),
        "{text}"
    );
    let (code, text) =
        cluster.curl_headers("GET", &format!("{pods}/p"), &[("Accept", "text/html")], "");
    assert_eq!(code, 406, "{text}");
    assert_eq!(status(&text)["reason"], "NotAcceptable", "{text}");

    // Metadata views, as client-go's metadata client asks for them: a list (from the store
    // and from the watch cache), an object and a watch show only each object's metadata.
    let list_form = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let object_form = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let asked = format!(
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,{list_form},application/json"
    );
    for path in [pods.to_owned(), format!("{pods}?resourceVersion=0")] {
        let (code, text) = cluster.curl_headers("GET", &path, &[("Accept", &asked)], "");
        assert_eq!(code, 200, "{text}");
        let list = status(&text);
        assert_eq!(list["kind"], "PartialObjectMetadataList", "{text}");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1", "{text}");
        let item = &list["items"][0];
        assert_eq!(item["kind"], "PartialObjectMetadata", "{text}");
        assert_eq!(
            item["metadata"]["uid"], created["metadata"]["uid"],
            "{text}"
        );
        assert!(item.get("spec").is_none(), "{text}");
    }
    let (code, text) =
        cluster.curl_headers("GET", &format!("{pods}/p"), &[("Accept", object_form)], "");
    assert_eq!(code, 200, "{text}");
    let partial = status(&text);
    assert_eq!(partial["kind"], "PartialObjectMetadata", "{text}");
    assert_eq!(partial["metadata"]["name"], "p", "{text}");
    assert!(partial.get("spec").is_none(), "{text}");
    // An object is not a list: asked only in the list form, it has nothing to answer with.
    let (code, text) =
        cluster.curl_headers("GET", &format!("{pods}/p"), &[("Accept", list_form)], "");
    assert_eq!(code, 406, "{text}");
    assert_eq!(status(&text)["reason"], "NotAcceptable", "{text}");
    // With JSON after it, the plain object comes.
    let (code, text) = cluster.curl_headers(
        "GET",
        &format!("{pods}/p"),
        &[("Accept", &format!("{list_form},application/json"))],
        "",
    );
    assert_eq!(
        (code, status(&text)["kind"].clone()),
        (200, "Pod".into()),
        "{text}"
    );
    // A list cannot take the object form: the YAML after it is what comes.
    let (code, text) = cluster.curl_headers(
        "GET",
        pods,
        &[("Accept", &format!("{object_form},application/yaml"))],
        "",
    );
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("apiVersion: v1\n"), "{text}");
    assert!(text.contains("kind: PodList"), "{text}");
    let (code, text) = cluster.curl_headers(
        "GET",
        &format!("{pods}?watch=true&resourceVersion=0&timeoutSeconds=1"),
        &[("Accept", object_form)],
        "",
    );
    assert_eq!(code, 200, "{text}");
    let event = &shoal_tests::watch_events(&text)[0];
    assert_eq!(event["type"], "ADDED", "{text}");
    assert_eq!(event["object"]["kind"], "PartialObjectMetadata", "{text}");
    assert_eq!(event["object"]["metadata"]["name"], "p", "{text}");
    // A change after a version the watch resumes from comes in the metadata form too.
    let (code, text) = cluster.curl("GET", pods, "application/json", "");
    assert_eq!(code, 200, "{text}");
    let listed: serde_json::Value = serde_json::from_str(&text).expect("a list");
    let from = listed["metadata"]["resourceVersion"]
        .as_str()
        .expect("a version")
        .to_owned();
    let (code, text) = cluster.curl(
        "PATCH",
        &format!("{pods}/p"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"seen":"yes"}}}"#,
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = cluster.curl_headers(
        "GET",
        &format!("{pods}?watch=true&resourceVersion={from}&timeoutSeconds=1"),
        &[("Accept", object_form)],
        "",
    );
    assert_eq!(code, 200, "{text}");
    let event = &shoal_tests::watch_events(&text)[0];
    assert_eq!(event["type"], "MODIFIED", "{text}");
    assert_eq!(event["object"]["kind"], "PartialObjectMetadata", "{text}");
    assert_eq!(
        event["object"]["metadata"]["labels"]["seen"], "yes",
        "{text}"
    );
    assert!(event["object"].get("spec").is_none(), "{text}");
    // A list from the future is 504 once the server has waited for it; a watch from there
    // gets the same Status as its ERROR event, as a watch reports what goes wrong after
    // its request was read.
    // One revision a shard.
    let shards: usize = shoal_tests::SHARDS.parse().expect("a shard count");
    let future = vec!["999999"; shards].join(".");
    let (code, text) = cluster.curl(
        "GET",
        &format!("{pods}?resourceVersion={future}&resourceVersionMatch=NotOlderThan"),
        "application/json",
        "",
    );
    assert_eq!(code, 504, "{text}");
    let (code, text) = cluster.curl(
        "GET",
        &format!("{pods}?watch=true&resourceVersion={future}&timeoutSeconds=5"),
        "application/json",
        "",
    );
    assert_eq!(code, 200, "{text}");
    let event = status(text.lines().next().unwrap_or_default());
    assert_eq!(event["type"], "ERROR", "{text}");
    assert_eq!(event["object"]["code"], 504, "{text}");
    assert_eq!(event["object"]["reason"], "Timeout", "{text}");
    let (_, text) = cluster.curl(
        "GET",
        &format!("{pods}?resourceVersion={future}"),
        "application/json",
        "",
    );
    let st = status(&text);
    assert_eq!(st["reason"], "Timeout", "{text}");
    assert_eq!(
        st["details"]["causes"][0]["reason"], "ResourceVersionTooLarge",
        "{text}"
    );

    // A watch from a version older than the retained history is 410 Gone, as an ERROR event.
    for i in 0..12 {
        let body = format!(
            r#"{{"metadata":{{"name":"churn-{i}"}},"spec":{{"containers":[{{"name":"c","image":"i"}}]}}}}"#
        );
        assert_eq!(cluster.curl("POST", pods, "application/json", &body).0, 201);
    }
    let first = vec!["1"; shards].join(".");
    let (code, text) = cluster.curl(
        "GET",
        &format!(
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion={first}&timeoutSeconds=2"
        ),
        "application/json",
        "",
    );
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

/// A small seeded generator (xorshift64*), so a failing body can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One write endpoint: where it is, and the good body it corrupts.
struct Target {
    collection: &'static str,
    name: &'static str,
    good: serde_json::Value,
    /// A field and a value of the wrong type for it (JSON pointer, value).
    wrong: Vec<(&'static str, serde_json::Value)>,
}

fn targets() -> Vec<Target> {
    use serde_json::json;
    vec![
        Target {
            collection: "/apis/apps/v1/namespaces/default/deployments",
            name: "web",
            good: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "busybox"}]}}}}),
            wrong: vec![
                ("/spec/replicas", json!("three")),
                ("/spec", json!("x")),
                ("/metadata", json!(5)),
                ("/spec/template/spec/containers", json!({"a": 1})),
                ("/metadata/labels", json!([1])),
            ],
        },
        Target {
            collection: "/api/v1/namespaces/default/services",
            name: "svc",
            good: json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}),
            wrong: vec![
                ("/spec/ports", json!("x")),
                ("/spec/ports/0/port", json!("eighty")),
                ("/spec/selector", json!([true])),
            ],
        },
        Target {
            collection: "/api/v1/namespaces/default/configmaps",
            name: "cm",
            good: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
                "data": {"k": "v"}}),
            wrong: vec![("/data", json!([1])), ("/data/k", json!(5))],
        },
        Target {
            collection: "/api/v1/namespaces/default/pods",
            name: "pod",
            good: json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
            wrong: vec![
                ("/spec/containers", json!(3)),
                ("/spec/containers/0/ports", json!({"x": 1})),
            ],
        },
    ]
}

/// Sets the field at `pointer`, adding it to its parent object when it is missing.
fn set(value: &mut serde_json::Value, pointer: &str, to: serde_json::Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    match value.pointer_mut(parent) {
        Some(serde_json::Value::Object(map)) => {
            map.insert(key.to_owned(), to);
        }
        Some(serde_json::Value::Array(items)) => {
            let i: usize = key.parse().expect("an index");
            items[i] = to;
        }
        _ => panic!("{pointer} has no parent in {value}"),
    }
}

#[test]
fn two_hundred_malformed_bodies_get_a_status_and_change_nothing() {
    let cluster = Cluster::start("malformed", &[]);
    let targets = targets();
    let mut stored = Vec::new();
    for t in &targets {
        let (code, body) = cluster.curl(
            "POST",
            t.collection,
            "application/json",
            &t.good.to_string(),
        );
        assert_eq!(code, 201, "{body}");
        let (code, body) = cluster.curl("GET", &format!("{}/{}", t.collection, t.name), "", "");
        assert_eq!(code, 200, "{body}");
        stored.push(body);
    }
    // SHOAL_MALFORMED_SEED=<n> explores other bodies.
    let seed = std::env::var("SHOAL_MALFORMED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0005);
    let mut rng = Rng(seed);
    let file = cluster.dir.join("body");
    let at_file = format!("@{}", file.display());
    for i in 0..200 {
        let t = &targets[rng.below(targets.len())];
        let object = format!("{}/{}", t.collection, t.name);
        let mut body = t.good.clone();
        // A write to the stored object names its version; a create gets a fresh name.
        let (method, path, content_type) = match rng.below(8) {
            0 => ("POST", t.collection.to_owned(), "application/json"),
            1 => ("PUT", object.clone(), "application/json"),
            2 => ("PATCH", object.clone(), "application/merge-patch+json"),
            3 => (
                "PATCH",
                object.clone(),
                "application/strategic-merge-patch+json",
            ),
            4 => ("PATCH", object.clone(), "application/json-patch+json"),
            5 if t.name == "web" => ("PUT", format!("{object}/scale"), "application/json"),
            6 => ("PATCH", object.clone(), "application/apply-patch+yaml"),
            _ => ("PUT", format!("{object}/status"), "application/json"),
        };
        if method == "POST" {
            set(
                &mut body,
                "/metadata/name",
                serde_json::json!(format!("new-{i}")),
            );
        }
        let json_patch = content_type == "application/json-patch+json";
        let mut query = "";
        let mut category = rng.below(6);
        // A status write keeps the stored labels: a huge one there is not an error.
        if category == 2 && path.ends_with("/status") {
            category = 0;
        }
        let text = match category {
            // Cut short.
            0 => {
                let full = body.to_string();
                full[..1 + rng.below(full.len() - 1)].to_owned()
            }
            // A field of the wrong type.
            1 => {
                let (pointer, value) = &t.wrong[rng.below(t.wrong.len())];
                if json_patch {
                    serde_json::json!([{"op": "add", "path": pointer, "value": value}]).to_string()
                } else if path.ends_with("/scale") {
                    serde_json::json!({"spec": {"replicas": "x"}}).to_string()
                } else {
                    set(&mut body, pointer, value.clone());
                    body.to_string()
                }
            }
            // Huge strings where Kubernetes bounds them.
            2 => {
                let huge = "x".repeat(1000 + rng.below(200_000));
                if json_patch {
                    serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {"big": huge}}]).to_string()
                } else if path.ends_with("/scale") {
                    serde_json::json!({"spec": {"replicas": huge}}).to_string()
                } else {
                    set(
                        &mut body,
                        "/metadata/labels",
                        serde_json::json!({"big": huge}),
                    );
                    body.to_string()
                }
            }
            // Nesting deeper than any decoder follows.
            3 => {
                let depth = 200 + rng.below(5000);
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            }
            // Fields the kind does not have, with strict validation asked for.
            4 => {
                query = "?fieldValidation=Strict";
                if json_patch {
                    serde_json::json!([{"op": "add", "path": "/spec/bogus", "value": 1}])
                        .to_string()
                } else if path.ends_with("/scale") {
                    serde_json::json!({"kind": "Pod", "spec": {"replicas": 1}}).to_string()
                } else {
                    set(&mut body, "/bogus", serde_json::json!({"x": 1}));
                    body.to_string()
                }
            }
            // Patches that are not patches.
            _ => match content_type {
                "application/json-patch+json" => [
                    "{}",
                    r#"[{"op":"remove","path":"/spec/nope/nope"}]"#,
                    r#"[{"op":"explode"}]"#,
                ][rng.below(3)]
                .to_owned(),
                "application/strategic-merge-patch+json" => [
                    r#"{"$patch":"explode"}"#,
                    r#"{"metadata":{"$setElementOrder/finalizers":"a"}}"#,
                    "[1]",
                ][rng.below(3)]
                .to_owned(),
                _ => ["[1]", "7", "\"text\""][rng.below(3)].to_owned(),
            },
        };
        std::fs::write(&file, &text).expect("write the body");
        // An apply names its manager.
        let url = if content_type == "application/apply-patch+yaml" {
            format!("{path}?fieldManager=fuzz{}", query.replace('?', "&"))
        } else {
            format!("{path}{query}")
        };
        let (code, reply) = cluster.curl(method, &url, content_type, &at_file);
        let shown: String = text.chars().take(200).collect();
        assert!(
            (400..500).contains(&code),
            "seed {seed:#x} body {i}: {method} {url} {content_type} got {code}: {reply}\nbody: {shown}"
        );
        let st = status(&reply);
        assert_eq!(st["kind"], "Status", "body {i}: {reply}");
        assert_eq!(st["code"], code, "body {i}: {reply}");
    }
    // Nothing stored changed, and nothing was added.
    for (t, before) in targets.iter().zip(&stored) {
        let (_, after) = cluster.curl("GET", &format!("{}/{}", t.collection, t.name), "", "");
        assert_eq!(&after, before, "{} changed", t.name);
        let (_, list) = cluster.curl("GET", t.collection, "", "");
        let items = status(&list)["items"].as_array().map_or(0, Vec::len);
        assert_eq!(items, 1, "{}: {list}", t.collection);
    }
}
