//! How a process that holds a store takes its memory from the kernel.

/// Turns transparent huge pages off for the whole process (`PR_SET_THP_DISABLE`), as the
/// owners of other latency-bound stores advise (Redis, MongoDB). A store's memory grows as it
/// takes writes: the Raft log in memory, the pending batches, redb's pages. With huge pages,
/// the thread that first touches a new 2 MiB region stops while the kernel zeroes all of it
/// (on a virtual machine, while the host backs it too), and the writes that thread was serving
/// wait with it. With them off the same memory comes 4 KiB at a time.
///
/// Measured with `shoal-bench store` (three alternations, 4 s runs), huge pages off against
/// the kernel's `madvise` mode that mimalloc opts into:
/// - 1 replica × 16 clients: p99 1.5–2.1 ms against 2.8–3.2 ms, writes/s level or higher;
/// - 3 replicas × 16 clients: p99 4.0 ms against 7.2 ms, 4–6% more writes/s;
/// - 3 replicas × 256 clients: p99 21–22 ms against 35–36 ms, 7–10% more writes/s.
///
/// Call it first thing in `main`: the flag covers every later fault, of every thread.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    rustix::thread::disable_transparent_huge_pages(true).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_is_left_without_huge_pages() {
        super::disable_transparent_huge_pages().expect("prctl");
        assert!(rustix::thread::transparent_huge_pages_are_disabled().expect("prctl"));
    }
}
