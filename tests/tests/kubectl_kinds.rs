//! Workloads and Services through kubectl 1.32 and 1.20: creation by the generators (1.32's
//! send protobuf bodies), Kubernetes' defaults, `scale` through the scale subresource,
//! `expose`, cluster IPs and node ports from their ranges, the tables `get` prints, and the
//! errors a bad object gets. Deletion, eviction and expiry are in [`lifecycle`], Events'
//! two groups in [`events`].

use serde_json::Value;
use shoal_tests::{Cluster, Kubectl};

#[path = "kubectl_kinds/events.rs"]
mod events;
#[path = "kubectl_kinds/lifecycle.rs"]
mod lifecycle;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The first line of a table and the row that starts with `name`.
fn header_and_row(table: &str, name: &str) -> (String, String) {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .to_owned();
    (header, row)
}

fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn in_service_range(ip: &str) -> bool {
    // 10.96.0.0/12: 10.96.0.0 – 10.111.255.255.
    let octets: Vec<u8> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
    octets.len() == 4 && octets[0] == 10 && (96..=111).contains(&octets[1])
}

#[test]
fn workloads_and_services_behave_like_kubernetes() {
    let cluster = Cluster::start("kinds", &[]);

    // Deployments from both generators get Kubernetes' defaults and a first generation.
    let out = cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=2",
        ],
    );
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = cluster.kubectl_ok(
        Kubectl::V120,
        &["create", "deployment", "api", "--image=busybox"],
    );
    assert!(out.contains("deployment.apps/api created"), "{out}");
    for (name, replicas) in [("web", 2), ("api", 1)] {
        let d = json(&cluster.kubectl_ok(Kubectl::V120, &["get", "deploy", name, "-o", "json"]));
        assert_eq!(d["spec"]["replicas"], replicas, "{d}");
        assert_eq!(d["metadata"]["generation"], 1, "{d}");
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
            "{d}"
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10, "{d}");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600, "{d}");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always", "{d}");
        assert_eq!(
            pod["containers"][0]["terminationMessagePolicy"], "File",
            "{d}"
        );
    }

    // `scale` goes through the scale subresource with both versions, and bumps the
    // generation.
    for (k, replicas, generation) in [(Kubectl::V132, "5", 2), (Kubectl::V120, "3", 3)] {
        let out = cluster.kubectl_ok(k, &["scale", "deployment", "web", "--replicas", replicas]);
        assert!(out.contains("deployment.apps/web scaled"), "{k:?}: {out}");
        let d = json(&cluster.kubectl_ok(k, &["get", "deploy", "web", "-o", "json"]));
        assert_eq!(d["spec"]["replicas"].to_string(), replicas, "{d}");
        assert_eq!(d["metadata"]["generation"], generation, "{d}");
    }
    // A precondition that no longer holds is refused.
    let out = cluster.kubectl(
        Kubectl::V132,
        &[
            "scale",
            "deployment",
            "web",
            "--replicas=4",
            "--current-replicas=2",
        ],
    );
    assert!(!out.status.success());
    let scale = json(&cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ],
    ));
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");

    // The tables show kubectl's columns.
    for k in Kubectl::ALL {
        let table = cluster.kubectl_ok(k, &["get", "deployments", "-o", "wide"]);
        let (header, row) = header_and_row(&table, "web");
        assert_eq!(
            cells(&header),
            [
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR"
            ],
            "{k:?}"
        );
        let row = cells(&row);
        assert_eq!(row[1], "0/3", "{k:?}: {table}");
        assert_eq!(
            &row[5..],
            ["busybox", "busybox", "app=web"],
            "{k:?}: {table}"
        );
    }

    // Services: `create service` and `expose` get cluster IPs from the service range;
    // a NodePort Service gets a node port from its range.
    let out = cluster.kubectl_ok(
        Kubectl::V132,
        &["create", "service", "clusterip", "db", "--tcp=5432:5432"],
    );
    assert!(out.contains("service/db created"), "{out}");
    let out = cluster.kubectl_ok(
        Kubectl::V120,
        &[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
        ],
    );
    assert!(out.contains("service/web exposed"), "{out}");
    let out = cluster.kubectl_ok(
        Kubectl::V132,
        &["create", "service", "nodeport", "edge", "--tcp=80:8080"],
    );
    assert!(out.contains("service/edge created"), "{out}");
    let mut ips = Vec::new();
    for name in ["db", "web", "edge"] {
        let s = json(&cluster.kubectl_ok(Kubectl::V120, &["get", "svc", name, "-o", "json"]));
        let ip = s["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(in_service_range(&ip), "{name}: {s}");
        assert_eq!(s["spec"]["clusterIPs"][0], ip.as_str(), "{s}");
        assert_eq!(s["spec"]["sessionAffinity"], "None", "{s}");
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "three services, three addresses: {ips:?}");
    let web = json(&cluster.kubectl_ok(Kubectl::V132, &["get", "svc", "web", "-o", "json"]));
    assert_eq!(web["spec"]["selector"]["app"], "web", "{web}");
    assert_eq!(web["spec"]["ports"][0]["targetPort"], 8080, "{web}");
    let edge = json(&cluster.kubectl_ok(Kubectl::V132, &["get", "svc", "edge", "-o", "json"]));
    let node_port = edge["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0);
    assert!((30000..=32767).contains(&node_port), "{edge}");
    for k in Kubectl::ALL {
        let table = cluster.kubectl_ok(k, &["get", "services"]);
        let (header, row) = header_and_row(&table, "edge");
        assert_eq!(
            cells(&header),
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE"
            ],
            "{k:?}"
        );
        let row = cells(&row);
        assert_eq!(row[1], "NodePort", "{table}");
        assert_eq!(row[4], format!("80:{node_port}/TCP"), "{table}");
    }

    // An address asked for by name is held until its Service is deleted.
    let fixed = "10.96.0.10";
    let create_fixed = |k: Kubectl, name: &str| {
        cluster.kubectl(
            k,
            &[
                "create",
                "service",
                "clusterip",
                name,
                "--tcp=53:53",
                &format!("--clusterip={fixed}"),
            ],
        )
    };
    assert!(create_fixed(Kubectl::V132, "dns").status.success());
    let taken = create_fixed(Kubectl::V120, "dns2");
    assert!(!taken.status.success());
    let why = String::from_utf8_lossy(&taken.stderr);
    assert!(why.contains("already allocated"), "{why}");
    cluster.kubectl_ok(Kubectl::V132, &["delete", "service", "dns"]);
    assert!(create_fixed(Kubectl::V120, "dns2").status.success());
    // Outside the range.
    let out = cluster.kubectl(
        Kubectl::V132,
        &[
            "create",
            "service",
            "clusterip",
            "far",
            "--tcp=1:1",
            "--clusterip=192.168.1.1",
        ],
    );
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && why.contains("not in the valid range"),
        "{why}"
    );
    // A Service's address may not change.
    let out = cluster.kubectl(
        Kubectl::V132,
        &[
            "patch",
            "svc",
            "db",
            "--type=merge",
            "-p",
            r#"{"spec":{"clusterIP":"10.96.0.99","clusterIPs":["10.96.0.99"]}}"#,
        ],
    );
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && why.contains("may not change once set"),
        "{why}"
    );

    // A selector that misses its template is named, and stores nothing.
    let file = cluster.dir.join("bad-deployment.json");
    std::fs::write(
        &file,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"bad"},
            "spec":{"selector":{"matchLabels":{"app":"x"}},
                    "template":{"metadata":{"labels":{"app":"y"}},
                                "spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#,
    )
    .expect("write the file");
    for k in Kubectl::ALL {
        // 1.32 leaves validation to the server (the OpenAPI v3 documents declare
        // fieldValidation); 1.20 validates with the OpenAPI v2 protobuf document itself.
        let path = file.display().to_string();
        let out = cluster.kubectl(k, &["create", "-f", &path]);
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{k:?}");
        assert!(
            why.contains("spec.template.metadata.labels"),
            "{k:?}: {why}"
        );
        assert!(why.contains("does not match template"), "{k:?}: {why}");
    }
    let out = cluster.kubectl(Kubectl::V132, &["get", "deploy", "bad"]);
    assert!(!out.status.success());

    // Fields a kind does not have: refused by default (kubectl asks for Strict), named in a
    // warning with --validate=warn, and never stored.
    std::fs::write(
        &file,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"odd"},
            "spec":{"bogus":1,"selector":{"matchLabels":{"app":"odd"}},
                    "template":{"metadata":{"labels":{"app":"odd"}},
                                "spec":{"containers":[{"name":"c","image":"busybox","colour":"red"}]}}}}"#,
    )
    .expect("write the file");
    let path = file.display().to_string();
    let out = cluster.kubectl(Kubectl::V132, &["create", "-f", &path]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}");
    assert!(
        why.contains(r#"strict decoding error: unknown field "spec.bogus", unknown field "spec.template.spec.containers[0].colour""#),
        "{why}"
    );
    let out = cluster.kubectl(Kubectl::V132, &["create", "--validate=warn", "-f", &path]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{why}");
    assert!(why.contains(r#"unknown field "spec.bogus""#), "{why}");
    // kubectl 1.20 finds it itself, in the OpenAPI v2 document.
    let out = cluster.kubectl(Kubectl::V120, &["create", "-f", &path]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}");
    assert!(
        why.contains(r#"unknown field "bogus" in io.k8s.api.apps.v1.DeploymentSpec"#),
        "{why}"
    );
    let odd = json(&cluster.kubectl_ok(Kubectl::V120, &["get", "deploy", "odd", "-o", "json"]));
    assert!(odd["spec"].get("bogus").is_none(), "{odd}");
    assert!(
        odd["spec"]["template"]["spec"]["containers"][0]
            .get("colour")
            .is_none(),
        "{odd}"
    );
    // `explain` reads the same documents (1.32 the v3 ones, 1.20 the v2 one).
    for k in Kubectl::ALL {
        let out = cluster.kubectl_ok(k, &["explain", "deployment.spec.strategy"]);
        assert!(out.contains("DeploymentStrategy"), "{k:?}: {out}");
        assert!(out.contains("rollingUpdate"), "{k:?}: {out}");
    }

    // Jobs get their generated selector; their pods must not restart Always.
    let out = cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "create",
            "job",
            "once",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ],
    );
    assert!(out.contains("job.batch/once created"), "{out}");
    let job = json(&cluster.kubectl_ok(Kubectl::V120, &["get", "job", "once", "-o", "json"]));
    let uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid,
        "{job}"
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "once"
    );
    assert_eq!(job["spec"]["backoffLimit"], 6, "{job}");
    let table = cluster.kubectl_ok(Kubectl::V132, &["get", "jobs"]);
    let (header, row) = header_and_row(&table, "once");
    assert_eq!(
        cells(&header),
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert_eq!(cells(&row)[1..3], ["Running", "0/1"], "{table}");

    // Discovery lists the kinds and the scale subresource.
    for k in Kubectl::ALL {
        let out = cluster.kubectl_ok(k, &["api-resources", "--api-group=apps", "-o", "name"]);
        for resource in [
            "controllerrevisions.apps",
            "daemonsets.apps",
            "deployments.apps",
            "replicasets.apps",
            "statefulsets.apps",
        ] {
            assert!(out.lines().any(|l| l == resource), "{k:?}: {out}");
        }
    }
    // 1.32 reads the aggregated documents (one request per root), 1.20 the legacy ones.
    let fresh = cluster
        .dir
        .join("fresh-discovery-cache")
        .display()
        .to_string();
    let out = cluster.kubectl(
        Kubectl::V132,
        &["api-resources", "-v=8", "--cache-dir", &fresh],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(
            "Content-Type: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        ),
        "{log}"
    );
    assert!(!log.contains("/apis/apps/v1?"), "{log}");
    let gv = json(&cluster.kubectl_ok(Kubectl::V132, &["get", "--raw", "/apis/apps/v1"]));
    let scale = gv["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "deployments/scale")
        .cloned()
        .unwrap_or_default();
    assert_eq!(scale["group"], "autoscaling", "{gv}");
    assert_eq!(scale["kind"], "Scale", "{gv}");
}

fn deployment_yaml(
    name: &str,
    image: &str,
    env: &[(&str, &str)],
    sidecar: bool,
    tier: bool,
) -> String {
    let env: String = env
        .iter()
        .map(|(k, v)| format!("        - name: {k}\n          value: \"{v}\"\n"))
        .collect();
    let sidecar = if sidecar {
        "      - name: sidecar\n        image: busybox\n"
    } else {
        ""
    };
    let tier = if tier { "\n    tier: fe" } else { "" };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}{tier}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: web
        image: {image}
        env:
{env}{sidecar}"
    )
}

#[test]
fn apply_edit_and_patch_merge_lists_by_their_keys() {
    let cluster = Cluster::start("smp", &[]);
    for (k, name) in [(Kubectl::V132, "new"), (Kubectl::V120, "old")] {
        let file = cluster.dir.join(format!("{name}.yaml"));
        let path = file.display().to_string();
        // With each version's default validation: 1.32's through the server, 1.20's
        // against the OpenAPI v2 document.
        let apply = |yaml: String| {
            std::fs::write(&file, yaml).expect("write the file");
            cluster.kubectl_ok(k, &["apply", "-f", &path])
        };
        let out = apply(deployment_yaml(
            name,
            "busybox:1",
            &[("A", "1"), ("B", "2")],
            true,
            true,
        ));
        assert!(out.contains("created"), "{k:?}: {out}");
        // Change a field and a list item, remove a list item, a container and a label.
        let out = apply(deployment_yaml(
            name,
            "busybox:2",
            &[("B", "3")],
            false,
            false,
        ));
        assert!(out.contains("configured"), "{k:?}: {out}");
        let live = json(&cluster.kubectl_ok(k, &["get", "deploy", name, "-o", "json"]));
        let containers = &live["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            containers.as_array().map(Vec::len),
            Some(1),
            "{k:?}: {live}"
        );
        assert_eq!(containers[0]["image"], "busybox:2", "{k:?}: {live}");
        assert_eq!(
            containers[0]["env"],
            serde_json::json!([{"name": "B", "value": "3"}]),
            "{k:?}: {live}"
        );
        assert_eq!(
            live["metadata"]["labels"],
            serde_json::json!({"app": name}),
            "{k:?}: {live}"
        );
        assert_eq!(live["metadata"]["generation"], 2, "{k:?}: {live}");
        // `patch` is strategic by default: the env list merges by name.
        let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"C","value":"4"}]}]}}}}"#;
        cluster.kubectl_ok(k, &["patch", "deployment", name, "-p", patch]);
        // `set image` sends $setElementOrder with the container merged by name.
        cluster.kubectl_ok(
            k,
            &[
                "set",
                "image",
                &format!("deployment/{name}"),
                "web=busybox:3",
            ],
        );
        let live = json(&cluster.kubectl_ok(k, &["get", "deploy", name, "-o", "json"]));
        let web = &live["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(web["image"], "busybox:3", "{k:?}: {live}");
        assert_eq!(
            web["env"],
            serde_json::json!([{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]),
            "{k:?}: {live}"
        );
        let text = live.to_string();
        assert!(
            !text.contains("$setElementOrder") && !text.contains("$patch"),
            "{text}"
        );
        // A patch that names no merge key is refused, and nothing changes.
        let out = cluster.kubectl(
            k,
            &[
                "patch",
                "deployment",
                name,
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#,
            ],
        );
        assert!(!out.status.success(), "{k:?}");
        let again = json(&cluster.kubectl_ok(k, &["get", "deploy", name, "-o", "json"]));
        assert_eq!(
            again["metadata"]["resourceVersion"],
            live["metadata"]["resourceVersion"]
        );
    }
}
