//! The official Python client against a cluster (`tests/python/scenarios.py`): CRUD, lists
//! with selectors and pages, a watch resumed from a list's version, patches, server-side
//! apply, `utils.create_from_yaml` and the dynamic client. And lists in pages, as kubectl's
//! `--chunk-size` asks for them.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

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

/// The revisions of a composite resource version.
fn revisions(version: &str) -> Vec<u64> {
    version
        .split('.')
        .map(|r| r.parse().expect("a revision"))
        .collect()
}

/// Whether version `a` is at or past `b` on every shard.
fn covers(a: &str, b: &str) -> bool {
    revisions(a).iter().zip(revisions(b)).all(|(a, b)| *a >= b)
}

#[test]
fn watches_from_a_version_come_exactly_once_and_bookmarks_tell_where_they_are() {
    let cluster = Cluster::start("cache", &[]);
    let path = "/api/v1/namespaces/default/configmaps";
    let create = |name: &str| {
        let body = format!(r#"{{"metadata":{{"name":"{name}","labels":{{"set":"cache"}}}}}}"#);
        let (code, text) = cluster.curl("POST", path, "application/json", &body);
        assert_eq!(code, 201, "{text}");
    };
    for i in 0..3 {
        create(&format!("cache-{i}"));
    }
    // A list at "0" is served by the watch cache, which shows the writes once it has them.
    let listed = shoal_tests::wait_for("a list at 0 with three", Duration::from_secs(10), || {
        let (code, body) = cluster.curl("GET", &format!("{path}?resourceVersion=0"), "", "");
        assert_eq!(code, 200, "{body}");
        let list: Value = serde_json::from_str(&body).expect("json");
        let names = list["items"].as_array().map_or(0, |items| {
            items
                .iter()
                .filter(|i| {
                    i["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("cache-"))
                })
                .count()
        });
        (names == 3).then_some(list)
    });
    let from = listed["metadata"]["resourceVersion"]
        .as_str()
        .expect("a version")
        .to_owned();
    create("cache-3");
    let (code, text) = cluster.curl(
        "PATCH",
        &format!("{path}/cache-0"),
        "application/merge-patch+json",
        r#"{"data":{"k":"v"}}"#,
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = cluster.curl("DELETE", &format!("{path}/cache-1"), "", "");
    assert_eq!(code, 200, "{text}");

    let watch = |from: &str, selector: &str| -> Vec<Value> {
        let (code, text) = cluster.curl(
            "GET",
            &format!(
                "{path}?watch=true&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=3&labelSelector={selector}"
            ),
            "",
            "",
        );
        assert_eq!(code, 200, "{text}");
        shoal_tests::watch_events(&text)
    };
    let named = |events: &[Value]| -> Vec<(String, String)> {
        let mut named: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["type"] != "BOOKMARK")
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        named.sort();
        named
    };
    let events = watch(&from, "set%3Dcache");
    let want = |names: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<_> = names
            .iter()
            .map(|(t, n)| ((*t).to_owned(), (*n).to_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        named(&events),
        want(&[
            ("ADDED", "cache-3"),
            ("MODIFIED", "cache-0"),
            ("DELETED", "cache-1")
        ]),
        "each change after the list's version, once: {events:?}"
    );
    // Versions move forward, and the bookmark before the end is past every event.
    let versions: Vec<&str> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .expect("a version")
        })
        .collect();
    for pair in versions.windows(2) {
        assert!(covers(pair[1], pair[0]), "{versions:?}");
    }
    let last = events.last().expect("events");
    assert_eq!(last["type"], "BOOKMARK", "{events:?}");
    assert_eq!(last["object"]["kind"], "ConfigMap");
    assert_eq!(last["object"]["apiVersion"], "v1");
    // Resuming from any event's version gives exactly the events after it.
    let first_change = &events[0];
    let resumed = watch(
        first_change["object"]["metadata"]["resourceVersion"]
            .as_str()
            .expect("a version"),
        "set%3Dcache",
    );
    assert_eq!(named(&resumed), named(&events[1..]), "{resumed:?}");
    // A watch whose selector shows nothing still learns, from its bookmark, that it is
    // past every change.
    let quiet = watch(&from, "set%3Dnone");
    assert_eq!(quiet.len(), 1, "{quiet:?}");
    assert_eq!(quiet[0]["type"], "BOOKMARK");
    let at = quiet[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .expect("a version");
    for v in &versions {
        assert!(covers(at, v), "{at} is past {v}");
    }
    // Without allowWatchBookmarks there are none.
    let (_, text) = cluster.curl(
        "GET",
        &format!(
            "{path}?watch=true&resourceVersion={from}&timeoutSeconds=3&labelSelector=set%3Dnone"
        ),
        "",
        "",
    );
    assert!(text.trim().is_empty(), "{text}");

    // A watch list (`sendInitialEvents=true`): the objects as they are, at a version not
    // older than the one asked for, then a bookmark that marks their end.
    for version in ["", "0", from.as_str()] {
        let (code, text) = cluster.curl(
            "GET",
            &format!(
                "{path}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion={version}&allowWatchBookmarks=true&timeoutSeconds=3&labelSelector=set%3Dcache"
            ),
            "",
            "",
        );
        assert_eq!(code, 200, "{text}");
        let events = shoal_tests::watch_events(&text);
        assert!(events.len() >= 4, "{version:?}: {text}");
        assert_eq!(
            named(&events[..3]),
            want(&[
                ("ADDED", "cache-0"),
                ("ADDED", "cache-2"),
                ("ADDED", "cache-3")
            ]),
            "{version:?}: {text}"
        );
        let end = &events[3];
        assert_eq!(end["type"], "BOOKMARK", "{version:?}: {text}");
        assert_eq!(
            end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
            "{text}"
        );
        let at = end["object"]["metadata"]["resourceVersion"]
            .as_str()
            .expect("a version");
        for v in &versions {
            assert!(covers(at, v), "the initial events are as of {at}, past {v}");
        }
        // Later bookmarks are plain ones.
        for later in &events[4..] {
            assert_eq!(later["type"], "BOOKMARK", "{text}");
            assert!(later["object"]["metadata"].get("annotations").is_none());
        }
    }
    // `sendInitialEvents=false` starts with changes only: those after the version asked
    // for, or none from now.
    let changes_only = |version: &str| -> Vec<Value> {
        let (code, text) = cluster.curl(
            "GET",
            &format!(
                "{path}?watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&resourceVersion={version}&timeoutSeconds=1&labelSelector=set%3Dcache"
            ),
            "",
            "",
        );
        assert_eq!(code, 200, "{text}");
        shoal_tests::watch_events(&text)
    };
    assert_eq!(named(&changes_only(&from)), named(&events));
    assert!(changes_only("").is_empty());
    assert!(changes_only("0").is_empty());
    // What Kubernetes refuses of these options, as a 422 naming the option.
    for (query, field) in [
        ("watch=true&sendInitialEvents=true", "resourceVersionMatch"),
        (
            "watch=true&resourceVersionMatch=NotOlderThan&resourceVersion=0",
            "resourceVersionMatch",
        ),
        ("sendInitialEvents=true", "sendInitialEvents"),
    ] {
        let (code, text) = cluster.curl("GET", &format!("{path}?{query}"), "", "");
        assert_eq!(code, 422, "{query}: {text}");
        let status: Value = serde_json::from_str(&text).expect("a Status");
        assert_eq!(status["details"]["causes"][0]["field"], field, "{text}");
        assert_eq!(status["details"]["kind"], "ListOptions", "{text}");
    }
}
