//! What a master's [`RaftHost`](super::RaftHost) has answered: how well appends and client
//! requests share messages. Each append message is a round on both of its ends, so the
//! appends and entries it carries (and how many carry only a commit index or a heartbeat) say
//! what a write costs in messages.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::net::RaftRequest;

/// Counts of what a host has answered since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Messages of appends, each with one or more groups' appends.
    pub append_messages: u64,
    /// The groups' appends they carried.
    pub appends: u64,
    /// Appends that carried no log entry.
    pub empty_appends: u64,
    /// Log entries carried.
    pub entries: u64,
    /// Messages of client requests (forwarded or sent directly).
    pub client_messages: u64,
    /// The client requests they carried.
    pub client_requests: u64,
}

impl Traffic {
    /// Each count of `self` and `other` put together by `f`.
    fn zip(&self, other: &Traffic, f: impl Fn(u64, u64) -> u64) -> Traffic {
        Traffic {
            append_messages: f(self.append_messages, other.append_messages),
            appends: f(self.appends, other.appends),
            empty_appends: f(self.empty_appends, other.empty_appends),
            entries: f(self.entries, other.entries),
            client_messages: f(self.client_messages, other.client_messages),
            client_requests: f(self.client_requests, other.client_requests),
        }
    }

    /// What was answered between `earlier` and `self`.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        self.zip(earlier, u64::saturating_sub)
    }

    /// The sum of two counts (of two hosts, say).
    pub fn plus(&self, other: &Traffic) -> Traffic {
        self.zip(other, u64::saturating_add)
    }
}

/// The live counters behind [`Traffic`].
#[derive(Default)]
pub(super) struct Counters {
    append_messages: AtomicU64,
    appends: AtomicU64,
    empty_appends: AtomicU64,
    entries: AtomicU64,
    client_messages: AtomicU64,
    client_requests: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl Counters {
    /// Counts one request the host is about to answer.
    pub(super) fn count(&self, request: &RaftRequest) {
        match request {
            RaftRequest::Appends(appends) => {
                let (mut empty, mut entries) = (0, 0);
                for (_, append) in appends {
                    empty += usize::from(append.entries.is_empty());
                    entries += append.entries.len();
                }
                add(&self.append_messages, 1);
                add(&self.appends, appends.len());
                add(&self.empty_appends, empty);
                add(&self.entries, entries);
            }
            RaftRequest::Client { .. } => {
                add(&self.client_messages, 1);
                add(&self.client_requests, 1);
            }
            RaftRequest::Clients(ops) => {
                add(&self.client_messages, 1);
                add(&self.client_requests, ops.len());
            }
            _ => {}
        }
    }

    pub(super) fn read(&self) -> Traffic {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Traffic {
            append_messages: n(&self.append_messages),
            appends: n(&self.appends),
            empty_appends: n(&self.empty_appends),
            entries: n(&self.entries),
            client_messages: n(&self.client_messages),
            client_requests: n(&self.client_requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use openraft::raft::AppendEntriesRequest;

    use super::*;
    use std::time::Duration;

    use crate::raft::net::{ClientOp, Forward, RaftHost};
    use crate::raft::{Entry, ShardRaft, Vote, encode};

    fn append(entries: u64) -> AppendEntriesRequest<ShardRaft> {
        let log_id = |i| openraft::testing::log_id::<ShardRaft>(1, 1, i);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: (1..=entries).map(|i| Entry::new_blank(log_id(i))).collect(),
            leader_commit: None,
        }
    }

    #[tokio::test]
    async fn a_host_counts_the_appends_and_client_requests_it_answers() {
        let host = RaftHost::new();
        let before = host.traffic();
        let appends = RaftRequest::Appends(vec![(0, append(2)), (1, append(0)), (2, append(3))]);
        // No replica runs here, so each append is answered with an error; it is counted all
        // the same, as traffic that reached the host.
        let _ = host.handle(&encode(&appends).expect("encodes")).await;
        let second = Duration::from_secs(1);
        let clients = RaftRequest::Clients(vec![
            Forward::new(0, ClientOp::Get("/a".into()), 0, second),
            Forward::new(1, ClientOp::Get("/b".into()), 0, second),
        ]);
        let _ = host.handle(&encode(&clients).expect("encodes")).await;
        let one = RaftRequest::Client(Forward::new(0, ClientOp::Get("/c".into()), 0, second));
        let _ = host.handle(&encode(&one).expect("encodes")).await;
        let seen = host.traffic().since(&before);
        assert_eq!(
            seen,
            Traffic {
                append_messages: 1,
                appends: 3,
                empty_appends: 1,
                entries: 5,
                client_messages: 2,
                client_requests: 3,
            }
        );
        assert_eq!(seen.plus(&seen).entries, 10);
        assert!(host.handle(b"not a request").await.is_err());
        assert_eq!(
            host.traffic().since(&before),
            seen,
            "what does not decode is not counted"
        );
    }
}
