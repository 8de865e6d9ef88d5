//! Three masters as processes on 127.0.0.x, and worker nodes that know all of them: started,
//! killed, restarted, cut off, and asked through kubectl.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_tests::{Kubectl, Proc, binary, free_port, temp_dir, wait_for};

/// The store shards of the cluster the first master creates.
pub const SHARDS: &str = "4";

pub struct Master {
    pub name: String,
    pub address: String,
    pub api_port: u16,
    pub quic_port: u16,
    pub proc: Proc,
}

pub struct Masters {
    pub dir: PathBuf,
    pub masters: Vec<Master>,
    pub join: Vec<String>,
}

pub fn spawn(dir: &Path, name: &str, address: &str, api: u16, quic: u16, join: &[String]) -> Proc {
    let mut cmd = Command::new(binary("shoal-master"));
    cmd.args(["--data-dir", &dir.join(name).display().to_string()])
        .args(["--name", name, "--address", address])
        .args([
            "--api-port",
            &api.to_string(),
            "--quic-port",
            &quic.to_string(),
        ])
        .args(join);
    // The first master creates the cluster with its shard count; the others take it.
    if join.is_empty() {
        cmd.args(["--shards", SHARDS]);
    }
    Proc::start(name, cmd, dir)
}

impl Masters {
    /// Starts m1, then m2 and m3 joining it, and waits until both are members of every group.
    pub fn start(test: &str) -> Masters {
        let dir = temp_dir(test);
        let mut masters = Masters {
            dir,
            masters: Vec::new(),
            join: Vec::new(),
        };
        masters.add("m1", "127.0.0.21");
        let out = masters.dir.join("m1.out");
        let line = wait_for("m1's join command", Duration::from_secs(30), || {
            fs::read_to_string(&out)
                .ok()?
                .lines()
                .find(|l| l.contains("shoal-master --join"))
                .map(str::to_owned)
        });
        masters.join = line
            .split_whitespace()
            .skip_while(|w| *w != "--join")
            .take(6)
            .map(str::to_owned)
            .collect();
        masters.add("m2", "127.0.0.22");
        masters.add("m3", "127.0.0.23");
        for m in &masters.masters[1..] {
            wait_for(
                &format!("{} to replicate every group", m.name),
                Duration::from_secs(60),
                || {
                    fs::read_to_string(&m.proc.log)
                        .ok()?
                        .contains("member of every shard group")
                        .then_some(())
                },
            );
        }
        for m in &masters.masters {
            let recorded = fs::read_to_string(masters.dir.join(&m.name).join("store/shards"))
                .unwrap_or_default();
            assert_eq!(
                recorded.trim(),
                SHARDS,
                "{} records other shards than the cluster's",
                m.name
            );
        }
        for i in 0..3 {
            masters.wait_api(i);
        }
        masters
    }

    pub fn add(&mut self, name: &str, address: &str) {
        let (api_port, quic_port) = (free_port(), free_port());
        let proc = spawn(&self.dir, name, address, api_port, quic_port, &self.join);
        self.masters.push(Master {
            name: name.to_owned(),
            address: address.to_owned(),
            api_port,
            quic_port,
            proc,
        });
    }

    pub fn restart(&mut self, i: usize) {
        let m = &mut self.masters[i];
        m.proc.kill();
        m.proc = spawn(&self.dir, &m.name, &m.address, m.api_port, m.quic_port, &[]);
        self.wait_api(i);
    }

    pub fn wait_api(&mut self, i: usize) {
        wait_for(
            &format!("{}'s API", self.masters[i].name),
            Duration::from_secs(30),
            || {
                assert!(
                    self.masters[i].proc.exited().is_none(),
                    "{} exited:\n{}",
                    self.masters[i].name,
                    self.masters[i].proc.log_tail()
                );
                self.kubectl(i, &["get", "--raw", "/readyz"])
                    .status
                    .success()
                    .then_some(())
            },
        );
    }

    pub fn kubeconfig(&self, i: usize) -> PathBuf {
        self.dir
            .join(&self.masters[i].name)
            .join("admin.kubeconfig")
    }

    /// kubectl 1.20 (its generators send JSON) against master `i`, giving up after 3 s.
    pub fn kubectl(&self, i: usize, args: &[&str]) -> Output {
        Command::new(Kubectl::V120.path())
            .env("KUBECONFIG", self.kubeconfig(i))
            .args([
                "--cache-dir",
                &self.dir.join(format!("cache-{i}")).display().to_string(),
            ])
            .args(["--request-timeout", "3s"])
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Starts a node joined to every master, with its local API endpoint on a free port, and
    /// writes a kubeconfig that points at that endpoint.
    /// Starts a worker node that knows every master and serves a local API endpoint; returns
    /// it and a kubeconfig pointed at that endpoint.
    pub fn start_node(&self, name: &str, address: &str) -> (Proc, PathBuf) {
        let local = format!("127.0.0.1:{}", free_port());
        let token = self.join[3].clone();
        let hash = self.join[5].clone();
        let mut cmd = Command::new(binary("shoal-node"));
        for m in &self.masters {
            cmd.args(["--join", &format!("{}:{}", m.address, m.quic_port)]);
        }
        cmd.args(["--token", &token, "--ca-cert-hash", &hash])
            .args(["--name", name, "--address", address])
            .args(["--data-dir", &self.dir.join(name).display().to_string()])
            .args([
                "--admin-port",
                &free_port().to_string(),
                "--local-api",
                &local,
            ]);
        let proc = Proc::start(name, cmd, &self.dir);
        let admin = fs::read_to_string(self.kubeconfig(0)).expect("kubeconfig");
        let server = format!(
            "https://{}:{}",
            self.masters[0].address, self.masters[0].api_port
        );
        let kubeconfig = self.dir.join(format!("{name}.kubeconfig"));
        fs::write(
            &kubeconfig,
            admin.replace(&server, &format!("https://{local}")),
        )
        .expect("write");
        (proc, kubeconfig)
    }

    /// Waits until master `i` lists exactly `expected` (it caught up, or the cluster healed).
    pub fn wait_serves(&self, i: usize, expected: &[String]) {
        wait_for(
            &format!("{} to serve {expected:?}", self.masters[i].name),
            Duration::from_secs(20),
            || (self.configmaps(i).as_deref() == Some(expected)).then_some(()),
        );
    }

    pub fn configmaps(&self, i: usize) -> Option<Vec<String>> {
        self.configmaps_via(&self.kubeconfig(i), i)
    }

    pub fn configmaps_via(&self, kubeconfig: &Path, cache: usize) -> Option<Vec<String>> {
        let out = Command::new(Kubectl::V120.path())
            .env("KUBECONFIG", kubeconfig)
            .args([
                "--cache-dir",
                &self
                    .dir
                    .join(format!("cache-{cache}"))
                    .display()
                    .to_string(),
            ])
            .args(["--request-timeout", "3s", "get", "configmaps", "-o", "name"])
            .output()
            .expect("kubectl runs");
        out.status.success().then(|| {
            let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            names.sort();
            names
        })
    }

    pub fn set_fault(&self, i: usize, peer: &str, partitioned: bool) {
        let body = self.dir.join(format!("fault-{i}-{peer}.json"));
        fs::write(&body, format!(r#"{{"partitioned": {partitioned}}}"#)).expect("body");
        let path = format!("/debug/faults/{peer}");
        let out = self.kubectl(
            i,
            &["create", "--raw", &path, "-f", &body.display().to_string()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Creates configmap `name` through master `i`, retrying until it is acknowledged; returns
/// when the acknowledged attempt was started.
pub fn create_until_acknowledged(
    masters: &Masters,
    i: usize,
    name: &str,
    within: Duration,
) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let started = Instant::now();
        let out = masters.kubectl(i, &["create", "configmap", name, "--from-literal=k=v"]);
        if out.status.success() {
            return started;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("AlreadyExists") || err.contains("already exists") {
            // An earlier attempt that got no answer went through.
            return started;
        }
        assert!(
            Instant::now() < deadline,
            "creating {name} through {}: {err}",
            masters.masters[i].name
        );
    }
}

impl Masters {
    /// The controller manager's lease as (holder identity, term), read through master `i`.
    pub fn controller_manager_lease(&self, i: usize) -> Option<(String, u64)> {
        let out = self.kubectl(
            i,
            &[
                "get",
                "lease",
                "-n",
                "kube-system",
                "kube-controller-manager",
                "-o",
                "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (holder, term) = text.split_once(' ')?;
        Some((holder.to_owned(), term.trim().parse().ok()?))
    }

    /// The index of the master whose identity `holder` is (`<name>_<random>`).
    pub fn index_of(&self, holder: &str) -> Option<usize> {
        let name = holder.split_once('_')?.0;
        self.masters.iter().position(|m| m.name == name)
    }

    pub fn leader_terms_logged(&self, i: usize) -> usize {
        fs::read_to_string(&self.masters[i].proc.log)
            .unwrap_or_default()
            .matches("became the leader")
            .count()
    }
}

impl Masters {
    /// The names of each group's voters, as master `i` sees them.
    pub fn voters(&self, i: usize) -> Option<Vec<Vec<String>>> {
        let out = self.kubectl(i, &["get", "--raw", "/debug/control-plane"]);
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        view["groups"]
            .as_array()?
            .iter()
            .map(|g| {
                g["members"].as_array().map(|ms| {
                    ms.iter()
                        .filter(|m| m["voter"] == true)
                        .filter_map(|m| m["name"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .collect()
    }
}
