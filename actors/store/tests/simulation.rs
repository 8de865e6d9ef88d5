//! Deterministic simulation of replicated shard groups: three masters, two groups, an
//! in-memory wire with seeded delays, drops, partitions, crashes and restarts, several
//! clients, and watchers on every replica. Checks that the recorded history is linearizable,
//! that every replica's watch stream is the same gap-free sequence, and that a seed replays
//! exactly.
//!
//! `SHOAL_SIM_SEED=<n>` replays one seed; `SHOAL_SIM_SEEDS=<k>` explores k random seeds.

#[path = "simulation/harness.rs"]
mod harness;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_core::shard_for;
use shoal_store::history::{self, Call, Outcome, Record};
use shoal_store::raft::{
    ClientOp, ClientReply, Forward, Member, MemberChange, RaftRequest, RaftResponse, Router,
};
use shoal_store::{EventKind, Fence, Proposal, StoreError, WriteOp};

use harness::{
    GROUPS, MASTERS, Sim, SimWire, boot, leader_of, leader_revision, link, name, runtime,
};

const KEYS: usize = 6;
const CLIENTS: usize = 4;
const OPS_PER_CLIENT: usize = 60;

fn keys() -> Vec<String> {
    (0..KEYS).map(|k| format!("/sim/key-{k}")).collect()
}

fn outcome_of(call: &Call, reply: ClientReply) -> Outcome {
    let err = |e: StoreError| match e {
        StoreError::AlreadyExists(_) => Outcome::AlreadyExists,
        StoreError::NotFound(_) => Outcome::NotFound,
        StoreError::Conflict { .. } => Outcome::Conflict,
        _ => Outcome::Unknown,
    };
    match reply {
        ClientReply::Write(Ok(outcome)) => match call {
            Call::Delete { .. } => Outcome::Deleted,
            _ => Outcome::Written { rev: outcome.rev },
        },
        ClientReply::Write(Err(e)) | ClientReply::Get(Err(e)) | ClientReply::List(Err(e)) => err(e),
        ClientReply::Get(Ok(found)) => {
            Outcome::Read(found.map(|s| (s.rev, String::from_utf8_lossy(&s.value).into_owned())))
        }
        ClientReply::List(Ok(_)) => Outcome::Unknown,
    }
}

async fn client(sim: Arc<Sim>, n: usize, history: Arc<Mutex<Vec<Record>>>) {
    let mut rng = StdRng::seed_from_u64(sim.seed.wrapping_add(1000 + n as u64));
    let keys = keys();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for i in 0..OPS_PER_CLIENT {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
        let key = keys[rng.random_range(0..keys.len())].clone();
        let value = format!("c{n}-{i}");
        let expected = if rng.random_bool(0.7) {
            seen.get(&key).copied()
        } else {
            None
        };
        let roll = rng.random_range(0..100);
        let (call, op) = match roll {
            0..25 => (
                Call::Create {
                    value: value.clone(),
                },
                ClientOp::Write(Proposal::write(WriteOp::Create {
                    key: key.clone(),
                    value: value.into_bytes(),
                })),
            ),
            25..60 => (
                Call::Update {
                    value: value.clone(),
                    expected,
                },
                ClientOp::Write(Proposal::write(WriteOp::Update {
                    key: key.clone(),
                    value: value.into_bytes(),
                    expected,
                })),
            ),
            60..70 => (
                Call::Delete { expected },
                ClientOp::Write(Proposal::write(WriteOp::Delete {
                    key: key.clone(),
                    expected,
                })),
            ),
            _ => (Call::Get, ClientOp::Get(key.clone())),
        };
        let up = sim.up();
        if up.is_empty() {
            continue;
        }
        let via = up[rng.random_range(0..up.len())];
        let Some(replica) = sim.replica(via, shard_for(&key, GROUPS)) else {
            continue;
        };
        let began = sim.tick();
        let reply = tokio::time::timeout(Duration::from_secs(10), replica.execute(op, 2)).await;
        let outcome = match reply {
            Ok(reply) => outcome_of(&call, reply),
            Err(_) => Outcome::Unknown,
        };
        let ended = (outcome != Outcome::Unknown).then(|| sim.tick());
        match &outcome {
            Outcome::Written { rev } => {
                seen.insert(key.clone(), *rev);
            }
            Outcome::Read(Some((rev, _))) => {
                seen.insert(key.clone(), *rev);
            }
            _ => {}
        }
        history.lock().expect("history").push(Record {
            key,
            call,
            outcome,
            began,
            ended,
        });
        if std::env::var_os("SHOAL_SIM_TRACE").is_some() {
            eprintln!("client {n} op {i} at {:?}", tokio::time::Instant::now());
        }
    }
}

/// Faults, one at a time so a majority stays: crash and restart a master, or cut one off
/// and heal it.
async fn nemesis(sim: Arc<Sim>, rounds: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(sim.seed.wrapping_add(7));
    let mut log = Vec::new();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let victim = rng.random_range(0..MASTERS as usize);
        if rng.random_bool(0.5) {
            log.push(format!("crash m{}", victim + 1));
            sim.crash(victim).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..2000))).await;
            log.push(format!("restart m{}", victim + 1));
            sim.start(victim).await;
        } else {
            log.push(format!("cut m{}", victim + 1));
            sim.net
                .cut
                .lock()
                .expect("cut")
                .insert(name(victim as u64 + 1));
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..2000))).await;
            log.push(format!("heal m{}", victim + 1));
            sim.net.cut.lock().expect("cut").clear();
        }
    }
    log
}

/// One replica's watch, resumed whenever its stream ends; returns the events it saw.
async fn watcher(
    sim: Arc<Sim>,
    id: u64,
    group: u32,
    stop: Arc<tokio::sync::Notify>,
) -> Result<Vec<(u64, String, EventKind, String)>, String> {
    let mut seen = Vec::new();
    let mut last = 0u64;
    loop {
        let replica = sim.replica(id, group);
        if let Some(replica) = replica {
            match replica.watch(String::new(), Some(last)).await {
                Ok((mut rx, _)) => loop {
                    tokio::select! {
                        biased;
                        _ = stop.notified() => return Ok(seen),
                        event = rx.recv() => match event {
                            Some(e) => {
                                if e.rev != last + 1 {
                                    return Err(format!("m{id} group {group}: event {} after {last}", e.rev));
                                }
                                last = e.rev;
                                seen.push((e.rev, e.key.clone(), e.kind, String::from_utf8_lossy(&e.value).into_owned()));
                            }
                            None => break,
                        },
                    }
                },
                Err(StoreError::TooLarge { .. }) => {}
                Err(e) => return Err(format!("m{id} group {group}: watch from {last}: {e}")),
            }
        }
        tokio::select! {
            biased;
            _ = stop.notified() => return Ok(seen),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Everything a run produced, for checking and for comparing two runs of one seed.
#[derive(Debug, PartialEq)]
struct Run {
    history: Vec<String>,
    faults: Vec<String>,
    streams: Vec<Vec<(u64, String, EventKind, String)>>,
}

async fn simulate(seed: u64) -> Result<Run, String> {
    let sim = boot(seed).await?;

    let stop = Arc::new(tokio::sync::Notify::new());
    let mut watchers = Vec::new();
    for id in 1..=MASTERS {
        for group in 0..GROUPS {
            watchers.push(tokio::spawn(watcher(sim.clone(), id, group, stop.clone())));
        }
    }
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(sim.clone(), n, history.clone())))
        .collect();
    let faults = nemesis(sim.clone(), 6).await;
    for c in clients {
        c.await.map_err(|e| e.to_string())?;
    }

    // Everything healed and up: every acknowledged write must be readable, and the replicas
    // must agree.
    sim.net.cut.lock().expect("cut").clear();
    for (i, id) in (1..=MASTERS).enumerate() {
        if sim.net.host(&name(id)).is_none() {
            sim.start(i).await;
        }
    }
    for key in keys() {
        let group = shard_for(&key, GROUPS);
        let replica = sim.replica(1, group).expect("replica");
        let began = sim.tick();
        let reply = replica.execute(ClientOp::Get(key.clone()), 2).await;
        let outcome = outcome_of(&Call::Get, reply);
        if outcome == Outcome::Unknown {
            return Err(format!("the final read of {key} got no answer"));
        }
        let ended = Some(sim.tick());
        history.lock().expect("history").push(Record {
            key,
            call: Call::Get,
            outcome,
            began,
            ended,
        });
    }
    // Let every replica apply everything, then stop the watchers.
    for group in 0..GROUPS {
        let leader_rev = leader_revision(&sim, group).await?;
        for id in 1..=MASTERS {
            let replica = sim.replica(id, group).expect("replica");
            if !replica
                .machine()
                .hub()
                .caught_up(leader_rev, Duration::from_secs(30))
                .await
            {
                return Err(format!(
                    "m{id} group {group} never reached revision {leader_rev}"
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.notify_waiters();
    let mut streams = Vec::new();
    for w in watchers {
        streams.push(w.await.map_err(|e| e.to_string())??);
    }
    let history = history.lock().expect("history").clone();
    history::check(&history).map_err(|v| {
        format!(
            "{v}; history: {:#?}",
            history
                .iter()
                .filter(|r| r.key == v.key)
                .collect::<Vec<_>>()
        )
    })?;
    for group in 0..GROUPS as usize {
        let reference = &streams[group];
        for id in 1..MASTERS as usize {
            let other = &streams[id * GROUPS as usize + group];
            if other != reference {
                return Err(format!(
                    "group {group}: m{} saw a different event sequence than m1",
                    id + 1
                ));
            }
        }
    }
    // The run was long enough to snapshot every group somewhere (and so to purge its log).
    for group in 0..GROUPS {
        let mut snapshotted = false;
        for id in 1..=MASTERS {
            let replica = sim.replica(id, group).expect("replica");
            let mut machine = replica.machine().clone();
            snapshotted |= machine
                .get_current_snapshot()
                .await
                .map_err(|e| e.to_string())?
                .is_some();
        }
        if !snapshotted {
            return Err(format!("group {group} was never snapshotted"));
        }
    }
    for i in 0..MASTERS as usize {
        sim.crash(i).await;
    }
    Ok(Run {
        history: history.iter().map(|r| format!("{r:?}")).collect(),
        faults,
        streams,
    })
}

async fn deposed_term_is_refused(seed: u64) -> Result<(), String> {
    let sim = boot(seed).await?;
    let fence = |token| Fence {
        name: "kube-system/kube-controller-manager".into(),
        token,
    };
    let put = |key: &str, token| Proposal::Write {
        op: WriteOp::Create {
            key: key.into(),
            value: b"v".to_vec(),
        },
        fence: Some(fence(token)),
    };
    let replica = |index: usize| sim.replica(index as u64 + 1, 0).ok_or("no replica");
    let old_leader = leader_of(&sim, 0).await?;
    let via = (old_leader + 1) % MASTERS as usize;
    replica(via)?
        .write(put("/sim/first", 1), 2)
        .await
        .map_err(|e| format!("term 1 before the raise: {e}"))?;
    replica(via)?
        .write(Proposal::RaiseFence(fence(2)), 2)
        .await
        .map_err(|e| format!("raising term 2: {e}"))?;
    // The leader that committed the raise dies; the term must hold under the next one.
    sim.crash(old_leader).await;
    let new_leader = leader_of(&sim, 0).await?;
    if new_leader == old_leader {
        return Err("the crashed master still leads".into());
    }
    match replica(via)?.write(put("/sim/late", 1), 2).await {
        Err(StoreError::Fenced {
            token: 1,
            current: 2,
            ..
        }) => {}
        other => return Err(format!("a term-1 write after the raise: {other:?}")),
    }
    replica(via)?
        .write(put("/sim/current", 2), 2)
        .await
        .map_err(|e| format!("term 2: {e}"))?;
    // The crashed master comes back and refuses the old term too, once it has caught up.
    sim.start(old_leader).await;
    for _ in 0..300 {
        let back = replica(old_leader)?;
        if back
            .machine()
            .db()
            .get("/sim/current")
            .ok()
            .flatten()
            .is_some()
        {
            if back
                .machine()
                .db()
                .get("/sim/late")
                .ok()
                .flatten()
                .is_some()
            {
                return Err("the fenced write was applied on the returning master".into());
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the returning master never caught up".into())
}

/// Runs `test` for `seed` on a simulation runtime, failing with its reason.
fn on_seed<F, Fut>(seed: u64, test: F)
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    runtime(seed)
        .and_then(|rt| rt.block_on(test(seed)))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
}

#[test]
fn a_deposed_term_is_refused_across_a_leader_change() {
    on_seed(7, deposed_term_is_refused);
}

/// A membership change that reaches a replica that does not lead, with no forwards left,
/// fails at once and names the leader, leaving the group as it was: its caller can still
/// forward or retry. (It used to wait out the change's minute for a leader it already knew,
/// holding every caller behind it, as a join during a leadership hand-over did.)
async fn exhausted_change_fails_at_once(seed: u64) -> Result<(), String> {
    let sim = boot(seed).await?;
    let leader = leader_of(&sim, 0).await? as u64 + 1;
    let follower = (1..=MASTERS)
        .find(|id| *id != leader)
        .ok_or("no follower")?;
    let replica = sim.replica(follower, 0).ok_or("the follower's replica")?;
    let newcomer = Member {
        name: "m9".into(),
        addr: "sim:9".into(),
        api: String::new(),
    };
    let started = tokio::time::Instant::now();
    let result = replica
        .change_members(
            MemberChange::Add {
                id: 9,
                member: newcomer,
            },
            0,
        )
        .await;
    let took = started.elapsed();
    let why = match result {
        Ok(()) => return Err("a follower accepted a change it cannot make".into()),
        Err(why) => why,
    };
    if took > Duration::from_secs(2) {
        return Err(format!("the change failed only after {took:?}: {why}"));
    }
    if !why.contains(&name(leader)) {
        return Err(format!(
            "the error does not name the leader {}: {why}",
            name(leader)
        ));
    }
    let leading = sim.replica(leader, 0).ok_or("the leader's replica")?;
    let members = leading.view().members;
    if members.iter().any(|m| m.member.name == "m9") {
        return Err(format!("the group changed: {members:?}"));
    }
    Ok(())
}

#[test]
fn a_change_with_no_forwards_left_fails_at_once_on_a_follower() {
    on_seed(11, exhausted_change_fails_at_once);
}

#[test]
fn a_change_sent_to_a_leader_that_vanished_goes_to_the_next_one() {
    on_seed(13, change_outlives_a_vanished_leader);
}

/// A change forwarded to a leader whose process is gone, its connection still open, waits
/// only until the group elects another leader, then goes there: it is not held for the
/// whole of its deadline by a call that will never be answered. Here the change removes the
/// vanished master itself, as an operator does when its machine is gone.
async fn change_outlives_a_vanished_leader(seed: u64) -> Result<(), String> {
    let sim = boot(seed).await?;
    let leader = leader_of(&sim, 0).await?;
    let gone = leader as u64 + 1;
    let follower = (1..=MASTERS).find(|id| *id != gone).ok_or("no follower")?;
    let replica = sim.replica(follower, 0).ok_or("the follower's replica")?;
    sim.vanish(leader).await;
    let started = tokio::time::Instant::now();
    replica
        .change_members(MemberChange::Remove { name: name(gone) }, 1)
        .await
        .map_err(|why| format!("the change failed after {:?}: {why}", started.elapsed()))?;
    let took = started.elapsed();
    // An election (at most two timeouts of at most 1 s here) and the change itself.
    if took > Duration::from_secs(5) {
        return Err(format!("the change took {took:?}"));
    }
    let members = replica.view().members;
    if members.iter().any(|m| m.member.name == name(gone)) {
        return Err(format!("{} is still a member: {members:?}", name(gone)));
    }
    Ok(())
}

#[test]
fn a_forwarded_request_ends_where_its_sender_stops_waiting() {
    on_seed(17, forwarded_request_ends_with_its_patience);
}

/// A request forwarded to a leader that can no longer reach its followers is given up there
/// when its sender stops waiting for it, not at the receiver's own, longer patience: a
/// write its sender has reported unavailable is not still being tried (and perhaps proposed
/// under a leader elected meanwhile) seconds later, and a read is not served to no one.
async fn forwarded_request_ends_with_its_patience(seed: u64) -> Result<(), String> {
    let sim = boot(seed).await?;
    let leader = leader_of(&sim, 0).await?;
    let id = leader as u64 + 1;
    for follower in (0..MASTERS as usize).filter(|i| *i != leader) {
        sim.vanish(follower).await;
    }
    // The leader's own wire reaches the leader: the request arrives as a forward does.
    let router = Router::new(Arc::new(SimWire {
        from: name(id),
        net: sim.net.clone(),
    }));
    let to = Sim::members()[&id].clone();
    let patience = Duration::from_millis(300);
    let write = ClientOp::Write(Proposal::write(WriteOp::Create {
        key: "/forwarded".into(),
        value: b"v".to_vec(),
    }));
    let request = RaftRequest::Clients(vec![
        Forward::new(0, write, 0, patience),
        Forward::new(0, ClientOp::Get("/forwarded".into()), 0, patience),
    ]);
    let started = tokio::time::Instant::now();
    // The wire would wait far longer than the request's patience.
    let response = router
        .send(&to, &request, Duration::from_secs(30))
        .await
        .map_err(|why| format!("no answer: {why}"))?;
    let took = started.elapsed();
    let RaftResponse::Clients(replies) = response else {
        return Err(format!("a reply of another kind: {response:?}"));
    };
    for reply in &replies {
        if !reply.is_unavailable() {
            return Err(format!("a leader without its followers answered {reply:?}"));
        }
    }
    // The patience, and the wire's delays both ways (at most 8 ms each here).
    if took > patience + Duration::from_millis(100) {
        return Err(format!("the requests were given up only after {took:?}"));
    }
    Ok(())
}

#[test]
fn a_restarted_master_does_not_depose_a_live_leader() {
    on_seed(19, restart_keeps_the_leaders);
}

/// A group's (term, leader), as replica `id` of it sees them.
fn term_and_leader(sim: &Sim, id: u64, group: u32) -> Option<(u64, Option<u64>)> {
    let replica = sim.replica(id, group)?;
    let metrics = replica.raft().metrics().borrow_watched().clone();
    Some((metrics.current_term, metrics.current_leader))
}

/// A master that comes back after some seconds away can reach its peers before every
/// leader reaches it (a leader's replication to it backed off while it was gone, its
/// connection being made again; a restart that spent its election timeout reading its log),
/// and its election timeout runs out. It must not then depose the leaders the rest of each
/// group still follows: every restart would cost the groups a leader change, and the writes
/// and lease renewals waiting on it (a controller manager's lease could lapse). Here the
/// link between the returning master and the leader of group 0 stays down for its first two
/// seconds back.
async fn restart_keeps_the_leaders(seed: u64) -> Result<(), String> {
    let sim = boot(seed).await?;
    let mut leaders = Vec::new();
    for group in 0..GROUPS {
        let leader = leader_of(&sim, group).await? as u64 + 1;
        let seen = term_and_leader(&sim, leader, group).ok_or("the leader's replica")?;
        leaders.push(seen);
    }
    // A master that leads no group if there is one, else a follower of group 0.
    let away = (1..=MASTERS)
        .find(|id| leaders.iter().all(|(_, l)| *l != Some(*id)))
        .or_else(|| (1..=MASTERS).find(|id| leaders[0].1 != Some(*id)))
        .ok_or("no follower")?;
    let index = (away - 1) as usize;
    sim.crash(index).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leader = leaders[0].1.ok_or("group 0 has no leader")?;
    let slow = link(&name(away), &name(leader));
    sim.net.links.lock().expect("links").insert(slow.clone());
    sim.start(index).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.net.links.lock().expect("links").remove(&slow);
    // Until it follows a leader in every group, and has applied what that leader had.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let caught_up = (0..GROUPS).all(|group| {
            let Some((_, Some(leader))) = term_and_leader(&sim, away, group) else {
                return false;
            };
            let applied = |id| {
                sim.replica(id, group)
                    .and_then(|r| r.raft().metrics().borrow_watched().last_applied)
            };
            applied(leader).is_some() && applied(away) >= applied(leader)
        });
        if caught_up {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{} never caught up", name(away)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for group in 0..GROUPS {
        let now = term_and_leader(&sim, away, group).ok_or("the replica")?;
        if now != leaders[group as usize] {
            return Err(format!(
                "group {group}: (term, leader) went from {:?} to {now:?} when {} came back",
                leaders[group as usize],
                name(away)
            ));
        }
    }
    Ok(())
}

/// Whether `id`'s replica of `group` sees a joint membership.
fn joint_on(sim: &Sim, id: u64, group: u32) -> bool {
    sim.replica(id, group).is_some_and(|r| r.joint())
}

/// A change cut short between its two steps leaves the group joint; the next change through
/// its new leader finishes it first. The leader removes itself, and is cut off as soon as the
/// joint configuration commits, before the uniform one can: the other two elect a leader of
/// the joint group, and a change sent there (one that changes nothing by itself) leaves the
/// group uniform, without the removed master.
async fn joint_left_behind_is_finished(seed: u64) -> Result<(), String> {
    let sim = boot(seed).await?;
    let old = leader_of(&sim, 0).await? as u64 + 1;
    let replica = sim.replica(old, 0).ok_or("the leader's replica")?;
    let change = tokio::spawn(async move {
        replica
            .change_members(MemberChange::Remove { name: name(old) }, 0)
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The joint entry, once the leader has it; then its commit (the leader applies it), when
    // the uniform entry is at most on its way to the others.
    let mut joint_at = None;
    loop {
        let m = sim
            .replica(old, 0)
            .ok_or("the leader's replica")?
            .raft()
            .metrics()
            .borrow_watched()
            .clone();
        if joint_at.is_none() && joint_on(&sim, old, 0) {
            joint_at = *m.membership_config.log_id();
        }
        if joint_at.is_some() && m.last_applied >= joint_at {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the leader never committed a joint configuration".into());
        }
        tokio::time::sleep(Duration::from_micros(50)).await;
    }
    sim.net.cut.lock().expect("cut").insert(name(old));
    let others: Vec<u64> = (1..=MASTERS).filter(|id| *id != old).collect();
    let new = loop {
        let led = others.iter().copied().find(|id| {
            sim.replica(*id, 0).is_some_and(|r| {
                let m = r.raft().metrics().borrow_watched().clone();
                m.current_leader == Some(*id) && m.state.is_leader()
            })
        });
        if let Some(id) = led {
            break id;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no new leader among the others".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if !joint_on(&sim, new, 0) {
        return Err(format!(
            "{} leads a uniform group already: the change was not cut short",
            name(new)
        ));
    }
    change.abort();
    let leader = sim.replica(new, 0).ok_or("the new leader's replica")?;
    leader
        .change_members(
            MemberChange::Remove {
                name: "nobody".into(),
            },
            0,
        )
        .await?;
    let membership = leader
        .raft()
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .clone();
    let configs = membership.get_joint_config().clone();
    let expected: std::collections::BTreeSet<u64> = others.iter().copied().collect();
    if configs != vec![expected.clone()] {
        return Err(format!(
            "the group is {configs:?}, not uniform {expected:?}"
        ));
    }
    Ok(())
}

#[test]
fn a_change_cut_short_between_its_steps_is_finished_by_the_next() {
    on_seed(5, joint_left_behind_is_finished);
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SHOAL_SIM_SEED") {
        return vec![seed.parse().expect("SHOAL_SIM_SEED is a number")];
    }
    if let Ok(k) = std::env::var("SHOAL_SIM_SEEDS") {
        let k: usize = k.parse().expect("SHOAL_SIM_SEEDS is a number");
        return (0..k).map(|_| rand::random::<u64>() >> 1).collect();
    }
    vec![1, 2, 3, 4]
}

#[test]
fn replicated_shards_stay_linearizable_under_seeded_faults() {
    for seed in seeds() {
        eprintln!("simulation seed {seed} (replay with SHOAL_SIM_SEED={seed})");
        let first = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let writes = first.streams.iter().map(Vec::len).max().unwrap_or(0);
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for r in &first.history {
            let kind = r
                .split("outcome: ")
                .nth(1)
                .and_then(|o| o.split([' ', ',', '(']).next())
                .unwrap_or("?");
            *kinds.entry(kind.to_owned()).or_default() += 1;
        }
        eprintln!("seed {seed}: outcomes {kinds:?}");
        eprintln!(
            "seed {seed}: {} operations, {writes} events per replica stream, faults {:?}",
            first.history.len(),
            first.faults
        );
        assert!(writes > 0, "seed {seed}: no write committed");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let seed = seeds()[0];
    let a = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let b = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert!(a == b, "seed {seed} produced two different runs");
}

fn run(seed: u64) -> Result<Run, String> {
    runtime(seed)?.block_on(simulate(seed))
}
