//! The store (DESIGN §4): the key space split into shards, each an actor that owns its slice of
//! the cluster state, persisted in redb, with revisions, preconditions and watches.
//!
//! Each shard is a Raft group with a replica on every master ([`raft`]); callers see only
//! [`Store`].

mod bytes;
mod error;
mod handle;
pub mod history;
mod machine;
mod memory;
mod persist;
pub mod raft;
mod runtime;
mod shard;
mod watch;

pub use error::StoreError;
pub use handle::{Store, StoreWatch};
pub use machine::{EventKind, Fence, Proposal, StoreEvent, Stored, WriteOp, WriteOutcome};
pub use memory::disable_transparent_huge_pages;
pub use persist::{Image, ShardDb};
pub use runtime::{
    MAX_DEFAULT_SHARDS, default_shards, machine_default_shards, store_runtime, store_workers,
};
pub use shard::{
    FORWARD_HOPS, Shard, ShardArgs, ShardMsg, raft_config, shard_group, shard_name, start_replica,
};
pub use watch::WatchHub;
