//! Scenarios on one fixed seed each: a fault placed on purpose (a leader change under a
//! fenced writer, a change with no forwards left, a vanished leader, a cut link, a change
//! cut short) and what the groups must do about it.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use shoal_store::raft::{
    ClientOp, Forward, Member, MemberChange, RaftRequest, RaftResponse, Router,
};
use shoal_store::{Fence, Proposal, StoreError, WriteOp};

use super::harness::{GROUPS, MASTERS, Sim, SimWire, boot, leader_of, link, name, runtime};

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
