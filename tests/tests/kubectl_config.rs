//! ConfigMaps and Secrets through kubectl 1.32 and 1.20: creation (1.32's generators send
//! protobuf bodies, 1.20's JSON), tables, `stringData`, and field selectors.

use std::time::Duration;

use shoal_tests::{Cluster, Kubectl};

#[test]
fn configmaps_and_secrets_are_stored_and_listed_like_kubernetes() {
    let cluster = Cluster::start("config", &[]);
    // kubectl 1.20's generators send JSON.
    let out = cluster.kubectl_ok(
        Kubectl::V120,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            "--from-literal=level=3",
        ],
    );
    assert!(out.contains("configmap/settings created"), "{out}");
    let out = cluster.kubectl_ok(
        Kubectl::V120,
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=x",
        ],
    );
    assert!(out.contains("secret/creds created"), "{out}");
    // kubectl 1.32's send protobuf: a namespace, and a configmap and a secret in it.
    let out = cluster.kubectl_ok(Kubectl::V132, &["create", "namespace", "team"]);
    assert!(out.contains("namespace/team created"), "{out}");
    let in_team = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", "team"]);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    for args in [
        in_team(&["create", "configmap", "tuned", "--from-literal=mode=slow"]),
        in_team(&[
            "create",
            "secret",
            "generic",
            "keys",
            "--from-literal=pin=1234",
        ]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cluster.kubectl_ok(Kubectl::V132, &args);
        assert!(out.contains(" created"), "{out}");
    }
    for (what, path, want) in [
        ("configmap", "{.data.mode}", "slow"),
        ("secret", "{.data.pin}", "MTIzNA=="),
    ] {
        let name = if what == "configmap" { "tuned" } else { "keys" };
        let jsonpath = format!("jsonpath={path}");
        let args = in_team(&["get", what, name, "-o", &jsonpath]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(cluster.kubectl_ok(Kubectl::V120, &args), want, "{what}");
    }
    let manifest = cluster.dir.join("secret.json");
    std::fs::write(&manifest, r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"tls-ish"},"type":"kubernetes.io/basic-auth","stringData":{"username":"admin"}}"#).expect("write");
    cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "create",
            "-f",
            &manifest.display().to_string(),
            "--validate=false",
        ],
    );
    for k in Kubectl::ALL {
        let cms = cluster.kubectl_ok(k, &["get", "configmaps"]);
        assert!(
            cms.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == ["settings", "2"]),
            "{k:?}: {cms}"
        );
        let secrets = cluster.kubectl_ok(k, &["get", "secrets"]);
        assert!(
            secrets
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["creds", "Opaque", "1"]),
            "{k:?}: {secrets}"
        );
        assert!(
            secrets
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3]
                    == ["tls-ish", "kubernetes.io/basic-auth", "1"]),
            "{k:?}: {secrets}"
        );
        let opaque = cluster.kubectl_ok(
            k,
            &[
                "get",
                "secrets",
                "--field-selector",
                "type=Opaque",
                "-o",
                "name",
            ],
        );
        assert_eq!(opaque.trim(), "secret/creds", "{k:?}");
    }
    let password = cluster.kubectl_ok(
        Kubectl::V132,
        &["get", "secret", "creds", "-o", "jsonpath={.data.password}"],
    );
    assert_eq!(password, "eA==");
    let username = cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "get",
            "secret",
            "tls-ish",
            "-o",
            "jsonpath={.data.username}",
        ],
    );
    assert_eq!(
        username, "YWRtaW4=",
        "stringData is stored base64-encoded in data"
    );
    let raw = cluster.kubectl_ok(Kubectl::V132, &["get", "secret", "tls-ish", "-o", "json"]);
    assert!(!raw.contains("stringData"));
    // Bad data is refused and leaves nothing behind.
    let (code, body) = cluster.curl(
        "POST",
        "/api/v1/namespaces/default/secrets",
        "application/json",
        r#"{"metadata":{"name":"bad"},"data":{"k":"not base64!"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = cluster.curl(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":{"name":"bad"},"data":{"no spaces":"v"}}"#,
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        cluster
            .curl(
                "GET",
                "/api/v1/namespaces/default/configmaps/bad",
                "application/json",
                ""
            )
            .0,
        404
    );
    cluster.wait_nodes(&[("master-1", "Ready")], Duration::from_secs(10));
}
