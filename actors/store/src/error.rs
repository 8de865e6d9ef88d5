//! Store errors.

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The precondition's revision is not the object's current one.
    #[error("key {key} is at revision {current}, not {expected}")]
    Conflict {
        key: String,
        expected: u64,
        current: u64,
    },
    /// The writer's leadership term was superseded: a newer holder of the lease has begun.
    #[error("{name} term {token} was superseded by term {current}")]
    Fenced {
        name: String,
        token: u64,
        current: u64,
    },
    /// The requested revision is older than the retained history.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    /// The requested revision is newer than the shard has reached.
    #[error("too large resource version: {requested}, current: {current}")]
    TooLarge { requested: u64, current: u64 },
    /// The shard is not running (restarting) or did not answer in time.
    #[error("shard {0} is unavailable")]
    Unavailable(u32),
    /// The disk said no.
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<redb::Error> for StoreError {
    fn from(err: redb::Error) -> Self {
        StoreError::Storage(err.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(err: $t) -> Self {
                StoreError::Storage(err.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
