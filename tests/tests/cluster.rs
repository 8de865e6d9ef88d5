//! End-to-end scenarios against real processes: a master that is also a node, and nodes on
//! other 127.0.0.x addresses, driven by kubectl 1.32 and 1.20.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_tests::{Cluster, Kubectl, wait_for};

const ALL_READY: &[(&str, &str)] = &[
    ("master-1", "Ready"),
    ("node-a", "Ready"),
    ("node-b", "Ready"),
];

fn three_node_cluster(name: &str) -> Cluster {
    let mut cluster = Cluster::start(name, &[]);
    cluster.start_node("node-a", "127.0.0.2");
    cluster.start_node("node-b", "127.0.0.3");
    cluster.wait_nodes(ALL_READY, Duration::from_secs(30));
    cluster
}

#[test]
fn kubectl_sees_the_master_and_two_nodes_ready() {
    let cluster = three_node_cluster("ready");
    for k in Kubectl::ALL {
        let wide = cluster.kubectl_ok(k, &["get", "nodes", "-o", "wide"]);
        assert!(
            wide.contains("INTERNAL-IP")
                && wide.contains("127.0.0.2")
                && wide.contains("127.0.0.3"),
            "{k:?}: {wide}"
        );
        assert!(
            wide.lines()
                .any(|l| l.starts_with("master-1") && l.contains("control-plane")),
            "{k:?}: {wide}"
        );
        let yaml = cluster.kubectl_ok(k, &["get", "nodes", "-o", "yaml"]);
        let list: serde_json::Value = serde_yaml::from_str(&yaml).expect("yaml");
        let items = list["items"].as_array().expect("items");
        assert_eq!(items.len(), 3, "{k:?}");
        for node in items {
            assert_eq!(
                node["metadata"]["labels"]["kubernetes.io/hostname"],
                node["metadata"]["name"]
            );
            assert!(
                node["status"]["capacity"]["cpu"]
                    .as_str()
                    .is_some_and(|c| c.parse::<u32>().is_ok_and(|n| n > 0))
            );
            assert!(
                node["status"]["allocatable"]["memory"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("Ki"))
            );
            assert_eq!(node["status"]["nodeInfo"]["operatingSystem"], "linux");
            let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
                .as_str()
                .unwrap_or_default();
            assert!(
                runtime.starts_with("docker://"),
                "the Docker engine is up (scripts/test-deps.sh), so nodeInfo names it: {runtime:?}"
            );
            assert!(
                !node["status"]["nodeInfo"]["kernelVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
            );
        }
        let describe = cluster.kubectl_ok(k, &["describe", "node", "node-a"]);
        assert!(
            describe.contains("Name:               node-a")
                && describe.contains("KubeletReady")
                && describe.contains("InternalIP:  127.0.0.2"),
            "{k:?}: {describe}"
        );
        let namespaces = cluster.kubectl_ok(k, &["get", "namespaces"]);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(
                namespaces
                    .lines()
                    .any(|l| l.starts_with(ns) && l.contains("Active")),
                "{k:?}: {namespaces}"
            );
        }
        let leases = cluster.kubectl_ok(k, &["get", "leases", "-n", "kube-node-lease"]);
        for node in ["master-1", "node-a", "node-b"] {
            assert!(
                leases
                    .lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == [node, node]),
                "{k:?}: {leases}"
            );
        }
        let pods = cluster.kubectl(k, &["get", "pods", "-A"]);
        assert!(
            pods.status.success(),
            "{k:?}: {}",
            String::from_utf8_lossy(&pods.stderr)
        );
        assert!(String::from_utf8_lossy(&pods.stderr).contains("No resources found"));
    }
}

/// A `kubectl get nodes -w` whose output lines are collected as they arrive.
struct Watcher {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(cluster: &Cluster, k: Kubectl) -> Watcher {
        let mut child = Command::new(k.path())
            .env("KUBECONFIG", cluster.kubeconfig())
            .args([
                "--cache-dir",
                &cluster
                    .dir
                    .join(format!("watch-cache-{k:?}"))
                    .display()
                    .to_string(),
            ])
            .args(["get", "nodes", "-w"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl watch");
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Watcher { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn get_nodes_watch_shows_a_node_going_not_ready() {
    let mut cluster = three_node_cluster("watch");
    let watchers: Vec<(Kubectl, Watcher)> = Kubectl::ALL
        .iter()
        .map(|k| (*k, Watcher::start(&cluster, *k)))
        .collect();
    for (k, w) in &watchers {
        wait_for(
            &format!("{k:?} watch to list the nodes"),
            Duration::from_secs(15),
            || (w.lines().len() >= 4).then_some(()),
        );
        let lines = w.lines();
        assert!(lines[0].starts_with("NAME"), "{k:?}: {lines:?}");
        assert!(
            lines[1..4]
                .iter()
                .all(|r| r.split_whitespace().nth(1) == Some("Ready")),
            "{k:?}: {lines:?}"
        );
    }
    cluster.node("node-b").kill();
    for (k, w) in &watchers {
        wait_for(
            &format!("{k:?} watch to show node-b NotReady"),
            Duration::from_secs(10),
            || {
                w.lines()
                    .iter()
                    .any(|l| {
                        l.starts_with("node-b") && l.split_whitespace().nth(1) == Some("NotReady")
                    })
                    .then_some(())
            },
        );
    }
}

#[test]
fn a_killed_node_goes_not_ready_within_five_seconds_and_returns_as_itself() {
    let mut cluster = three_node_cluster("nodekill");
    let uid_before = cluster.kubectl_ok(
        Kubectl::V132,
        &["get", "node", "node-a", "-o", "jsonpath={.metadata.uid}"],
    );
    let killed_at = Instant::now();
    cluster.node("node-a").kill();
    cluster.wait_nodes(
        &[
            ("master-1", "Ready"),
            ("node-a", "NotReady"),
            ("node-b", "Ready"),
        ],
        Duration::from_secs(5),
    );
    let took = killed_at.elapsed();
    assert!(took <= Duration::from_secs(5), "NotReady after {took:?}");
    let reason = cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "get",
            "node",
            "node-a",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
    );
    assert_eq!(reason, "NodeStatusUnknown");
    cluster.restart_node("node-a", "127.0.0.2");
    cluster.wait_nodes(ALL_READY, Duration::from_secs(20));
    let uid_after = cluster.kubectl_ok(
        Kubectl::V132,
        &["get", "node", "node-a", "-o", "jsonpath={.metadata.uid}"],
    );
    assert_eq!(
        uid_before, uid_after,
        "the restarted node must keep its Node object"
    );
    // The node controller recorded both transitions; describe shows them, as do events.
    for k in Kubectl::ALL {
        let describe = cluster.kubectl_ok(k, &["describe", "node", "node-a"]);
        let events = describe.split("Events:").nth(1).unwrap_or_default();
        for reason in ["Starting", "NodeNotReady", "NodeReady"] {
            assert!(
                events.contains(reason),
                "{k:?}: no {reason} event in:\n{describe}"
            );
        }
    }
    let listed = cluster.kubectl_ok(
        Kubectl::V132,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=node-a,reason=NodeNotReady",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        listed.lines().count(),
        1,
        "one NodeNotReady event for node-a: {listed}"
    );
}

#[test]
fn killed_actors_are_restarted_and_kubectl_works_again_within_a_second() {
    let cluster = three_node_cluster("actorkill");
    cluster.create_pod("keep-me", &[("app", "x")]);
    let actors = cluster.kubectl_ok(Kubectl::V132, &["get", "--raw", "/debug/actors"]);
    let shards: u32 = shoal_tests::SHARDS.parse().expect("a shard count");
    let last_shard = format!("shard-{}", shards - 1);
    for name in [
        "apiserver",
        "node-lifecycle",
        "shard-0",
        &last_shard,
        "transport",
        "kubelet",
    ] {
        assert!(actors.contains(&format!("\"{name}\"")), "{actors}");
    }
    for name in ["apiserver", "node-lifecycle", "shard-0", &last_shard] {
        let out = cluster.kill_actor(None, name);
        assert!(
            out.status.success(),
            "killing {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let killed_at = Instant::now();
        // The measure is when the first kubectl that succeeds was started: kubectl's own start-up
        // on a busy machine is not the cluster's downtime.
        let (started, pods) = wait_for(
            &format!("kubectl after killing {name}"),
            Duration::from_secs(5),
            || {
                let started = killed_at.elapsed();
                let out = cluster.kubectl(Kubectl::V132, &["get", "pods", "--no-headers"]);
                out.status
                    .success()
                    .then(|| (started, String::from_utf8_lossy(&out.stdout).into_owned()))
            },
        );
        assert!(
            started <= Duration::from_secs(1),
            "kubectl still failed {started:?} after killing {name}"
        );
        assert!(
            pods.starts_with("keep-me"),
            "the pod was lost after killing {name}: {pods}"
        );
    }
    let missing = cluster.kill_actor(None, "no-such-actor");
    assert!(!missing.status.success());
    // The node's own admin endpoint kills its kubelet; its supervisor restarts it and the node stays Ready.
    let kill = cluster.kill_actor(Some("node-a"), "kubelet");
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    wait_for(
        "node-a's kubelet to be restarted",
        Duration::from_secs(5),
        || {
            let out = cluster.kubectl_admin(Some("node-a"), &["get", "--raw", "/debug/actors"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("\"kubelet\"")
                .then_some(())
        },
    );
    cluster.wait_nodes(ALL_READY, Duration::from_secs(10));
}

#[test]
fn a_restarted_master_keeps_everything_and_nodes_reconnect() {
    let mut cluster = three_node_cluster("masterrestart");
    for i in 0..5 {
        cluster.create_pod(&format!("p{i}"), &[]);
    }
    let before = cluster.kubectl_ok(
        Kubectl::V132,
        &["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"],
    );
    // The shard count is the store's: a start that asks for another is refused, with the
    // flag named, and leaves the store as it was.
    let log = cluster.master_refuses(&["--shards", "5"]);
    assert!(
        log.contains(&format!("has {} shards", shoal_tests::SHARDS)) && log.contains("--shards 5"),
        "the refusal does not say why:\n{log}"
    );
    cluster.restart_master();
    let after = cluster.kubectl_ok(
        Kubectl::V132,
        &["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"],
    );
    assert_eq!(before, after, "pods must survive a master restart");
    // Read from the new master: a renewal just before the kill is already stored there.
    let renew_before = cluster.lease_renew_time("node-b");
    // The nodes reconnect on their own: their leases are renewed through the new master.
    wait_for(
        "node-b to renew its lease through the restarted master",
        Duration::from_secs(20),
        || {
            let now = cluster.lease_renew_time("node-b");
            (now > renew_before).then_some(())
        },
    );
    let log = std::fs::read_to_string(&cluster.node("node-b").log).unwrap_or_default();
    assert!(
        log.matches("actor session up").count() >= 2,
        "node-b never reconnected:\n{log}"
    );
    cluster.wait_nodes(ALL_READY, Duration::from_secs(20));
}

#[test]
fn a_node_with_a_wrong_token_or_hash_is_refused_and_nothing_changes() {
    let cluster = Cluster::start("refuse", &[]);
    cluster.wait_nodes(&[("master-1", "Ready")], Duration::from_secs(20));
    let hash_at = cluster
        .join_args
        .iter()
        .position(|a| a == "--ca-cert-hash")
        .expect("hash flag")
        + 1;
    let token_at = cluster
        .join_args
        .iter()
        .position(|a| a == "--token")
        .expect("token flag")
        + 1;
    let mut bad_token = cluster.join_args.clone();
    bad_token[token_at] = "abcdef.0123456789abcdef".into();
    let mut bad_hash = cluster.join_args.clone();
    bad_hash[hash_at] = format!("sha256:{}", "0".repeat(64));
    for (args, expected) in [
        (bad_token, "invalid bootstrap token"),
        (bad_hash, "refusing to trust this master"),
    ] {
        let out = Command::new(shoal_tests::binary("shoal-node"))
            .args(&args)
            .args([
                "--name",
                "intruder",
                "--address",
                "127.0.0.9",
                "--data-dir",
                &cluster.dir.join("intruder").display().to_string(),
            ])
            .args(["--admin-port", &shoal_tests::free_port().to_string()])
            .output()
            .expect("shoal-node runs");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
        assert!(
            !cluster.dir.join("intruder/node.crt").exists(),
            "no certificate may be issued"
        );
    }
    cluster.wait_nodes(&[("master-1", "Ready")], Duration::from_secs(5));
    // No credentials, or plain HTTP: no data.
    let anonymous = Command::new("curl")
        .args([
            "-sk",
            "-w",
            "\n%{http_code}",
            &format!("https://127.0.0.1:{}/api/v1/nodes", cluster.api_port),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&anonymous.stdout);
    assert!(
        text.ends_with("401") && !text.contains("master-1"),
        "{text}"
    );
    let anonymous_review = Command::new("curl")
        .args([
            "-sk",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            &format!(
                "https://127.0.0.1:{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                cluster.api_port
            ),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&anonymous_review.stdout);
    assert!(text.ends_with("401"), "{text}");
    // `kubectl auth whoami` (1.32; 1.20 has no such command) names the admin and its groups.
    let whoami = cluster.kubectl_ok(Kubectl::V132, &["auth", "whoami"]);
    assert!(
        whoami.contains("Username")
            && whoami.contains("system:masters")
            && whoami.contains("system:authenticated"),
        "{whoami}"
    );
    let plain = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{}/api/v1/nodes", cluster.api_port),
        ])
        .output()
        .expect("curl");
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("master-1"));
}

#[test]
fn a_node_cut_off_by_the_fault_seam_goes_not_ready_and_recovers_when_healed() {
    let mut cluster = Cluster::start("faults", &[]);
    cluster.start_node("node-a", "127.0.0.2");
    cluster.wait_nodes(
        &[("master-1", "Ready"), ("node-a", "Ready")],
        Duration::from_secs(30),
    );
    let set_fault = |body: &str| {
        let out = cluster.post_admin(Some("node-a"), "/debug/faults/master-1", body);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set_fault(r#"{"partitioned": true}"#);
    cluster.wait_nodes(
        &[("master-1", "Ready"), ("node-a", "NotReady")],
        Duration::from_secs(10),
    );
    set_fault(r#"{"partitioned": false}"#);
    cluster.wait_nodes(
        &[("master-1", "Ready"), ("node-a", "Ready")],
        Duration::from_secs(20),
    );
    let log = std::fs::read_to_string(&cluster.node("node-a").log).unwrap_or_default();
    assert!(log.contains("partitioned by the fault seam"), "{log}");
}
