//! `shoal-bench`: Shoal's benchmarks. Each prints a table and writes its numbers to
//! `bench/results/` for the report.
//!
//! `shoal-bench actors` measures actor messaging — one-way throughput and request/response
//! round trips — in one process, between two processes over Shoal's QUIC transport, and
//! between two processes over ractor_cluster's own TCP transport, side by side.
//!
//! `shoal-bench store` measures store writes (fsync on) with 1 and 3 replicas and 1, 16 and
//! 256 clients, side by side with etcd 3.4 driven the same way through its v3 gRPC API, and
//! the time from killing a group leader's process to the first acknowledged write.
//!
//! `shoal-bench api` measures the Kubernetes API of a `shoal-master` over HTTPS: latency per
//! verb at a write rate, lists of many pods from the watch cache, and the delivery lag of
//! many watchers of one write stream.

mod actors;
mod api;
mod store;

/// The masters' allocator, so that the store is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Writes a benchmark's numbers to `out` (making its directory) and says where.
fn write_report(out: &std::path::Path, report: &serde_json::Value) -> std::io::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(report)?)?;
    println!("written to {}", out.display());
    Ok(())
}

/// Removes a run's data and waits until the file system has committed the removal. On a
/// file system mounted with `discard` (as this machine's is) the freed blocks are discarded
/// on the device when the removal commits: left to the journal's next periodic commit, the
/// discards of a run's segment and WAL files (hundreds of megabytes) landed in whichever run
/// came next and slowed it by up to a third, for either system of the store benchmark.
fn clear_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let parent = dir.parent().unwrap_or(dir);
    let handle = std::fs::File::open(parent)?;
    rustix::fs::syncfs(&handle).map_err(std::io::Error::from)?;
    Ok(())
}

#[derive(Parser)]
#[command(name = "shoal-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Actor messaging: in-process, QUIC and TCP.
    Actors(actors::Options),
    /// Store writes and failover, side by side with etcd.
    Store(store::Options),
    /// The Kubernetes API over HTTPS: verbs at a write rate, big lists, many watchers.
    Api(api::Options),
    /// The far side of a two-process run (started by `actors`).
    #[command(hide = true)]
    ActorsPeer(actors::PeerOptions),
}

#[tokio::main]
async fn main() {
    // openraft warns about every heartbeat to a master the failover run killed on purpose.
    shoal_core::logging::init("warn,openraft=error");
    // As a master process does (its in-process masters stand for master processes).
    if let Err(err) = shoal_store::disable_transparent_huge_pages() {
        tracing::warn!(reason = %err, "transparent huge pages stay on");
    }
    let result = match Cli::parse().command {
        Command::Actors(options) => actors::run(options).await.map_err(|e| e.to_string()),
        Command::ActorsPeer(options) => actors::peer(options).await.map_err(|e| e.to_string()),
        Command::Store(options) => store::run(options).await.map_err(|e| e.to_string()),
        Command::Api(options) => api::run(options).await.map_err(|e| e.to_string()),
    };
    if let Err(err) = result {
        eprintln!("shoal-bench: {err}");
        std::process::exit(1);
    }
}
