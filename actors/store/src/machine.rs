//! The pure heart of a shard: what a write does to one key, given what is stored.

use std::sync::Arc;

use crate::error::StoreError;

pub use shoal_core::Fence;

/// A stored value and the shard revision of its last write.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub rev: u64,
    #[serde(with = "crate::bytes::shared")]
    pub value: Arc<Vec<u8>>,
}

/// A write to one key: the command a shard's Raft log carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WriteOp {
    /// Fails with `AlreadyExists` when the key is present.
    Create {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Fails with `NotFound` when absent, `Conflict` when `expected` is not the current revision.
    Update {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expected: Option<u64>,
    },
    /// Fails with `NotFound` when absent, `Conflict` when `expected` is not the current revision.
    Delete { key: String, expected: Option<u64> },
}

impl WriteOp {
    /// The key the write touches.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

impl std::fmt::Display for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOp::Create { key, value } => write!(f, "create {key} ({} bytes)", value.len()),
            WriteOp::Update {
                key,
                value,
                expected,
            } => write!(f, "update {key} ({} bytes, at {expected:?})", value.len()),
            WriteOp::Delete { key, expected } => write!(f, "delete {key} (at {expected:?})"),
        }
    }
}

/// One entry of a shard's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Proposal {
    /// A write, stamped with its writer's leadership term when it holds one.
    Write { op: WriteOp, fence: Option<Fence> },
    /// A leadership term begins: from this entry on, the shard refuses writes fenced by an
    /// older term of the same name.
    RaiseFence(Fence),
}

impl Proposal {
    /// An unfenced write.
    pub fn write(op: WriteOp) -> Proposal {
        Proposal::Write { op, fence: None }
    }
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proposal::Write { op, fence: None } => write!(f, "{op}"),
            Proposal::Write {
                op,
                fence: Some(fence),
            } => write!(f, "{op} ({fence})"),
            Proposal::RaiseFence(fence) => write!(f, "raise {fence}"),
        }
    }
}

/// Checks a term against the newest one the shard has seen for its name (`current`): an older
/// term is refused; an equal or newer one passes and becomes the newest.
pub fn check_fence(fence: &Fence, current: Option<u64>) -> Result<u64, StoreError> {
    match current {
        Some(newest) if fence.token < newest => Err(StoreError::Fenced {
            name: fence.name.clone(),
            token: fence.token,
            current: newest,
        }),
        _ => Ok(fence.token),
    }
}

/// The kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as watchers see it. For `Deleted`, `value` is the last state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEvent {
    pub shard: u32,
    pub rev: u64,
    pub kind: EventKind,
    pub key: String,
    pub value: Arc<Vec<u8>>,
}

/// What a write did: the revision it committed at (or the unchanged one for a no-op), and the
/// value before it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteOutcome {
    pub rev: u64,
    pub previous: Option<Stored>,
    /// False when an update changed nothing and so wrote nothing.
    pub changed: bool,
}

/// The decision for one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Store `value` at the next revision and emit an event of `kind`.
    Put { value: Vec<u8>, kind: EventKind },
    /// Remove the key at the next revision and emit `Deleted` with the last state.
    Remove,
    /// Nothing changes: an update to the value already stored.
    Unchanged,
}

fn check_expected(key: &str, expected: Option<u64>, current: &Stored) -> Result<(), StoreError> {
    match expected {
        Some(exp) if exp != current.rev => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: exp,
            current: current.rev,
        }),
        _ => Ok(()),
    }
}

/// Decides what `op` does given the stored value of its key.
pub fn plan(op: &WriteOp, current: Option<&Stored>) -> Result<Plan, StoreError> {
    match (op, current) {
        (WriteOp::Create { key, .. }, Some(_)) => Err(StoreError::AlreadyExists(key.clone())),
        (WriteOp::Create { value, .. }, None) => Ok(Plan::Put {
            value: value.clone(),
            kind: EventKind::Added,
        }),
        (WriteOp::Update { key, .. } | WriteOp::Delete { key, .. }, None) => {
            Err(StoreError::NotFound(key.clone()))
        }
        (
            WriteOp::Update {
                key,
                value,
                expected,
            },
            Some(cur),
        ) => {
            check_expected(key, *expected, cur)?;
            if cur.value.as_slice() == value.as_slice() {
                Ok(Plan::Unchanged)
            } else {
                Ok(Plan::Put {
                    value: value.clone(),
                    kind: EventKind::Modified,
                })
            }
        }
        (WriteOp::Delete { key, expected }, Some(cur)) => {
            check_expected(key, *expected, cur)?;
            Ok(Plan::Remove)
        }
    }
}

/// Whether a watcher that starts after `from` may be served from a history whose oldest
/// retained revision is `oldest` (every event after `oldest - 1` is kept) at `current`.
pub fn check_watch_start(from: u64, oldest_kept: u64, current: u64) -> Result<(), StoreError> {
    if from > current {
        return Err(StoreError::TooLarge {
            requested: from,
            current,
        });
    }
    if from + 1 < oldest_kept {
        return Err(StoreError::Gone {
            requested: from,
            oldest: oldest_kept,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rev: u64, v: &str) -> Stored {
        Stored {
            rev,
            value: Arc::new(v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn create_refuses_an_existing_key() {
        let op = WriteOp::Create {
            key: "/k".into(),
            value: b"x".to_vec(),
        };
        assert_eq!(
            plan(&op, Some(&stored(3, "y"))),
            Err(StoreError::AlreadyExists("/k".into()))
        );
        assert_eq!(
            plan(&op, None),
            Ok(Plan::Put {
                value: b"x".to_vec(),
                kind: EventKind::Added
            })
        );
    }

    #[test]
    fn a_stale_revision_is_a_conflict() {
        let op = WriteOp::Update {
            key: "/k".into(),
            value: b"x".to_vec(),
            expected: Some(2),
        };
        assert_eq!(
            plan(&op, Some(&stored(3, "y"))),
            Err(StoreError::Conflict {
                key: "/k".into(),
                expected: 2,
                current: 3
            })
        );
        let del = WriteOp::Delete {
            key: "/k".into(),
            expected: Some(2),
        };
        assert!(matches!(
            plan(&del, Some(&stored(3, "y"))),
            Err(StoreError::Conflict { .. })
        ));
    }

    #[test]
    fn an_update_without_precondition_overwrites() {
        let op = WriteOp::Update {
            key: "/k".into(),
            value: b"x".to_vec(),
            expected: None,
        };
        assert_eq!(
            plan(&op, Some(&stored(3, "y"))),
            Ok(Plan::Put {
                value: b"x".to_vec(),
                kind: EventKind::Modified
            })
        );
    }

    #[test]
    fn an_update_to_the_same_value_changes_nothing() {
        let op = WriteOp::Update {
            key: "/k".into(),
            value: b"y".to_vec(),
            expected: Some(3),
        };
        assert_eq!(plan(&op, Some(&stored(3, "y"))), Ok(Plan::Unchanged));
    }

    #[test]
    fn writes_to_missing_keys_are_not_found() {
        let op = WriteOp::Delete {
            key: "/k".into(),
            expected: None,
        };
        assert_eq!(plan(&op, None), Err(StoreError::NotFound("/k".into())));
    }

    #[test]
    fn an_older_term_is_fenced_and_a_newer_one_takes_over() {
        let fence = |token| Fence {
            name: "kube-system/kube-controller-manager".into(),
            token,
        };
        assert_eq!(check_fence(&fence(1), None), Ok(1));
        assert_eq!(check_fence(&fence(3), Some(3)), Ok(3));
        assert_eq!(check_fence(&fence(4), Some(3)), Ok(4));
        assert_eq!(
            check_fence(&fence(2), Some(3)),
            Err(StoreError::Fenced {
                name: "kube-system/kube-controller-manager".into(),
                token: 2,
                current: 3
            })
        );
    }

    #[test]
    fn watch_start_is_checked_against_the_retained_history() {
        // History keeps revisions 5..=10.
        assert!(check_watch_start(4, 5, 10).is_ok());
        assert!(check_watch_start(10, 5, 10).is_ok());
        assert_eq!(
            check_watch_start(3, 5, 10),
            Err(StoreError::Gone {
                requested: 3,
                oldest: 5
            })
        );
        assert_eq!(
            check_watch_start(11, 5, 10),
            Err(StoreError::TooLarge {
                requested: 11,
                current: 10
            })
        );
        // Nothing compacted yet: every start from 0 is fine.
        assert!(check_watch_start(0, 1, 0).is_ok());
    }
}
