//! The fault-injection seam (DESIGN §3): the one place chaos enters the transport. Tests and
//! operators cut a peer off (partition) or slow its traffic (delay); the transport consults
//! these rules on every dial, accept and write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The faults applied to one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFault {
    /// No connection to or from the peer; an existing one is closed.
    #[serde(default)]
    pub partitioned: bool,
    /// Every write to the peer waits this long first.
    #[serde(default)]
    pub delay_ms: u64,
}

/// Fault rules by peer name.
#[derive(Default)]
pub struct Faults {
    rules: Mutex<HashMap<String, PeerFault>>,
    /// Whether any rule is set: the write path checks this without taking the lock.
    active: AtomicBool,
}

static FAULTS: LazyLock<Faults> = LazyLock::new(Faults::default);

impl Faults {
    /// This process's fault rules.
    pub fn global() -> &'static Faults {
        &FAULTS
    }

    fn rules(&self) -> MutexGuard<'_, HashMap<String, PeerFault>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still valid.
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the faults for `peer`; the default (no fault) clears them.
    pub fn set(&self, peer: &str, fault: PeerFault) {
        let mut rules = self.rules();
        if fault == PeerFault::default() {
            rules.remove(peer);
        } else {
            rules.insert(peer.to_owned(), fault);
        }
        self.active.store(!rules.is_empty(), Ordering::Release);
    }

    /// Whether `peer` is cut off.
    pub fn is_partitioned(&self, peer: &str) -> bool {
        self.active.load(Ordering::Acquire) && self.rules().get(peer).is_some_and(|f| f.partitioned)
    }

    /// The delay on writes to `peer`.
    pub fn delay(&self, peer: &str) -> Duration {
        if !self.active.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        Duration::from_millis(self.rules().get(peer).map_or(0, |f| f.delay_ms))
    }

    /// Every rule in force.
    pub fn snapshot(&self) -> HashMap<String, PeerFault> {
        self.rules().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_no_fault_clears_the_rule() {
        let f = Faults::default();
        f.set(
            "a",
            PeerFault {
                partitioned: true,
                delay_ms: 0,
            },
        );
        assert!(f.is_partitioned("a"));
        f.set(
            "a",
            PeerFault {
                partitioned: false,
                delay_ms: 20,
            },
        );
        assert!(!f.is_partitioned("a"));
        assert_eq!(f.delay("a"), Duration::from_millis(20));
        f.set("a", PeerFault::default());
        assert!(f.snapshot().is_empty());
    }
}
