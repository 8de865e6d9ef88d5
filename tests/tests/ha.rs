//! Three masters as processes on 127.0.0.x: the control plane keeps serving while any one of
//! them is killed or cut off, and a returning master catches up.

#[path = "ha/history.rs"]
mod history;
#[path = "ha/masters.rs"]
mod masters;

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_store::history::{Outcome, Record};
use shoal_tests::wait_for;

use history::{
    Api, HISTORY_SHARDS, Seen, Until, check_streams, final_reads, history_client, history_watcher,
    list_version, write_sentinels,
};
use masters::{Masters, create_until_acknowledged, spawn};

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
        masters.wait_serves(victim, &expected);
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
        masters.wait_serves(i, &expected);
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
        masters.wait_serves(i, &expected);
    }
    // And it takes writes again.
    create_until_acknowledged(&masters, 1, "after", Duration::from_secs(10));
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

#[test]
fn a_history_recorded_through_kills_and_partitions_is_linearizable_and_watches_see_all_of_it() {
    let mut masters = Masters::start("ha-history");
    let api: Vec<Api> = (0..3).map(|i| Api::of(&masters, i)).collect();
    let (start, _) = list_version(&api[0]);
    assert_eq!(start.len(), HISTORY_SHARDS as usize);
    let until: Until = Arc::new(Mutex::new(None));
    let watchers: Vec<_> = api
        .iter()
        .map(|a| {
            let (a, p, u) = (a.clone(), start.clone(), until.clone());
            std::thread::spawn(move || history_watcher(a, p, u))
        })
        .collect();
    let clock = Instant::now();
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (1..=4u64)
        .map(|seed| {
            let (api, answered) = (api.clone(), answered.clone());
            std::thread::spawn(move || history_client(api, seed, 45, clock, answered))
        })
        .collect();
    // Faults while the clients run, each lasting while they get 25 more answers: a master
    // killed and restarted, another cut off and healed.
    let progress = |what: &str, more: usize| {
        let target = answered.load(Ordering::SeqCst) + more;
        wait_for(what, Duration::from_secs(30), || {
            (answered.load(Ordering::SeqCst) >= target).then_some(())
        });
    };
    progress("the clients to start", 20);
    masters.masters[1].proc.kill();
    progress("the clients to go on without m2", 25);
    masters.restart(1);
    masters.set_fault(2, "m1", true);
    masters.set_fault(2, "m2", true);
    progress("the clients to go on without m3", 25);
    masters.set_fault(2, "m1", false);
    masters.set_fault(2, "m2", false);
    let mut history: Vec<Record> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client"))
        .collect();
    history.extend(final_reads(&api, clock));
    let acknowledged = history
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Written { .. } | Outcome::Deleted))
        .count();
    let unknown = history
        .iter()
        .filter(|r| r.outcome == Outcome::Unknown)
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
    // Every watcher, resumed again and again across the kill and the partition, saw all of
    // it; the sentinels tell when.
    let sentinels = write_sentinels(&api[0]);
    let (_, final_list) = list_version(&api[0]);
    *until.lock().expect("until") = Some((sentinels, Instant::now() + Duration::from_secs(20)));
    let streams: Vec<Vec<Seen>> = watchers
        .into_iter()
        .map(|w| {
            w.join()
                .expect("a watcher")
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    check_streams(&streams, &history, &final_list);
}
