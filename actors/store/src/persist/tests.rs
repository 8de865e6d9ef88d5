//! A shard database against its file: writes, history, fences, snapshots and the pending
//! layers.

use super::*;
use crate::machine::Fence;

fn temp_db(name: &str) -> (ShardDb, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("shoal-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = ShardDb::open(&dir.join("s.redb"), 0).expect("open");
    (db, dir)
}

fn create(key: &str, v: &str) -> WriteOp {
    WriteOp::Create {
        key: key.into(),
        value: v.as_bytes().to_vec(),
    }
}

#[test]
fn writes_survive_reopening() {
    let (db, dir) = temp_db("reopen");
    db.write(&create("/a/1", "one"), 100).expect("write");
    db.write(&create("/a/2", "two"), 100).expect("write");
    drop(db);
    let db = ShardDb::open(&dir.join("s.redb"), 0).expect("reopen");
    let (items, rev) = db.list("/a/").expect("list");
    assert_eq!(rev, 2);
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].1.value.as_slice(), b"two");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn history_is_trimmed_to_the_limit() {
    let (db, dir) = temp_db("trim");
    for i in 0..10 {
        db.write(&create(&format!("/k/{i}"), "v"), 4)
            .expect("write");
    }
    let marks = db.marks().expect("marks");
    assert_eq!(
        marks,
        Marks {
            revision: 10,
            oldest_kept: 7
        }
    );
    let events = db.events_after(6, "/k/").expect("events");
    assert_eq!(
        events.iter().map(|e| e.rev).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_delete_event_carries_the_last_state() {
    let (db, dir) = temp_db("delete");
    db.write(&create("/k/a", "last"), 100).expect("write");
    let (outcome, event) = db
        .write(
            &WriteOp::Delete {
                key: "/k/a".into(),
                expected: Some(1),
            },
            100,
        )
        .expect("delete");
    assert_eq!(outcome.rev, 2);
    let event = event.expect("an event");
    assert_eq!(event.kind, EventKind::Deleted);
    assert_eq!(event.value.as_slice(), b"last");
    assert_eq!(db.get("/k/a").expect("get"), None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_write_changes_nothing() {
    let (db, dir) = temp_db("failed");
    db.write(&create("/k/a", "v"), 100).expect("write");
    assert!(db.write(&create("/k/a", "w"), 100).is_err());
    assert_eq!(db.marks().expect("marks").revision, 1);
    assert_eq!(
        db.get("/k/a")
            .expect("get")
            .map(|s| s.value.as_ref().clone()),
        Some(b"v".to_vec())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_raised_fence_refuses_older_terms_and_survives_a_snapshot() {
    let (db, dir) = temp_db("fence");
    let fence = |token| Fence {
        name: "kube-system/kube-controller-manager".into(),
        token,
    };
    let fenced = |token, key: &str| Proposal::Write {
        op: create(key, "v"),
        fence: Some(fence(token)),
    };
    let results = db
        .apply_batch(
            &[
                fenced(1, "/k/a"),
                Proposal::RaiseFence(fence(2)),
                fenced(1, "/k/b"),
                fenced(2, "/k/c"),
                Proposal::RaiseFence(fence(1)),
            ],
            &[],
            100,
            true,
        )
        .expect("apply");
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
    assert!(matches!(
        results[2],
        Err(StoreError::Fenced {
            token: 1,
            current: 2,
            ..
        })
    ));
    assert!(matches!(results[4], Err(StoreError::Fenced { .. })));
    assert_eq!(db.get("/k/b").expect("get"), None);
    assert_eq!(db.marks().expect("marks").revision, 2);

    let (image, _) = db.export(&[]).expect("export");
    let (copy, copy_dir) = temp_db("fence-copy");
    assert!(!copy.snapshotted().expect("snapshotted"));
    copy.import(&image, &[]).expect("import");
    assert!(copy.snapshotted().expect("snapshotted"));
    let late = copy
        .apply_batch(&[fenced(1, "/k/d")], &[], 100, true)
        .expect("apply");
    assert!(matches!(late[0], Err(StoreError::Fenced { .. })));
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(copy_dir);
}

/// A database as an older version left it: `fill` writes its tables, in one transaction.
/// Returns its directory and path.
fn older_db(
    name: &str,
    fill: impl FnOnce(&redb::WriteTransaction),
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("shoal-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("shard.redb");
    let db = Database::create(&path).expect("create");
    let txn = db.begin_write().expect("txn");
    fill(&txn);
    txn.commit().expect("commit");
    (dir, path)
}

#[test]
fn a_snapshot_kept_among_the_raft_values_is_dropped_and_still_counts() {
    let (dir, path) = older_db("old-snap", |txn| {
        let mut raft = txn.open_table(RAFT).expect("raft");
        raft.insert("applied", b"a".as_slice()).expect("insert");
        raft.insert("snapshot_meta", b"m".as_slice())
            .expect("insert");
        raft.insert("snapshot_data", b"d".as_slice())
            .expect("insert");
    });
    let db = ShardDb::open(&path, 0).expect("open");
    assert!(db.snapshotted().expect("snapshotted"));
    assert_eq!(db.raft_get("snapshot_meta").expect("get"), None);
    assert_eq!(db.raft_get("snapshot_data").expect("get"), None);
    assert_eq!(db.raft_get("applied").expect("get"), Some(b"a".to_vec()));
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_stored_copy_of_the_snapshot_data_is_dropped_and_the_snapshot_still_counts() {
    let (dir, path) = older_db("snap-data", |txn| {
        let mut snapshot = txn.open_table(SNAPSHOT).expect("snapshot");
        snapshot.insert("meta", b"m".as_slice()).expect("insert");
        snapshot.insert("data", b"d".as_slice()).expect("insert");
    });
    let db = ShardDb::open(&path, 0).expect("open");
    assert!(db.snapshotted().expect("snapshotted"));
    drop(db);
    let db = Database::create(&path).expect("reopen");
    let txn = db.begin_read().expect("txn");
    let snapshot = txn.open_table(SNAPSHOT).expect("snapshot");
    assert!(snapshot.get("data").expect("get").is_none());
    drop((snapshot, txn, db));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_commit_for_a_snapshot_makes_the_pending_state_durable_and_reports_it() {
    let (db, dir) = temp_db("commit-for-snapshot");
    db.apply_batch(
        &[Proposal::write(create("/k/a", "1"))],
        &[("applied", b"7".to_vec())],
        100,
        false,
    )
    .expect("apply");
    assert!(!db.snapshotted().expect("snapshotted"));
    let raft = db
        .commit_for_snapshot(&["applied", "membership"])
        .expect("commit");
    assert_eq!(raft, vec![Some(b"7".to_vec()), None]);
    assert!(db.snapshotted().expect("snapshotted"));
    let path = dir.join("s.redb");
    drop(db);
    let reopened = ShardDb::open(&path, 0).expect("reopen");
    assert_eq!(
        reopened.raft_get("applied").expect("get"),
        Some(b"7".to_vec())
    );
    assert!(reopened.get("/k/a").expect("get").is_some());
    drop(reopened);
    let _ = std::fs::remove_dir_all(dir);
}

/// Everything a reader can see of a shard.
fn view(db: &ShardDb) -> (Marks, Vec<(String, Stored)>, Vec<StoreEvent>) {
    let marks = db.marks().expect("marks");
    let (list, at) = db.list("/").expect("list");
    assert_eq!(at, marks.revision);
    for (key, stored) in &list {
        assert_eq!(db.get(key).expect("get").as_ref(), Some(stored));
    }
    let events = db
        .events_after(marks.oldest_kept.saturating_sub(1), "/")
        .expect("events");
    (marks, list, events)
}

#[test]
fn batches_kept_in_memory_read_as_if_committed_and_commit_whole() {
    use rand::{Rng, SeedableRng};
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (reference, ref_dir) = temp_db("layers-ref");
    let (layered, dir) = temp_db("layers");
    let keys = ["/a", "/b/1", "/b/2", "/b/3", "/c"];
    for round in 0..200 {
        let batch: Vec<Proposal> = (0..rng.random_range(1..6))
            .map(|_| {
                let key = keys[rng.random_range(0..keys.len())].to_owned();
                let value = vec![rng.random_range(0..4u8)];
                Proposal::write(match rng.random_range(0..3) {
                    0 => WriteOp::Create { key, value },
                    1 => WriteOp::Update {
                        key,
                        value,
                        expected: None,
                    },
                    _ => WriteOp::Delete {
                        key,
                        expected: None,
                    },
                })
            })
            .collect();
        let durable = rng.random_range(0..8) == 0;
        match rng.random_range(0..16) {
            // As if a commit were writing (or had failed to write) what is pending.
            0 | 1 => drop(layered.seal()),
            // A snapshot built: everything pending committed under the next batch.
            2 => drop(layered.commit_for_snapshot(&[]).expect("snapshot")),
            // A snapshot installed: the whole state replaced under the next batch.
            3 => {
                let (image, _) = reference.export(&[]).expect("export");
                layered.import(&image, &[]).expect("import");
            }
            _ => {}
        }
        let want = reference
            .apply_batch(&batch, &[], 7, true)
            .expect("reference");
        let got = layered
            .apply_batch(&batch, &[], 7, durable)
            .expect("layered");
        assert_eq!(got, want, "seed {seed}, round {round}");
        assert_eq!(
            view(&layered),
            view(&reference),
            "seed {seed}, round {round}"
        );
    }
    // What is pending is lost when the process goes; what was committed stays.
    let committed = {
        layered.commit_pending().expect("commit");
        view(&layered)
    };
    layered
        .apply_batch(
            &[Proposal::write(WriteOp::Create {
                key: "/z".into(),
                value: vec![1],
            })],
            &[],
            7,
            false,
        )
        .expect("pending");
    drop(layered);
    let reopened = ShardDb::open(&dir.join("s.redb"), 0).expect("reopen");
    assert_eq!(view(&reopened), committed);
    assert_eq!(committed, view(&reference));
    drop(reopened);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(ref_dir);
}
