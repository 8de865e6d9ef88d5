//! A linearizability checker for histories of store operations (per key, since keys are
//! independent objects): the Wing–Gong search with memoized states. Operations whose outcome
//! is unknown (a timeout, a leader lost mid-write) may have taken effect at any point after
//! they began, or never.

use std::collections::{BTreeMap, HashSet};

/// What a client asked of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Create {
        value: String,
    },
    /// An update; with `expected`, only if the key is at that revision.
    Update {
        value: String,
        expected: Option<u64>,
    },
    Delete {
        expected: Option<u64>,
    },
    Get,
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A create or update committed at `rev`.
    Written {
        rev: u64,
    },
    /// A delete committed.
    Deleted,
    AlreadyExists,
    NotFound,
    Conflict,
    /// A get: the revision and value, or nothing.
    Read(Option<(u64, String)>),
    /// No answer: it may or may not have happened.
    Unknown,
}

/// One operation: its key, call, outcome, and when it began and ended on a clock shared by
/// all clients (`ended` is `None` when it never ended).
#[derive(Clone, Debug)]
pub struct Record {
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
    pub began: u64,
    pub ended: Option<u64>,
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the operations on {key} admit no linearization ({ops} operations)")]
pub struct Violation {
    pub key: String,
    pub ops: usize,
}

/// A key's state in the model: absent, or a value at a revision (unknown when the write that
/// put it there got no answer).
type State = Option<(Option<u64>, String)>;

fn precondition(rev: Option<u64>, expected: Option<u64>) -> bool {
    match (rev, expected) {
        (Some(r), Some(e)) => r == e,
        _ => true,
    }
}

fn conflict_possible(rev: Option<u64>, expected: Option<u64>) -> bool {
    match (rev, expected) {
        (Some(r), Some(e)) => r != e,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

fn newer(state: &State, rev: u64) -> bool {
    match state {
        Some((Some(r), _)) => rev > *r,
        _ => true,
    }
}

/// The state after `op`, if `op` can happen in `state`.
fn step(state: &State, op: &Record) -> Option<State> {
    match (&op.call, &op.outcome) {
        (Call::Create { value }, Outcome::Written { rev }) => {
            state.is_none().then(|| Some((Some(*rev), value.clone())))
        }
        (Call::Create { .. }, Outcome::AlreadyExists) => state.is_some().then(|| state.clone()),
        (Call::Create { value }, Outcome::Unknown) => {
            state.is_none().then(|| Some((None, value.clone())))
        }
        (Call::Update { value, expected }, Outcome::Written { rev }) => match state {
            Some((r, _)) if precondition(*r, *expected) && newer(state, *rev) => {
                Some(Some((Some(*rev), value.clone())))
            }
            _ => None,
        },
        (Call::Update { value, expected }, Outcome::Unknown) => match state {
            Some((r, _)) if precondition(*r, *expected) => Some(Some((None, value.clone()))),
            _ => None,
        },
        (Call::Delete { expected }, Outcome::Deleted | Outcome::Unknown) => match state {
            Some((r, _)) if precondition(*r, *expected) => Some(None),
            _ => None,
        },
        (Call::Update { expected, .. } | Call::Delete { expected }, Outcome::Conflict) => {
            match state {
                Some((r, _)) if conflict_possible(*r, *expected) => Some(state.clone()),
                _ => None,
            }
        }
        (Call::Update { .. } | Call::Delete { .. }, Outcome::NotFound) => {
            state.is_none().then_some(None)
        }
        (Call::Get, Outcome::Read(None)) => state.is_none().then_some(None),
        (Call::Get, Outcome::Read(Some((rev, value)))) => match state {
            Some((r, v)) if v == value && r.is_none_or(|r| r == *rev) => {
                Some(Some((Some(*rev), v.clone())))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Checks one key's operations (at most 128).
fn check_key(ops: &[&Record]) -> bool {
    let n = ops.len();
    let definite: u128 = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.ended.is_some())
        .fold(0, |mask, (i, _)| mask | (1 << i));
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    let mut stack: Vec<(u128, State)> = vec![(0, None)];
    while let Some((done, state)) = stack.pop() {
        if done & definite == definite {
            return true;
        }
        if !seen.insert((done, state.clone())) {
            continue;
        }
        // The earliest end among operations not yet placed: nothing that began after it may
        // be placed before it.
        let horizon = (0..n)
            .filter(|i| done & (1 << i) == 0)
            .filter_map(|i| ops[i].ended)
            .min()
            .unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if done & (1 << i) != 0 || op.began > horizon {
                continue;
            }
            if let Some(next) = step(&state, op) {
                stack.push((done | (1 << i), next));
            }
        }
    }
    false
}

/// Checks a whole history, key by key. Reads without an answer carry no information and are
/// left out. Keys with more than 128 operations are an error of the caller's test design.
pub fn check(history: &[Record]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for op in history {
        if op.call == Call::Get && op.outcome == Outcome::Unknown {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| op.began);
        if ops.len() > 128 || !check_key(&ops) {
            return Err(Violation {
                key: key.to_owned(),
                ops: ops.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, outcome: Outcome, began: u64, ended: Option<u64>) -> Record {
        Record {
            key: "k".into(),
            call,
            outcome,
            began,
            ended,
        }
    }

    fn create(v: &str) -> Call {
        Call::Create { value: v.into() }
    }

    fn read(rev: u64, v: &str) -> Outcome {
        Outcome::Read(Some((rev, v.into())))
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = vec![
            op(create("a"), Outcome::Written { rev: 1 }, 0, Some(1)),
            op(Call::Get, read(1, "a"), 2, Some(3)),
            op(
                Call::Update {
                    value: "b".into(),
                    expected: Some(1),
                },
                Outcome::Written { rev: 2 },
                4,
                Some(5),
            ),
            op(
                Call::Delete { expected: Some(1) },
                Outcome::Conflict,
                6,
                Some(7),
            ),
            op(Call::Get, read(2, "b"), 8, Some(9)),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            op(create("a"), Outcome::Written { rev: 1 }, 0, Some(1)),
            op(
                Call::Update {
                    value: "b".into(),
                    expected: None,
                },
                Outcome::Written { rev: 2 },
                2,
                Some(3),
            ),
            op(Call::Get, read(1, "a"), 4, Some(5)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let h = vec![
            op(create("a"), Outcome::Written { rev: 1 }, 0, Some(10)),
            op(Call::Get, Outcome::Read(None), 1, Some(2)),
            op(Call::Get, read(1, "a"), 3, Some(4)),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn an_unanswered_write_may_or_may_not_have_happened() {
        let happened = vec![
            op(create("a"), Outcome::Unknown, 0, None),
            op(Call::Get, read(7, "a"), 5, Some(6)),
        ];
        assert_eq!(check(&happened), Ok(()));
        let not = vec![
            op(create("a"), Outcome::Unknown, 0, None),
            op(Call::Get, Outcome::Read(None), 5, Some(6)),
        ];
        assert_eq!(check(&not), Ok(()));
        // But it can't happen twice, or before it began.
        let before = vec![
            op(Call::Get, read(7, "a"), 0, Some(1)),
            op(create("a"), Outcome::Unknown, 2, None),
        ];
        assert!(check(&before).is_err());
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = vec![
            op(create("a"), Outcome::Written { rev: 1 }, 0, Some(1)),
            op(Call::Get, Outcome::Read(None), 2, Some(3)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_conflict_needs_another_revision() {
        let h = vec![
            op(create("a"), Outcome::Written { rev: 1 }, 0, Some(1)),
            op(
                Call::Update {
                    value: "b".into(),
                    expected: Some(1),
                },
                Outcome::Conflict,
                2,
                Some(3),
            ),
        ];
        assert!(check(&h).is_err());
    }
}
