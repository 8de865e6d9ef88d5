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
    fn start_node(&self) -> (Proc, PathBuf) {
        let local = format!("127.0.0.1:{}", free_port());
        let token = self.join[3].clone();
        let hash = self.join[5].clone();
        let mut cmd = Command::new(binary("shoal-node"));
        for m in &self.masters {
            cmd.args(["--join", &format!("{}:{}", m.address, m.quic_port)]);
        }
        cmd.args(["--token", &token, "--ca-cert-hash", &hash])
            .args(["--name", "worker", "--address", "127.0.0.24"])
            .args(["--data-dir", &self.dir.join("worker").display().to_string()])
            .args([
                "--admin-port",
                &free_port().to_string(),
                "--local-api",
                &local,
            ]);
        let proc = Proc::start("worker", cmd, &self.dir);
        let admin = fs::read_to_string(self.kubeconfig(0)).expect("kubeconfig");
        let server = format!(
            "https://{}:{}",
            self.masters[0].address, self.masters[0].api_port
        );
        let kubeconfig = self.dir.join("worker.kubeconfig");
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
    let (mut worker, local) = masters.start_node();
    let mut expected = vec![];
    create_until_acknowledged(&masters, 0, "before", Duration::from_secs(10));
    expected.push("configmap/before".to_owned());
    wait_for(
        "the node's local API endpoint",
        Duration::from_secs(20),
        || {
            assert!(
                worker.exited().is_none(),
                "the node exited:\n{}",
                worker.log_tail()
            );
            (masters.configmaps_via(&local, 9).as_ref() == Some(&expected)).then_some(())
        },
    );
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
