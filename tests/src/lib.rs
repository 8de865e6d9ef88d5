//! The end-to-end harness: starts real `shoal-master` and `shoal-node` processes on loopback
//! addresses, drives them with the real kubectl (1.32 and 1.20) and curl, and stops what it
//! started by PID. Waits are conditions with deadlines.

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The kubectl versions every scenario runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kubectl {
    V132,
    V120,
}

impl Kubectl {
    pub const ALL: [Kubectl; 2] = [Kubectl::V132, Kubectl::V120];

    /// The binary: `SHOAL_KUBECTL_132` / `SHOAL_KUBECTL_120`, else where the set-up script puts it.
    pub fn path(self) -> PathBuf {
        let (var, default) = match self {
            Kubectl::V132 => ("SHOAL_KUBECTL_132", "/usr/bin/kubectl"),
            Kubectl::V120 => (
                "SHOAL_KUBECTL_120",
                "/var/cache/shoal/kubectl-1.20/usr/bin/kubectl",
            ),
        };
        let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()));
        assert!(
            path.exists(),
            "{} not found at {}: run scripts/test-deps.sh",
            var,
            path.display()
        );
        path
    }
}

/// The Python with the official Kubernetes client: `SHOAL_PYTHON`, else where the set-up
/// script puts it.
pub fn python() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("SHOAL_PYTHON")
            .unwrap_or_else(|_| "/var/cache/shoal/python/bin/python".to_owned()),
    );
    assert!(
        path.exists(),
        "SHOAL_PYTHON not found at {}: run scripts/test-deps.sh",
        path.display()
    );
    path
}

/// Where the workspace's binaries are: next to the directory holding this test binary.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A free TCP port on loopback (and the same number free for UDP, checked).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("shoal-e2e-{}-{name}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The events of a finished watch's body, one JSON object per line.
pub fn watch_events(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a watch event ({e}): {l}")))
        .collect()
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process this test started; killed (by PID) when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd`, its output going to `<dir>/<name>.out` and `.log`.
    pub fn start(name: &str, cmd: Command, dir: &Path) -> Proc {
        Proc::spawn(name, cmd, dir)
    }

    fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let log = dir.join(format!("{name}.log"));
        cmd.stdout(fs::File::create(&out).expect("stdout file"));
        cmd.stderr(fs::File::create(&log).expect("log file"));
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// `kill -9`, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The store shards of a test cluster's master.
pub const SHARDS: &str = "3";

/// Settings that make failures show quickly.
pub const LEASE_SECONDS: &str = "2";
pub const RENEW_MS: &str = "300";
pub const GRACE_MS: &str = "2000";

/// One cluster: a master (also a node) and any number of nodes.
pub struct Cluster {
    pub dir: PathBuf,
    pub api_port: u16,
    pub quic_port: u16,
    pub master: Proc,
    pub nodes: Vec<(String, Proc)>,
    pub join_args: Vec<String>,
    master_extra: Vec<String>,
}

impl Drop for Cluster {
    /// Stops the processes, then removes the cluster's directory (each journal segment is
    /// written out to 64 MiB), unless the test failed: then it stays, with the logs, to be
    /// read.
    fn drop(&mut self) {
        for (_, node) in &mut self.nodes {
            node.kill();
        }
        self.master.kill();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    /// Starts a master (`--with-node`, named `master-1`) and waits for its API.
    pub fn start(name: &str, master_extra: &[&str]) -> Cluster {
        let dir = temp_dir(name);
        let api_port = free_port();
        let quic_port = free_port();
        let master_extra: Vec<String> = master_extra.iter().map(|s| (*s).to_owned()).collect();
        let master = Self::spawn_master(&dir, api_port, quic_port, &master_extra);
        let mut cluster = Cluster {
            dir,
            api_port,
            quic_port,
            master,
            nodes: Vec::new(),
            join_args: Vec::new(),
            master_extra,
        };
        let out = cluster.dir.join("master.out");
        let master_proc = &mut cluster.master;
        let line = wait_for("the master's join command", Duration::from_secs(30), || {
            assert!(
                master_proc.exited().is_none(),
                "the master exited:\n{}",
                master_proc.log_tail()
            );
            fs::read_to_string(&out)
                .ok()?
                .lines()
                .find(|l| l.contains("shoal-node --join"))
                .map(str::to_owned)
        });
        let args: Vec<String> = line
            .split_whitespace()
            .skip_while(|w| *w != "--join")
            .map(str::to_owned)
            .collect();
        cluster.join_args = args;
        cluster.wait_api();
        cluster
    }

    /// Starts the master on the cluster's data and ports. Unless `extra` says otherwise, its
    /// store has [`SHARDS`] shards, so that lists, watches and versions span groups.
    fn spawn_master(dir: &Path, api_port: u16, quic_port: u16, extra: &[String]) -> Proc {
        let mut cmd = Command::new(binary("shoal-master"));
        if !extra.iter().any(|a| a.starts_with("--shards")) {
            cmd.args(["--shards", SHARDS]);
        }
        cmd.args([
            "--data-dir",
            &dir.join("master").display().to_string(),
            "--name",
            "master-1",
            "--with-node",
        ])
        .args([
            "--api-port",
            &api_port.to_string(),
            "--quic-port",
            &quic_port.to_string(),
        ])
        .args([
            "--node-monitor-grace-period-ms",
            GRACE_MS,
            "--lease-duration-seconds",
            LEASE_SECONDS,
            "--lease-renew-interval-ms",
            RENEW_MS,
        ])
        .args(extra);
        Proc::spawn("master", cmd, dir)
    }

    /// Kills the master and starts it on the same data and ports with `extra` in place of
    /// the flags it was started with, expecting it to refuse to start: returns its log once
    /// it has exited (a master still running after 30 s fails the test).
    pub fn master_refuses(&mut self, extra: &[&str]) -> String {
        self.master.kill();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut refused = Self::spawn_master(&self.dir, self.api_port, self.quic_port, &extra);
        let status = wait_for(
            "the master to refuse to start",
            Duration::from_secs(30),
            || refused.exited(),
        );
        assert!(!status.success(), "the master exited with {status}");
        fs::read_to_string(&refused.log).unwrap_or_default()
    }

    /// Kills the master with SIGKILL and starts it again on the same data and ports.
    pub fn restart_master(&mut self) {
        self.master.kill();
        self.master =
            Self::spawn_master(&self.dir, self.api_port, self.quic_port, &self.master_extra);
        self.wait_api();
    }

    fn wait_api(&mut self) {
        let master = &mut self.master;
        let kubeconfig = self.dir.join("master/admin.kubeconfig");
        let cache = self.dir.join("kube-cache-wait");
        wait_for("the API server", Duration::from_secs(30), || {
            assert!(
                master.exited().is_none(),
                "the master exited:\n{}",
                master.log_tail()
            );
            let ok = Command::new(Kubectl::V132.path())
                .env("KUBECONFIG", &kubeconfig)
                .args([
                    "--cache-dir",
                    &cache.display().to_string(),
                    "get",
                    "--raw",
                    "/readyz",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then_some(())
        });
    }

    /// Starts a node named `name` on `address` (a 127.0.0.x address).
    pub fn start_node(&mut self, name: &str, address: &str) -> &mut Proc {
        let proc = self.spawn_node(name, address, true);
        self.nodes.push((name.to_owned(), proc));
        &mut self.nodes.last_mut().expect("just pushed").1
    }

    /// Spawns a node process (with or without the join flags) without recording it.
    pub fn spawn_node(&self, name: &str, address: &str, with_join: bool) -> Proc {
        let mut cmd = Command::new(binary("shoal-node"));
        if with_join {
            cmd.args(&self.join_args);
        } else {
            cmd.args(["--join", &format!("127.0.0.1:{}", self.quic_port)]);
        }
        cmd.args([
            "--name",
            name,
            "--address",
            address,
            "--data-dir",
            &self.dir.join(name).display().to_string(),
        ])
        .args(["--admin-port", &free_port().to_string()])
        .args([
            "--lease-duration-seconds",
            LEASE_SECONDS,
            "--lease-renew-interval-ms",
            RENEW_MS,
        ]);
        Proc::spawn(name, cmd, &self.dir)
    }

    /// Restarts a recorded node after a kill, without the join flags (it keeps its certificate).
    pub fn restart_node(&mut self, name: &str, address: &str) {
        let proc = self.spawn_node(name, address, false);
        let slot = self
            .nodes
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("a known node");
        slot.1 = proc;
    }

    /// The node process called `name`.
    pub fn node(&mut self, name: &str) -> &mut Proc {
        &mut self
            .nodes
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("a known node")
            .1
    }

    /// The `https://address:port` of a node's admin endpoint, as the node printed it.
    pub fn node_admin(&self, name: &str) -> String {
        let out = self.dir.join(format!("{name}.out"));
        wait_for(
            &format!("{name}'s admin endpoint"),
            Duration::from_secs(10),
            || {
                fs::read_to_string(&out)
                    .ok()?
                    .lines()
                    .find_map(|l| l.split("admin endpoint ").nth(1).map(str::to_owned))
            },
        )
    }

    /// kubectl against the master (`None`) or a node's admin endpoint (`Some(name)`), with the
    /// admin credentials.
    pub fn kubectl_admin(&self, node: Option<&str>, args: &[&str]) -> Output {
        match node {
            None => self.kubectl(Kubectl::V132, args),
            Some(name) => {
                let server = self.node_admin(name);
                let mut full = vec!["--server", &server, "--tls-server-name", name];
                full.extend_from_slice(args);
                self.kubectl(Kubectl::V132, &full)
            }
        }
    }

    /// POSTs `body` to an admin path of the master or a node.
    pub fn post_admin(&self, node: Option<&str>, path: &str, body: &str) -> Output {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let file = self.dir.join(format!("admin-body-{n}.json"));
        fs::write(&file, body).expect("write the body");
        self.kubectl_admin(
            node,
            &["create", "--raw", path, "-f", &file.display().to_string()],
        )
    }

    /// Kills an actor by name through the master's (`None`) or a node's admin endpoint.
    pub fn kill_actor(&self, node: Option<&str>, actor: &str) -> Output {
        self.post_admin(node, &format!("/debug/actors/{actor}/kill"), "")
    }

    /// Creates a one-container pod in `default` with these labels, through the API.
    pub fn create_pod(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        });
        let (code, body) = self.curl(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            &pod.to_string(),
        );
        assert_eq!(code, 201, "creating pod {name}: {body}");
    }

    /// When the node's lease was last renewed, as stored.
    pub fn lease_renew_time(&self, node: &str) -> String {
        self.kubectl_ok(
            Kubectl::V132,
            &[
                "get",
                "lease",
                node,
                "-n",
                "kube-node-lease",
                "-o",
                "jsonpath={.spec.renewTime}",
            ],
        )
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("master/admin.kubeconfig")
    }

    /// Runs kubectl with the admin kubeconfig and a cache of its own per version.
    pub fn kubectl(&self, version: Kubectl, args: &[&str]) -> Output {
        self.kubectl_env(version, &[], args)
    }

    /// [`Self::kubectl`] with more environment variables (`EDITOR`, say).
    pub fn kubectl_env(&self, version: Kubectl, env: &[(&str, &str)], args: &[&str]) -> Output {
        let cache = self.dir.join(format!("kube-cache-{version:?}"));
        Command::new(version.path())
            .env("KUBECONFIG", self.kubeconfig())
            .envs(env.iter().copied())
            .args(["--cache-dir", &cache.display().to_string()])
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and returns its stdout, failing the test when it fails.
    pub fn kubectl_ok(&self, version: Kubectl, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert!(
            out.status.success(),
            "kubectl {version:?} {args:?} failed: {}\nmaster log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.master.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `name → STATUS` from `kubectl get nodes`.
    pub fn node_statuses(&self, version: Kubectl) -> Option<Vec<(String, String)>> {
        let out = self.kubectl(version, &["get", "nodes", "--no-headers"]);
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    Some((words.next()?.to_owned(), words.next()?.to_owned()))
                })
                .collect(),
        )
    }

    /// Waits until `kubectl get nodes` shows exactly `expected` (name, status) pairs.
    pub fn wait_nodes(&self, expected: &[(&str, &str)], timeout: Duration) {
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect();
        want.sort();
        let mut last = None;
        let ok = (|| {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Some(mut got) = self.node_statuses(Kubectl::V132) {
                    got.sort();
                    if got == want {
                        return true;
                    }
                    last = Some(got);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })();
        assert!(
            ok,
            "nodes never became {want:?}; last seen {last:?}\nmaster log:\n{}",
            self.master.log_tail()
        );
    }

    /// Writes the admin credentials out for curl: (ca, cert, key) paths.
    pub fn curl_credentials(&self) -> (PathBuf, PathBuf, PathBuf) {
        credentials(&self.kubeconfig(), &self.dir)
    }

    /// An HTTPS request with the admin certificate: (status code, body).
    pub fn curl(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        self.curl_headers(method, path, &[("Content-Type", content_type)], body)
    }

    /// [`Self::curl`] with the request headers given.
    pub fn curl_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let (ca, cert, key) = self.curl_credentials();
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                method,
                "--cacert",
                &ca.display().to_string(),
                "--cert",
                &cert.display().to_string(),
                "--key",
                &key.display().to_string(),
            ])
            .args(
                headers
                    .iter()
                    .flat_map(|(k, v)| ["-H".to_owned(), format!("{k}: {v}")]),
            )
            .args(["--data-binary", body, "-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:{}{path}", self.api_port))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

/// Writes the admin credentials of `kubeconfig` out for curl, into `dir`: (ca, cert, key).
pub fn credentials(kubeconfig: &Path, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let text = fs::read_to_string(kubeconfig).expect("kubeconfig");
    let config: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
    let decode = |v: &serde_json::Value| {
        STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("base64")
    };
    let ca = dir.join("ca.pem");
    let cert = dir.join("admin.pem");
    let key = dir.join("admin-key.pem");
    fs::write(
        &ca,
        decode(&config["clusters"][0]["cluster"]["certificate-authority-data"]),
    )
    .expect("write");
    fs::write(
        &cert,
        decode(&config["users"][0]["user"]["client-certificate-data"]),
    )
    .expect("write");
    fs::write(&key, decode(&config["users"][0]["user"]["client-key-data"])).expect("write");
    (ca, cert, key)
}
