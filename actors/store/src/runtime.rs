//! The runtime of a process that holds a store: how many workers it gets.

/// The variable through which tokio's own builder takes a worker count; when it is set, it
/// wins over [`store_workers`].
const WORKERS_VARIABLE: &str = "TOKIO_WORKER_THREADS";

/// Workers for the runtime of a process that holds a store, on a machine with `cores` cores:
/// one fewer than the cores, and at least one.
///
/// The Raft journal's writer is a thread of its own ([`crate::raft::Journal`]). While writes
/// come, it keeps its core: between flushes it looks for the next record rather than sleep
/// (waking a sleeping thread costs more than a flush's worth of latency on some machines),
/// and the kernel completes its flushes beside it. With as many workers as cores, the
/// workers had the other core between them: a worker that woke its sibling to share the
/// work (as tokio's workers do whenever more than one task is ready) found it on the core
/// it was on itself, and each waited for the other in turn.
///
/// Measured with `shoal-bench store` on two cores (4 s runs, three or four alternations, one
/// worker against two):
/// - 1 replica × 1 client: 6,894 / 6,899 / 7,254 writes/s against 6,247 / 6,529 / 6,552;
/// - 3 replicas × 1 client: 3,611 / 3,227 / 3,768 against 3,401 / 3,073 / 3,253;
/// - 3 replicas × 16 clients: 11,214 / 10,800 / 12,461 against 11,308 / 9,491 / 9,788;
/// - 3 replicas × 256 clients: 25,945 / 32,368 / 30,797 against 31,977 / 25,529 / 25,515;
/// - 1 replica × 256 clients, the one that loses: about 45,000 writes/s against 62,000 (p99
///   level or lower): one worker then serves all of the master's connections, while the
///   writer's core is left half idle. A master that must take that many concurrent writes
///   is given more workers with `TOKIO_WORKER_THREADS`.
///
/// The API benchmark (`shoal-bench api`) met its goals either way, with lower p99s for the
/// mixed verbs on one worker.
pub fn store_workers(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// A multi-threaded runtime builder for a process that holds a store: [`store_workers`] of
/// the machine's cores, unless `TOKIO_WORKER_THREADS` says otherwise.
pub fn store_runtime() -> tokio::runtime::Builder {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    sized(cores, std::env::var_os(WORKERS_VARIABLE).is_some())
}

/// The builder for `cores` cores; with `overridden`, tokio takes the count from
/// `TOKIO_WORKER_THREADS` itself.
fn sized(cores: usize, overridden: bool) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if !overridden {
        builder.worker_threads(store_workers(cores));
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::store_workers;

    #[test]
    fn a_core_is_left_to_the_journal_writer_when_there_is_one_to_spare() {
        assert_eq!(store_workers(0), 1);
        assert_eq!(store_workers(1), 1);
        assert_eq!(store_workers(2), 1);
        assert_eq!(store_workers(8), 7);
    }

    #[test]
    fn the_runtime_has_the_workers_it_was_sized_for_and_runs_tasks_and_timers() {
        for (cores, workers) in [(1, 1), (2, 1), (4, 3)] {
            let runtime = super::sized(cores, false).build().expect("a runtime");
            assert_eq!(runtime.metrics().num_workers(), workers, "{cores} cores");
            let answer = runtime.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                tokio::spawn(async { 42 }).await.expect("the task")
            });
            assert_eq!(answer, 42);
        }
    }
}
