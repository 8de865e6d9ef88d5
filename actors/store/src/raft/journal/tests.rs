//! The journal against its files: reopening, torn writes, rotation, corruption.

use openraft::entry::RaftEntry;
use openraft::type_config::TypeConfigExt;

use std::path::PathBuf;

use super::file::{HEADER, list_segments, replay, segment_path};
use super::*;
use crate::machine::{Proposal, WriteOp};

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<ShardRaft>(term, 1, index)
}

fn entry(term: u64, index: u64, value: usize) -> Entry {
    Entry::new_normal(
        log_id(term, index),
        Proposal::Write {
            op: WriteOp::Create {
                key: format!("/k/{index}"),
                value: vec![7; value],
            },
            fence: None,
        },
    )
}

fn vote(term: u64) -> Vote {
    Vote::new(term, 1)
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn append(journal: &Journal, group: u32, entries: Vec<Entry>) {
    let (tx, rx) = ShardRaft::oneshot();
    journal
        .append(group, entries, IOFlushed::signal(tx))
        .expect("queued");
    rx.await.expect("answered").expect("flushed");
}

fn groups(journal: &Journal) -> BTreeMap<u32, GroupLog> {
    journal.lock().clone()
}

/// Appends, a vote, a truncation, a purge and a committed id in two groups.
async fn fill(journal: &Journal) {
    append(journal, 0, (1..=5).map(|i| entry(1, i, 10)).collect()).await;
    append(journal, 3, (1..=3).map(|i| entry(2, i, 10)).collect()).await;
    journal
        .change(0, Change::Vote(vote(2)))
        .await
        .expect("vote");
    journal
        .change(0, Change::Truncate(Some(log_id(1, 3))))
        .await
        .expect("truncate");
    append(journal, 0, vec![entry(2, 4, 10)]).await;
    journal
        .change_lazily(3, Change::Purge(log_id(2, 2)))
        .expect("purge");
    journal
        .change_lazily(0, Change::Committed(Some(log_id(2, 4))))
        .expect("committed");
    journal
        .change(3, Change::Vote(vote(3)))
        .await
        .expect("vote");
}

#[tokio::test]
async fn a_reopened_journal_holds_what_was_written() {
    let dir = dir("reopen");
    let before = {
        let journal = Journal::open(&dir).expect("open");
        fill(&journal).await;
        groups(&journal)
    };
    let zero = &before[&0];
    assert_eq!(
        zero.entries.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(zero.entries[&4].log_id, log_id(2, 4));
    assert_eq!(zero.vote, Some(vote(2)));
    assert_eq!(zero.committed, Some(log_id(2, 4)));
    let three = &before[&3];
    assert_eq!(three.entries.keys().copied().collect::<Vec<_>>(), [3]);
    assert_eq!(three.purged, Some(log_id(2, 2)));
    assert_eq!(three.last_log_id(), Some(log_id(2, 3)));
    // The writer has let go of the directory once the last handle is gone.
    let after = reopen(&dir).expect("reopen");
    assert_eq!(groups(&after), before);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_second_open_of_the_same_journal_is_refused() {
    let dir = dir("twice");
    let journal = Journal::open(&dir).expect("open");
    let err = Journal::open(&dir).err().expect("refused");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(journal);
    let _ = std::fs::remove_dir_all(dir);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir)
        .expect("list")
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[tokio::test]
async fn a_torn_last_write_is_dropped_and_the_journal_goes_on() {
    let dir = dir("torn");
    {
        let journal = Journal::open(&dir).expect("open");
        append(&journal, 0, vec![entry(1, 1, 10)]).await;
        append(&journal, 0, vec![entry(1, 2, 10)]).await;
    }
    // Flip a byte in the last record's payload, as a write cut short by a crash leaves it.
    let path = segments(&dir).pop().expect("a segment");
    let mut bytes = std::fs::read(&path).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).expect("records");
    bytes[end] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    {
        let journal = reopen(&dir).expect("reopen");
        let zero = &groups(&journal)[&0];
        assert_eq!(zero.entries.keys().copied().collect::<Vec<_>>(), [1]);
        append(&journal, 0, vec![entry(2, 2, 3)]).await;
    }
    let journal = reopen(&dir).expect("reopen");
    let zero = &groups(&journal)[&0];
    assert_eq!(zero.entries.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(zero.entries[&2].log_id, log_id(2, 2));
    drop(journal);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn full_segments_are_replaced_by_a_checkpoint_and_removed() {
    let dir = dir("rotate");
    let size = 64 << 10;
    let before = {
        let journal = Journal::open_sized(&dir, size).expect("open");
        // About 1 KiB an entry: several segments' worth, with purges keeping the log short.
        for i in 1..=400u64 {
            append(&journal, (i % 3) as u32, vec![entry(1, i, 1000)]).await;
            if i % 50 == 0 {
                for group in 0..3 {
                    journal
                        .change_lazily(group, Change::Purge(log_id(1, i - 20)))
                        .expect("purge");
                }
            }
        }
        journal
            .change(1, Change::Vote(vote(4)))
            .await
            .expect("vote");
        let kept = segments(&dir);
        assert!(kept.len() <= 2, "old segments were kept: {kept:?}");
        assert!(
            list_segments(&dir).expect("list")[0].0 > 3,
            "the journal never moved on"
        );
        groups(&journal)
    };
    let after = groups(&reopen(&dir).expect("reopen"));
    assert_eq!(after, before);
    assert_eq!(after[&1].vote, Some(vote(4)));
    let _ = std::fs::remove_dir_all(dir);
}

/// What the journal's files in `dir` hold, read while it may still be open.
fn on_disk(dir: &Path) -> BTreeMap<u32, GroupLog> {
    let mut groups = BTreeMap::new();
    let paths = segments(dir);
    for (i, path) in paths.iter().enumerate() {
        replay(path, &mut groups, i + 1 == paths.len()).expect("replay");
    }
    groups
}

#[tokio::test]
async fn unflushed_changes_go_out_with_the_next_flush_or_at_close() {
    let dir = dir("unflushed");
    {
        let journal = Journal::open(&dir).expect("open");
        append(&journal, 0, (1..=3).map(|i| entry(1, i, 10)).collect()).await;
        journal
            .change_lazily(0, Change::Committed(Some(log_id(1, 2))))
            .expect("committed");
        // Known at once in memory, but not worth a write of its own.
        assert_eq!(groups(&journal)[&0].committed, Some(log_id(1, 2)));
        assert_eq!(on_disk(&dir)[&0].committed, None);
        append(&journal, 1, vec![entry(1, 1, 10)]).await;
        let written = on_disk(&dir);
        assert_eq!(written[&0].committed, Some(log_id(1, 2)));
        assert_eq!(written[&1].entries.len(), 1);
        journal
            .change_lazily(0, Change::Purge(log_id(1, 1)))
            .expect("purge");
        journal
            .change_lazily(0, Change::Committed(Some(log_id(1, 3))))
            .expect("committed");
    }
    // Closing the journal wrote what was still waiting, in order.
    let zero = &groups(&reopen(&dir).expect("reopen"))[&0];
    assert_eq!(zero.purged, Some(log_id(1, 1)));
    assert_eq!(zero.committed, Some(log_id(1, 3)));
    assert_eq!(zero.entries.keys().copied().collect::<Vec<_>>(), [2, 3]);
    let _ = std::fs::remove_dir_all(dir);
}

/// Opens the journal in `dir` once the previous writer thread has released it.
fn reopen(dir: &Path) -> Result<Journal, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Journal::open(dir) {
            Err(err) if err.to_string().contains("in use") => {
                assert!(std::time::Instant::now() < deadline, "never released");
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn corruption_before_the_last_segment_is_refused() {
    let dir = dir("corrupt");
    {
        let journal = Journal::open(&dir).expect("open");
        for i in 1..=3u64 {
            append(&journal, 0, vec![entry(1, i, 100)]).await;
        }
    }
    // A crash just after the next segment was made leaves it empty behind the first.
    let first = segments(&dir).remove(0);
    std::fs::write(segment_path(&dir, 2), vec![0; 4096]).expect("next segment");
    let journal = reopen(&dir).expect("two segments open");
    assert_eq!(groups(&journal)[&0].entries.len(), 3);
    append(&journal, 0, vec![entry(1, 4, 100)]).await;
    drop(journal);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[HEADER + 2] ^= 0xff;
    std::fs::write(&first, &bytes).expect("write");
    let err = reopen(&dir).err().expect("a corrupt segment was accepted");
    assert!(err.to_string().contains("corrupt"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_change_replayed_on_a_log_that_has_it_changes_nothing() {
    let changes = vec![
        Change::Append((1..=4).map(|i| entry(1, i, 5)).collect()),
        Change::Truncate(Some(log_id(1, 2))),
        Change::Append(vec![entry(2, 3, 5)]),
        Change::Purge(log_id(1, 1)),
        Change::Vote(vote(2)),
        Change::Committed(Some(log_id(2, 3))),
    ];
    let mut full = GroupLog::default();
    for c in changes.clone() {
        full.apply(c);
    }
    for from in 0..changes.len() {
        let mut again = full.clone();
        for c in changes[from..].iter().cloned() {
            again.apply(c);
        }
        assert_eq!(again, full, "replaying from change {from}");
    }
}

/// Writes the same appends, of lengths that start and end anywhere in a block, to a segment in
/// `dir` (resumed half-way through, as after a restart) and returns the file's bytes.
fn written(dir: &Path, buffered: bool) -> (Vec<u8>, bool) {
    let size = 4 << 20;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let open = |segment: Segment| {
        if buffered {
            segment.buffered()
        } else {
            segment
        }
    };
    let mut segment = open(Segment::create(dir, 1, size).expect("create"));
    let direct = segment.direct();
    let lengths = [
        1, 7, 4088, 8, 4096, 5000, 12_288, 3, 9000, 4095, 1, 1, 70_000, 1_500_000, 5, 4100,
    ];
    let mut fill = 0u8;
    for (i, &n) in lengths.iter().enumerate() {
        if i == lengths.len() / 2 {
            let end = segment.end;
            drop(segment);
            segment = open(Segment::resume(dir, 1, end, size).expect("resume"));
        }
        fill = fill.wrapping_add(1);
        segment.append(&vec![fill; n], i % 2 == 0).expect("append");
    }
    (std::fs::read(segment_path(dir, 1)).expect("read"), direct)
}

#[test]
fn direct_and_buffered_segments_hold_the_same_bytes() {
    let (direct, was_direct) = written(&dir("direct-io"), false);
    let (buffered, was_buffered) = written(&dir("buffered-io"), true);
    assert!(!was_buffered);
    assert_eq!(direct.len(), buffered.len());
    let differs = direct.iter().zip(&buffered).position(|(a, b)| a != b);
    assert_eq!(differs, None, "direct writes: {was_direct}");
    let _ = std::fs::remove_dir_all(dir("direct-io"));
    let _ = std::fs::remove_dir_all(dir("buffered-io"));
}
