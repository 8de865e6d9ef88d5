//! A shard as a Raft group (DESIGN §4): the log and the state machine on redb, and the types
//! that tie them to `openraft`.
//!
//! The log carries [`Proposal`]s. Applying one is the pure write plan of [`crate::machine`] run
//! against the shard's database, so every replica computes the same revisions, and watch
//! events are published only for entries that were committed and applied.

pub mod balance;
mod feed;
pub mod journal;
mod lane;
pub mod legacy;
mod log;
pub mod net;
mod replica;
mod state;
mod traffic;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use journal::Journal;
pub use log::LogStore;
pub use net::{
    ClientOp, ClientReply, Forward, GroupLink, GroupNetwork, MemberChange, RaftHost, RaftRequest,
    RaftResponse, Router, Wire, WireFuture,
};
pub use replica::{GroupView, MemberView, Replica};
pub use state::{ShardMachine, SnapshotBuilder};
pub use traffic::Traffic;

use crate::error::StoreError;
use crate::machine::{Proposal, WriteOutcome};

/// A Raft member's id: a master, numbered once when its data directory is created.
pub type NodeId = u64;

/// A master as Raft knows it: its cluster name, its QUIC address, and the address of its
/// Kubernetes API (which nodes hand out to local clients).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
    #[serde(default)]
    pub api: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// What applying one log entry answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A write: its outcome, or why it was refused (conflict, missing key). A refused write
    /// still occupies its log entry but changes nothing.
    Write(Result<WriteOutcome, StoreError>),
    /// A blank or membership entry.
    Nothing,
}

/// Tokio, with Raft's randomness (election timeouts, tick phases) drawn from a seed: random
/// in a process, chosen in a simulation so that a run replays exactly.
pub type Runtime =
    openraft::rt::deterministic_rng::DeterministicRng<openraft_rt_tokio::TokioRuntime>;

openraft::declare_raft_types!(
    /// The Raft types of a store shard.
    pub ShardRaft:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        AsyncRuntime = Runtime,
);

/// Raft's log id for a shard entry.
pub type LogId = openraft::type_config::alias::LogIdOf<ShardRaft>;
/// The membership a shard's state machine last applied.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<ShardRaft>;
/// A shard snapshot's metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<ShardRaft>;
/// A shard snapshot: its metadata and the encoded [`crate::persist::Image`].
pub type Snapshot = openraft::type_config::alias::SnapshotOf<ShardRaft, Vec<u8>>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<ShardRaft>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<ShardRaft>;
/// Raft's timing and limits.
pub type RaftConfig = openraft::Config;
pub use openraft::{ReadPolicy, SnapshotPolicy};
/// A shard's Raft handle.
pub type ShardRaftHandle = openraft::Raft<ShardRaft, ShardMachine>;

/// How the storage runs its disk work: on tokio's blocking pool (a real process), or inline
/// on the calling task (an in-memory database in a deterministic simulation, where other
/// threads would break the replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    Blocking,
    Inline,
}

impl Io {
    pub(crate) async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, std::io::Error> {
        let result = match self {
            Io::Inline => f(),
            Io::Blocking => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| std::io::Error::other(format!("storage task failed: {e}")))?,
        };
        result.map_err(std::io::Error::other)
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| StoreError::Storage(format!("encoding: {e}")))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Storage(format!("{what} is corrupt: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::persist::ShardDb;
    use crate::watch::WatchHub;

    /// Fresh in-memory storage for each case of the suite.
    struct InMemory;

    impl StoreBuilder<ShardRaft, LogStore, ShardMachine> for InMemory {
        async fn build(&self) -> Result<((), LogStore, ShardMachine), StorageError<ShardRaft>> {
            let log = LogStore::in_memory();
            let db = ShardDb::in_memory(0)
                .map_err(|e| StorageError::read(ShardRaft::err_from_error(&e)))?;
            let sm = ShardMachine::new(db, WatchHub::new(0, 16), 100, Io::Inline);
            Ok(((), log, sm))
        }
    }

    /// Fresh files on disk for each case, with the disk work on the blocking pool.
    struct OnDisk {
        dir: std::path::PathBuf,
        next: AtomicU64,
    }

    impl StoreBuilder<ShardRaft, LogStore, ShardMachine> for OnDisk {
        async fn build(&self) -> Result<((), LogStore, ShardMachine), StorageError<ShardRaft>> {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let log = Journal::open(&self.dir.join(format!("{n}.journal")))
                .map_err(|e| StorageError::read(ShardRaft::err_from_error(&e)))?
                .log(0);
            let db = ShardDb::open(&self.dir.join(format!("{n}.redb")), 0)
                .map_err(|e| StorageError::read(ShardRaft::err_from_error(&e)))?;
            let sm = ShardMachine::new(db, WatchHub::new(0, 16), 100, Io::Blocking);
            Ok(((), log, sm))
        }
    }

    fn machine() -> ShardMachine {
        ShardMachine::new(
            ShardDb::in_memory(0).expect("db"),
            WatchHub::new(0, 16),
            100,
            Io::Inline,
        )
    }

    async fn apply_creates(sm: &mut ShardMachine, indexes: std::ops::Range<u64>) {
        use openraft::entry::RaftEntry;
        use openraft::storage::RaftStateMachine;
        let entries: Vec<_> = indexes
            .map(|i| {
                let entry = Entry::new_normal(
                    openraft::testing::log_id::<ShardRaft>(1, 1, i),
                    Proposal::write(crate::machine::WriteOp::Create {
                        key: format!("/k/{i}"),
                        value: vec![b'v'],
                    }),
                );
                Ok((entry, None))
            })
            .collect();
        sm.apply(futures::stream::iter(entries))
            .await
            .expect("apply");
    }

    /// A snapshot is the committed state: once one is built, the current snapshot is read
    /// out of the database, as new as its last commit, and installs as exactly that state.
    #[tokio::test]
    async fn the_current_snapshot_is_the_committed_state_once_one_was_built() {
        use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
        let mut sm = machine();
        apply_creates(&mut sm, 1..4).await;
        assert!(sm.get_current_snapshot().await.expect("get").is_none());

        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        let at = |i| Some(openraft::testing::log_id::<ShardRaft>(1, 1, i));
        assert_eq!(built.meta.last_log_id, at(3));
        let current = sm.get_current_snapshot().await.expect("get").expect("some");
        assert_eq!(current.meta, built.meta);

        // Reading a snapshot out commits what is pending: later writes are in it.
        apply_creates(&mut sm, 4..6).await;
        let current = sm.get_current_snapshot().await.expect("get").expect("some");
        assert_eq!(current.meta.last_log_id, at(5));
        let mut follower = machine();
        follower
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .expect("install");
        assert_eq!(follower.applied_state().await.expect("applied").0, at(5));
        let (objects, _) = follower.db().list("/k/").expect("list");
        assert_eq!(objects.len(), 5);
        let again = follower
            .get_current_snapshot()
            .await
            .expect("get")
            .expect("some");
        assert_eq!(again.meta, current.meta);
    }

    #[tokio::test]
    async fn openraft_storage_suite_in_memory() {
        Suite::test_all(InMemory).await.expect("storage suite");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_on_disk() {
        let dir = std::env::temp_dir().join(format!("shoal-raft-suite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let builder = OnDisk {
            dir: dir.clone(),
            next: AtomicU64::new(0),
        };
        Suite::test_all(builder).await.expect("storage suite");
        let _ = std::fs::remove_dir_all(dir);
    }
}
