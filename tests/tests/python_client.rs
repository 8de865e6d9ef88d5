//! The official Python client against a cluster (`tests/python/scenarios.py`): CRUD, lists
//! with selectors and pages, a watch resumed from a list's version, patches, server-side
//! apply, `utils.create_from_yaml` and the dynamic client. And lists in pages, as kubectl's
//! `--chunk-size` asks for them.

use std::process::Command;

use shoal_tests::{Cluster, Kubectl, python};

#[test]
fn the_python_client_scenarios_pass() {
    let cluster = Cluster::start("python", &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/scenarios.py");
    let out = Command::new(python())
        .arg(script)
        .arg(cluster.kubeconfig())
        .arg(&cluster.dir)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all scenarios passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lists_come_in_consistent_pages() {
    let cluster = Cluster::start("pages", &[]);
    for i in 0..5 {
        cluster.kubectl_ok(
            Kubectl::V132,
            &[
                "create",
                "configmap",
                &format!("page-{i}"),
                "--from-literal=k=v",
            ],
        );
    }
    for k in Kubectl::ALL {
        let names = cluster.kubectl_ok(k, &["get", "configmaps", "--chunk-size=2", "-o", "name"]);
        let pages: Vec<&str> = names.lines().filter(|l| l.contains("page-")).collect();
        assert_eq!(pages.len(), 5, "{k:?}: {names}");
        let table = cluster.kubectl_ok(k, &["get", "configmaps", "--chunk-size=2"]);
        assert_eq!(
            table.lines().filter(|l| l.starts_with("page-")).count(),
            5,
            "{k:?}: {table}"
        );
        assert_eq!(
            table.lines().filter(|l| l.starts_with("NAME")).count(),
            1,
            "{k:?}: {table}"
        );
    }
    // Over the wire: each page names the next and what is left; a page taken after a change
    // still shows the list as it was when it began.
    let path = "/api/v1/namespaces/default/configmaps";
    let page = |query: &str| -> serde_json::Value {
        let (code, body) = cluster.curl("GET", &format!("{path}?{query}"), "", "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    };
    let first = page("limit=2&labelSelector=");
    let version = first["metadata"]["resourceVersion"].clone();
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    let remaining = first["metadata"]["remainingItemCount"]
        .as_u64()
        .expect("a count");
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a token")
        .to_owned();
    cluster.kubectl_ok(Kubectl::V132, &["delete", "configmap", "page-4"]);
    let mut seen = first["items"].as_array().map_or(0, Vec::len);
    let mut token = Some(token);
    while let Some(t) = token {
        let next = page(&format!("limit=2&continue={t}"));
        assert_eq!(next["metadata"]["resourceVersion"], version);
        seen += next["items"].as_array().map_or(0, Vec::len);
        token = next["metadata"]["continue"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen as u64,
        2 + remaining,
        "every page of the list as it began"
    );
    // A token not issued here is 400; one whose list is gone is 410 Gone.
    let (code, body) = cluster.curl("GET", &format!("{path}?limit=2&continue=bogus!"), "", "");
    assert_eq!(code, 400, "{body}");
    let stale = {
        let first = page("limit=1");
        first["metadata"]["continue"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    for _ in 0..20 {
        page("limit=1");
    }
    let (code, body) = cluster.curl("GET", &format!("{path}?limit=1&continue={stale}"), "", "");
    assert_eq!(code, 410, "{body}");
    assert!(body.contains("\"reason\":\"Expired\""), "{body}");
    // A limit that is not a number is 400.
    let (code, _) = cluster.curl("GET", &format!("{path}?limit=many"), "", "");
    assert_eq!(code, 400);
}
