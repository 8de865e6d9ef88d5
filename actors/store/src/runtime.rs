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

/// The most shard groups a new cluster gets by default, on a machine with cores to spare.
pub const MAX_DEFAULT_SHARDS: u32 = 8;

/// The shard groups a cluster created on a machine with `cores` cores gets unless told
/// otherwise: one per worker of the store's runtime ([`store_workers`]), at most
/// [`MAX_DEFAULT_SHARDS`].
///
/// A group is worth its cost where it runs beside the others. Each group replicates on its
/// own: its appends carry only its own writes, and every one of them is a round trip and a
/// wake-up of its Raft core on every replica, so a write load split over more groups than
/// there are workers to run them is split into smaller batches, not run in parallel. On two
/// cores (one worker), with three masters (`shoal-bench store --replicas 3 --clients 1,16
/// --runs 3 --shards S`, etcd 3.4 beside it):
/// - 8 groups: 1.7× etcd's writes/s at 1 client, 1.3-1.6× at 16 (1.6 append messages a
///   write, 1.5 entries an append);
/// - 2 groups: 2.19× and 2.08×;
/// - 1 group: 2.38× and 3.15× (0.24 append messages a write, 8.4 entries an append).
///
/// One replica's rows, and three replicas under 256 clients, came out the same either way.
pub fn default_shards(cores: usize) -> u32 {
    u32::try_from(store_workers(cores))
        .unwrap_or(MAX_DEFAULT_SHARDS)
        .min(MAX_DEFAULT_SHARDS)
}

/// [`default_shards`] for this machine's cores.
pub fn machine_default_shards() -> u32 {
    default_shards(std::thread::available_parallelism().map_or(1, usize::from))
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
    use super::{default_shards, store_workers};

    #[test]
    fn a_new_cluster_gets_a_shard_group_per_store_worker_up_to_eight() {
        assert_eq!(default_shards(1), 1);
        assert_eq!(default_shards(2), 1);
        assert_eq!(default_shards(4), 3);
        assert_eq!(default_shards(9), 8);
        assert_eq!(default_shards(64), 8);
    }

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
