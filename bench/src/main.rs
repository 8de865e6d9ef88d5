//! `shoal-bench`: Shoal's benchmarks. Each prints a table and writes its numbers to
//! `bench/results/` for the report.
//!
//! `shoal-bench actors` measures actor messaging — one-way throughput and request/response
//! round trips — in one process, between two processes over Shoal's QUIC transport, and
//! between two processes over ractor_cluster's own TCP transport, side by side.

mod actors;

use clap::{Parser, Subcommand};

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
    /// The far side of a two-process run (started by `actors`).
    #[command(hide = true)]
    ActorsPeer(actors::PeerOptions),
}

#[tokio::main]
async fn main() {
    shoal_core::logging::init("warn");
    let result = match Cli::parse().command {
        Command::Actors(options) => actors::run(options).await,
        Command::ActorsPeer(options) => actors::peer(options).await,
    };
    if let Err(err) = result {
        eprintln!("shoal-bench: {err}");
        std::process::exit(1);
    }
}
