//! Three masters as processes on 127.0.0.x: the control plane keeps serving while any one of
//! them is killed or cut off, and a returning master catches up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_tests::{Kubectl, Proc, binary, free_port, temp_dir, wait_for};

struct Master {
    name: String,
    address: String,
    api_port: u16,
    quic_port: u16,
    proc: Proc,
}

struct Masters {
    dir: PathBuf,
    masters: Vec<Master>,
    join: Vec<String>,
}

fn spawn(dir: &Path, name: &str, address: &str, api: u16, quic: u16, join: &[String]) -> Proc {
    let mut cmd = Command::new(binary("shoal-master"));
    cmd.args(["--data-dir", &dir.join(name).display().to_string()])
        .args(["--name", name, "--address", address, "--shards", "4"])
        .args([
            "--api-port",
            &api.to_string(),
            "--quic-port",
            &quic.to_string(),
        ])
        .args(join);
    Proc::start(name, cmd, dir)
}

impl Masters {
    /// Starts m1, then m2 and m3 joining it, and waits until both are members of every group.
    fn start(test: &str) -> Masters {
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
        for i in 0..3 {
            masters.wait_api(i);
        }
        masters
    }

    fn add(&mut self, name: &str, address: &str) {
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

    fn restart(&mut self, i: usize) {
        let m = &mut self.masters[i];
        m.proc.kill();
        m.proc = spawn(&self.dir, &m.name, &m.address, m.api_port, m.quic_port, &[]);
        self.wait_api(i);
    }

    fn wait_api(&mut self, i: usize) {
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

    fn kubeconfig(&self, i: usize) -> PathBuf {
        self.dir
            .join(&self.masters[i].name)
            .join("admin.kubeconfig")
    }

    /// kubectl 1.20 (its generators send JSON) against master `i`, giving up after 3 s.
    fn kubectl(&self, i: usize, args: &[&str]) -> Output {
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
    fn start_node(&self, name: &str, address: &str) -> (Proc, PathBuf) {
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

    fn configmaps(&self, i: usize) -> Option<Vec<String>> {
        self.configmaps_via(&self.kubeconfig(i), i)
    }

    fn configmaps_via(&self, kubeconfig: &Path, cache: usize) -> Option<Vec<String>> {
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

    fn set_fault(&self, i: usize, peer: &str, partitioned: bool) {
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
fn create_until_acknowledged(masters: &Masters, i: usize, name: &str, within: Duration) -> Instant {
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

#[test]
fn kubectl_keeps_working_while_any_one_master_is_killed() {
    let mut masters = Masters::start("ha-kill");
    let mut workers = [
        masters.start_node("worker-a", "127.0.0.24"),
        masters.start_node("worker-b", "127.0.0.25"),
    ];
    let mut expected = vec![];
    create_until_acknowledged(&masters, 0, "before", Duration::from_secs(10));
    expected.push("configmap/before".to_owned());
    for (n, (worker, local)) in workers.iter_mut().enumerate() {
        wait_for(
            "the node's local API endpoint",
            Duration::from_secs(20),
            || {
                assert!(
                    worker.exited().is_none(),
                    "the node exited:\n{}",
                    worker.log_tail()
                );
                (masters.configmaps_via(local, 9 + n).as_ref() == Some(&expected)).then_some(())
            },
        );
    }
    for victim in 0..3 {
        let via = (victim + 1) % 3;
        masters.masters[victim].proc.kill();
        let killed = Instant::now();
        let name = format!("after-killing-{}", masters.masters[victim].name);
        let started = create_until_acknowledged(&masters, via, &name, Duration::from_secs(20));
        let resumed = started.saturating_duration_since(killed);
        eprintln!(
            "{}: the first acknowledged write started {resumed:?} after the kill",
            masters.masters[victim].name
        );
        assert!(
            resumed <= Duration::from_secs(2),
            "writes resumed {resumed:?} after killing {}",
            masters.masters[victim].name
        );
        expected.push(format!("configmap/{name}"));
        expected.sort();
        let other = (victim + 2) % 3;
        assert_eq!(
            masters.configmaps(other).as_ref(),
            Some(&expected),
            "read through {}",
            masters.masters[other].name
        );
        // A kubeconfig pointed at either node's local endpoint keeps working too.
        for (n, (_, local)) in workers.iter().enumerate() {
            wait_for(
                &format!(
                    "worker {n}'s local endpoint without {}",
                    masters.masters[victim].name
                ),
                Duration::from_secs(5),
                || (masters.configmaps_via(local, 9 + n).as_ref() == Some(&expected)).then_some(()),
            );
        }
        masters.restart(victim);
        // The returning master serves everything acknowledged while it was gone.
        wait_for(
            &format!("{} to catch up", masters.masters[victim].name),
            Duration::from_secs(20),
            || (masters.configmaps(victim).as_ref() == Some(&expected)).then_some(()),
        );
    }
}

#[test]
fn a_master_cut_off_from_the_others_accepts_no_write_and_serves_no_stale_read() {
    let masters = Masters::start("ha-partition");
    create_until_acknowledged(&masters, 0, "before", Duration::from_secs(10));
    // m3 loses both links (the fault seam on its side cuts both directions).
    masters.set_fault(2, "m1", true);
    masters.set_fault(2, "m2", true);
    // The majority carries on.
    create_until_acknowledged(&masters, 0, "during", Duration::from_secs(10));
    let expected = vec!["configmap/before".to_owned(), "configmap/during".to_owned()];
    assert_eq!(masters.configmaps(1).as_ref(), Some(&expected));
    // The cut-off master neither acknowledges a write nor answers a linearizable read with
    // what it had.
    let write = masters.kubectl(
        2,
        &["create", "configmap", "minority", "--from-literal=k=v"],
    );
    assert!(
        !write.status.success(),
        "a write through the cut-off master was acknowledged"
    );
    assert_eq!(
        masters.configmaps(2),
        None,
        "the cut-off master answered a read"
    );
    // Healed, all agree, and the refused write is nowhere.
    masters.set_fault(2, "m1", false);
    masters.set_fault(2, "m2", false);
    for i in 0..3 {
        wait_for(
            &format!("{} to agree", masters.masters[i].name),
            Duration::from_secs(20),
            || (masters.configmaps(i).as_ref() == Some(&expected)).then_some(()),
        );
    }
}

#[test]
fn a_control_plane_restarted_as_a_whole_keeps_everything_it_acknowledged() {
    let mut masters = Masters::start("ha-restart-all");
    let mut expected = Vec::new();
    for (i, name) in ["one", "two", "three", "four"].iter().enumerate() {
        create_until_acknowledged(&masters, i % 3, name, Duration::from_secs(10));
        expected.push(format!("configmap/{name}"));
    }
    expected.sort();
    for m in &mut masters.masters {
        m.proc.kill();
    }
    for i in 0..3 {
        let m = &mut masters.masters[i];
        m.proc = spawn(
            &masters.dir,
            &m.name,
            &m.address,
            m.api_port,
            m.quic_port,
            &[],
        );
    }
    for i in 0..3 {
        masters.wait_api(i);
        wait_for(
            &format!("{} to serve the state", masters.masters[i].name),
            Duration::from_secs(20),
            || (masters.configmaps(i).as_ref() == Some(&expected)).then_some(()),
        );
    }
    // And it takes writes again.
    create_until_acknowledged(&masters, 1, "after", Duration::from_secs(10));
}

impl Masters {
    /// The controller manager's lease as (holder identity, term), read through master `i`.
    fn controller_manager_lease(&self, i: usize) -> Option<(String, u64)> {
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
    fn index_of(&self, holder: &str) -> Option<usize> {
        let name = holder.split_once('_')?.0;
        self.masters.iter().position(|m| m.name == name)
    }

    fn leader_terms_logged(&self, i: usize) -> usize {
        fs::read_to_string(&self.masters[i].proc.log)
            .unwrap_or_default()
            .matches("became the leader")
            .count()
    }
}

#[test]
fn one_controller_manager_leads_and_a_standby_takes_over_within_two_seconds() {
    let mut masters = Masters::start("ha-leader");
    let (holder, term) = wait_for(
        "a controller manager leader",
        Duration::from_secs(20),
        || masters.controller_manager_lease(1),
    );
    let leader = masters
        .index_of(&holder)
        .expect("the holder is one of the masters");
    // Only the holder ever ran the controllers.
    for i in 0..3 {
        let terms = masters.leader_terms_logged(i);
        assert_eq!(
            terms,
            usize::from(i == leader),
            "{}: {terms} terms",
            masters.masters[i].name
        );
    }
    masters.masters[leader].proc.kill();
    let killed = Instant::now();
    let via = (leader + 1) % 3;
    let (next, next_term) = wait_for("a standby to take over", Duration::from_secs(10), || {
        masters
            .controller_manager_lease(via)
            .filter(|(h, _)| *h != holder)
    });
    let took = killed.elapsed();
    eprintln!(
        "{} took over {took:?} after {} was killed",
        next, masters.masters[leader].name
    );
    assert!(took <= Duration::from_secs(2), "took over after {took:?}");
    assert!(next_term > term, "the new term {next_term} follows {term}");
    let successor = masters.index_of(&next).expect("the successor is a master");
    assert_ne!(successor, leader);
    wait_for(
        "the successor to start its controllers",
        Duration::from_secs(5),
        || (masters.leader_terms_logged(successor) == 1).then_some(()),
    );
    // The killed master comes back as a standby: the lease stays where it is.
    masters.restart(leader);
    create_until_acknowledged(&masters, leader, "after-return", Duration::from_secs(10));
    assert_eq!(
        masters.controller_manager_lease(leader).map(|(h, _)| h),
        Some(next)
    );
    assert_eq!(masters.leader_terms_logged(leader), 0);
}

impl Masters {
    /// The names of each group's voters, as master `i` sees them.
    fn voters(&self, i: usize) -> Option<Vec<Vec<String>>> {
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

#[test]
fn a_master_is_removed_by_command_and_rejoins_with_fresh_data() {
    let mut masters = Masters::start("ha-remove");
    let all = vec!["m1".to_owned(), "m2".to_owned(), "m3".to_owned()];
    assert_eq!(masters.voters(0), Some(vec![all.clone(); 4]));
    // An unknown master is a 404, and nothing changes.
    let unknown = masters.kubectl(0, &["delete", "--raw", "/debug/control-plane/members/m9"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    // m3's machine is gone for good: remove it.
    masters.masters[2].proc.kill();
    let removed = masters.kubectl(0, &["delete", "--raw", "/debug/control-plane/members/m3"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let two = vec!["m1".to_owned(), "m2".to_owned()];
    wait_for("m3 to leave every group", Duration::from_secs(10), || {
        (masters.voters(1) == Some(vec![two.clone(); 4])).then_some(())
    });
    create_until_acknowledged(&masters, 1, "without-m3", Duration::from_secs(10));
    // A new machine takes its place: same name, empty data directory, one join command.
    fs::remove_dir_all(masters.dir.join("m3")).expect("wipe m3's data");
    let m = &masters.masters[2];
    let proc = spawn(
        &masters.dir,
        &m.name,
        &m.address,
        m.api_port,
        m.quic_port,
        &masters.join,
    );
    masters.masters[2].proc = proc;
    masters.wait_api(2);
    wait_for("m3 to be a voter again", Duration::from_secs(30), || {
        (masters.voters(0) == Some(vec![all.clone(); 4])).then_some(())
    });
    assert_eq!(
        masters.configmaps(2),
        Some(vec!["configmap/without-m3".to_owned()])
    );
}

/// Master `i`'s API, spoken to with curl and the admin certificate: one process per request,
/// so that a request cut short by a kill is simply a request without an answer.
#[derive(Clone)]
struct Api {
    base: String,
    creds: (PathBuf, PathBuf, PathBuf),
}

impl Api {
    fn of(masters: &Masters, i: usize) -> Api {
        let m = &masters.masters[i];
        let dir = masters.dir.join(format!("creds-{i}"));
        fs::create_dir_all(&dir).expect("creds dir");
        Api {
            base: format!("https://{}:{}", m.address, m.api_port),
            creds: shoal_tests::credentials(&masters.kubeconfig(i), &dir),
        }
    }

    fn curl(&self, max_time: &str) -> Command {
        let (ca, cert, key) = &self.creds;
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-N", "--max-time", max_time])
            .arg("--cacert")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
        cmd
    }

    /// One request: the status code and body, or `None` when no answer came.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Option<(u16, serde_json::Value)> {
        let mut cmd = self.curl("3");
        cmd.args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(body) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        let out = cmd.arg(format!("{}{path}", self.base)).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n')?;
        Some((
            code.trim().parse().ok()?,
            serde_json::from_str(body).unwrap_or_default(),
        ))
    }
}

const HISTORY_KEYS: usize = 3;
const HISTORY_SHARDS: u32 = 4;
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// A tiny deterministic generator, so a run's choices are reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn rev_of(object: &serde_json::Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

fn reason_of(status: &serde_json::Value) -> &str {
    status["reason"].as_str().unwrap_or_default()
}

/// One client's operations on the history's keys, recorded with a clock shared by all.
fn history_client(
    api: Vec<Api>,
    seed: u64,
    ops: usize,
    clock: Instant,
) -> Vec<shoal_store::history::Record> {
    use shoal_store::history::{Call, Outcome, Record};
    let now = || clock.elapsed().as_micros() as u64;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut records = Vec::new();
    for n in 0..ops {
        let key = format!("k{}", rng.below(HISTORY_KEYS as u64));
        let via = &api[rng.below(api.len() as u64) as usize];
        let value = format!("c{seed}-{n}");
        let object = |rv: Option<u64>| {
            let mut meta = serde_json::json!({"name": key});
            if let Some(rv) = rv {
                meta["resourceVersion"] = serde_json::json!(rv.to_string());
            }
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"v": value}})
        };
        let roll = rng.below(100);
        let began = now();
        let (call, reply) = match roll {
            0..25 => (
                Call::Create {
                    value: value.clone(),
                },
                via.call("POST", CONFIGMAPS, Some(&object(None))),
            ),
            25..70 => {
                // Compare-and-swap: read, then write at the version read.
                let read = via.call("GET", &format!("{CONFIGMAPS}/{key}"), None);
                let seen = match &read {
                    Some((200, obj)) => rev_of(obj),
                    _ => None,
                };
                let ended = now();
                if let Some((code @ (200 | 404), obj)) = &read {
                    let found = (*code == 200).then(|| {
                        (
                            rev_of(obj).unwrap_or(0),
                            obj["data"]["v"].as_str().unwrap_or_default().to_owned(),
                        )
                    });
                    records.push(Record {
                        key: key.clone(),
                        call: Call::Get,
                        outcome: Outcome::Read(found),
                        began,
                        ended: Some(ended),
                    });
                }
                let Some(rev) = seen else { continue };
                let began = now();
                let reply = if roll < 60 {
                    via.call(
                        "PUT",
                        &format!("{CONFIGMAPS}/{key}"),
                        Some(&object(Some(rev))),
                    )
                } else {
                    let options = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": rev.to_string()}});
                    via.call("DELETE", &format!("{CONFIGMAPS}/{key}"), Some(&options))
                };
                let call = if roll < 60 {
                    Call::Update {
                        value: value.clone(),
                        expected: Some(rev),
                    }
                } else {
                    Call::Delete {
                        expected: Some(rev),
                    }
                };
                let outcome = write_outcome(&call, reply.as_ref());
                records.push(record(key.clone(), call, outcome, began, now()));
                continue;
            }
            _ => (
                Call::Get,
                via.call("GET", &format!("{CONFIGMAPS}/{key}"), None),
            ),
        };
        let outcome = match (&call, reply.as_ref()) {
            (Call::Get, Some((200, obj))) => Outcome::Read(Some((
                rev_of(obj).unwrap_or(0),
                obj["data"]["v"].as_str().unwrap_or_default().to_owned(),
            ))),
            (Call::Get, Some((404, _))) => Outcome::Read(None),
            // A read without an answer says nothing.
            (Call::Get, _) => continue,
            _ => write_outcome(&call, reply.as_ref()),
        };
        records.push(record(key, call, outcome, began, now()));
    }
    records
}

/// A finished operation as the checker takes it: one without an answer never ended, since
/// it may take effect at any later point, or never.
fn record(
    key: String,
    call: shoal_store::history::Call,
    outcome: shoal_store::history::Outcome,
    began: u64,
    ended: u64,
) -> shoal_store::history::Record {
    let ended = (outcome != shoal_store::history::Outcome::Unknown).then_some(ended);
    shoal_store::history::Record {
        key,
        call,
        outcome,
        began,
        ended,
    }
}

fn write_outcome(
    call: &shoal_store::history::Call,
    reply: Option<&(u16, serde_json::Value)>,
) -> shoal_store::history::Outcome {
    use shoal_store::history::{Call, Outcome};
    match reply {
        Some((200 | 201, obj)) => match call {
            Call::Delete { .. } => Outcome::Deleted,
            _ => rev_of(obj).map_or(Outcome::Unknown, |rev| Outcome::Written { rev }),
        },
        Some((409, status)) if reason_of(status) == "AlreadyExists" => Outcome::AlreadyExists,
        Some((409, status)) if reason_of(status) == "Conflict" => Outcome::Conflict,
        Some((404, _)) => Outcome::NotFound,
        // 5xx, timeouts, a refused or cut connection: it may or may not have happened.
        _ => Outcome::Unknown,
    }
}

/// The store shard of configmap `name` in `default`.
fn shard_of(name: &str) -> usize {
    let key = shoal_core::ObjectKey {
        group: String::new(),
        resource: "configmaps".into(),
        namespace: Some("default".into()),
        name: name.to_owned(),
    }
    .encode();
    shoal_core::shard_for(&key, HISTORY_SHARDS) as usize
}

/// One watch event as a watcher saw it: (name, type, revision, value).
type Seen = (String, String, u64, String);

/// Watches the configmaps through one master from `position` (a composite version), in
/// short watches each resumed where the last ended, until it has seen every name in
/// `until` added (sentinels written last, one per shard) or `stop`; returns every event.
fn history_watcher(
    api: Api,
    mut position: Vec<u64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    until: std::sync::Arc<std::sync::Mutex<Option<Vec<String>>>>,
) -> Result<Vec<Seen>, String> {
    use std::io::BufRead;
    use std::sync::atomic::Ordering;
    let mut seen: Vec<Seen> = Vec::new();
    loop {
        let sentinels = until.lock().map(|t| t.clone()).unwrap_or_default();
        if let Some(names) = sentinels
            && names.iter().all(|n| {
                seen.iter()
                    .any(|(name, kind, _, _)| name == n && kind == "ADDED")
            })
        {
            return Ok(seen);
        }
        if stop.load(Ordering::SeqCst) {
            return Err(format!("{} never caught up: at {position:?}", api.base));
        }
        let version: Vec<String> = position.iter().map(u64::to_string).collect();
        let url = format!(
            "{}{CONFIGMAPS}?watch=1&timeoutSeconds=2&resourceVersion={}",
            api.base,
            version.join(".")
        );
        let mut child = api
            .curl("4")
            .arg(url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            if kind == "ERROR" {
                let _ = child.kill();
                return Err(format!("{}: watch error {event}", api.base));
            }
            let object = &event["object"];
            let name = object
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned();
            // A watch event's version is the stream's position after it (every shard's
            // revision); the object's own revision is its shard's part.
            let version: Vec<u64> = object
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .split('.')
                .map(|r| r.parse().unwrap_or(0))
                .collect();
            if version.len() != position.len() {
                let _ = child.kill();
                return Err(format!("an event without a stream position: {event}"));
            }
            if version.iter().zip(&position).any(|(v, p)| v < p) {
                let _ = child.kill();
                return Err(format!(
                    "{}: went back from {position:?}: {event}",
                    api.base
                ));
            }
            let rev = version[shard_of(&name)];
            position = version;
            let value = object["data"]["v"].as_str().unwrap_or_default().to_owned();
            seen.push((name, kind, rev, value));
        }
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_history_recorded_through_kills_and_partitions_is_linearizable_and_watches_see_all_of_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut masters = Masters::start("ha-history");
    let api: Vec<Api> = (0..3).map(|i| Api::of(&masters, i)).collect();
    let list = wait_for("a list of configmaps", Duration::from_secs(10), || {
        api[0]
            .call("GET", CONFIGMAPS, None)
            .filter(|(code, _)| *code == 200)
    });
    let start: Vec<u64> = list.1["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list version")
        .split('.')
        .map(|r| r.parse().expect("a revision"))
        .collect();
    assert_eq!(start.len(), HISTORY_SHARDS as usize);
    let stop = Arc::new(AtomicBool::new(false));
    let until = Arc::new(Mutex::new(None));
    let watchers: Vec<_> = api
        .iter()
        .map(|a| {
            let (a, p, s, u) = (a.clone(), start.clone(), stop.clone(), until.clone());
            std::thread::spawn(move || history_watcher(a, p, s, u))
        })
        .collect();
    let clock = Instant::now();
    let clients: Vec<_> = (1..=4u64)
        .map(|seed| {
            let api = api.clone();
            std::thread::spawn(move || history_client(api, seed, 45, clock))
        })
        .collect();
    // Faults while the clients run: a master killed and restarted, another cut off and healed.
    std::thread::sleep(Duration::from_millis(800));
    masters.masters[1].proc.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let m = &masters.masters[1];
    masters.masters[1].proc = spawn(
        &masters.dir,
        &m.name,
        &m.address,
        m.api_port,
        m.quic_port,
        &[],
    );
    masters.wait_api(1);
    masters.set_fault(2, "m1", true);
    masters.set_fault(2, "m2", true);
    std::thread::sleep(Duration::from_millis(1500));
    masters.set_fault(2, "m1", false);
    masters.set_fault(2, "m2", false);
    let mut history: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client"))
        .collect();
    // After healing, one more read of every key through every master: every acknowledged
    // write must be there, and the checker holds these reads to the same order.
    for k in 0..HISTORY_KEYS {
        for a in &api {
            let key = format!("k{k}");
            let began = clock.elapsed().as_micros() as u64;
            let (code, obj) = wait_for("a final read", Duration::from_secs(15), || {
                a.call("GET", &format!("{CONFIGMAPS}/{key}"), None)
                    .filter(|(code, _)| matches!(code, 200 | 404))
            });
            let found = (code == 200).then(|| {
                (
                    rev_of(&obj).unwrap_or(0),
                    obj["data"]["v"].as_str().unwrap_or_default().to_owned(),
                )
            });
            history.push(shoal_store::history::Record {
                key,
                call: shoal_store::history::Call::Get,
                outcome: shoal_store::history::Outcome::Read(found),
                began,
                ended: Some(clock.elapsed().as_micros() as u64),
            });
        }
    }
    let acknowledged = history
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                shoal_store::history::Outcome::Written { .. }
                    | shoal_store::history::Outcome::Deleted
            )
        })
        .count();
    let unknown = history
        .iter()
        .filter(|r| r.outcome == shoal_store::history::Outcome::Unknown)
        .count();
    eprintln!(
        "{} operations, {acknowledged} acknowledged writes, {unknown} without an answer",
        history.len()
    );
    assert!(
        acknowledged >= 20,
        "too few writes got through: {acknowledged}"
    );
    if let Err(violation) = shoal_store::history::check(&history) {
        let mut ops: Vec<_> = history.iter().filter(|r| r.key == violation.key).collect();
        ops.sort_by_key(|r| r.began);
        panic!("{violation}:\n{ops:#?}");
    }

    // Every watcher, resumed again and again across the kill and the partition, saw each
    // key's changes in order, once each, and all of them.
    // A sentinel per shard, written last: a watcher that has seen them has seen everything
    // before them in their shards.
    let mut sentinels: Vec<String> = Vec::new();
    for shard in 0..HISTORY_SHARDS {
        let name = (0..)
            .map(|n| format!("end-{n}"))
            .find(|name| shard_of(name) == shard as usize)
            .unwrap_or_default();
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": "end"}});
        wait_for("a sentinel", Duration::from_secs(10), || {
            api[0]
                .call("POST", CONFIGMAPS, Some(&body))
                .filter(|(code, _)| *code == 201)
        });
        sentinels.push(name);
    }
    let end = wait_for("the final list", Duration::from_secs(10), || {
        api[0]
            .call("GET", CONFIGMAPS, None)
            .filter(|(code, _)| *code == 200)
    })
    .1;
    *until.lock().expect("until") = Some(sentinels);
    let give_up = std::thread::spawn({
        let stop = stop.clone();
        move || {
            std::thread::sleep(Duration::from_secs(20));
            stop.store(true, Ordering::SeqCst);
        }
    });
    let streams: Vec<Vec<Seen>> = watchers
        .into_iter()
        .map(|w| {
            w.join()
                .expect("a watcher")
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    drop(give_up);
    let written: Vec<(String, u64)> = history
        .iter()
        .filter_map(|r| match r.outcome {
            shoal_store::history::Outcome::Written { rev } => Some((r.key.clone(), rev)),
            _ => None,
        })
        .collect();
    let final_state: std::collections::BTreeMap<String, String> = end["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some((
                o.pointer("/metadata/name")?.as_str()?.to_owned(),
                o["data"]["v"].as_str()?.to_owned(),
            ))
        })
        .collect();
    for (i, stream) in streams.iter().enumerate() {
        let mut last: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        let mut state: std::collections::BTreeMap<String, String> =
            std::collections::BTreeMap::new();
        for (name, kind, rev, value) in stream {
            if let Some(prev) = last.insert(name, *rev) {
                assert!(
                    *rev > prev,
                    "watcher {i}: {name} went from {prev} to {rev}: {stream:?}"
                );
            }
            match kind.as_str() {
                "ADDED" => assert!(
                    state.insert(name.clone(), value.clone()).is_none(),
                    "watcher {i}: {name} added twice at {rev}"
                ),
                "MODIFIED" => assert!(
                    state.insert(name.clone(), value.clone()).is_some(),
                    "watcher {i}: {name} modified while absent at {rev}"
                ),
                "DELETED" => assert!(
                    state.remove(name).is_some(),
                    "watcher {i}: {name} deleted while absent at {rev}"
                ),
                other => panic!("watcher {i}: an event of type {other}"),
            }
        }
        for (key, rev) in &written {
            assert!(
                stream.iter().any(|(n, _, r, _)| n == key && r == rev),
                "watcher {i} missed {key} at {rev}"
            );
        }
        assert_eq!(
            state, final_state,
            "watcher {i}'s replay differs from the final list"
        );
        // Shards interleave in any order; each key's own sequence is the same everywhere.
        let per_key = |stream: &[Seen]| {
            let mut keys: std::collections::BTreeMap<String, Vec<Seen>> = Default::default();
            for seen in stream {
                keys.entry(seen.0.clone()).or_default().push(seen.clone());
            }
            keys
        };
        assert_eq!(
            per_key(stream),
            per_key(&streams[0]),
            "watchers 0 and {i} saw different changes"
        );
    }
}
