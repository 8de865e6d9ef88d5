//! Store writes, side by side with etcd 3.4 on the same machine, with the same workload:
//! clients that each put fresh keys with a fixed-size value, one write in flight per client,
//! for a fixed time. Both sides fsync every commit.
//!
//! Each system is driven the way its orchestrator's API server drives it. Kubernetes's API
//! server is a client of etcd's v3 gRPC API, over TCP; Shoal's API server is in the master's
//! process, beside the store, and hands each request to the key's shard actor there (the
//! replica on that master forwards a write to its group's leader when the leader is another
//! master). So by default each Shoal client writes through one master in that master's
//! process, on its runtime (`--shoal-client local`). `--shoal-client wire` measures instead
//! clients from outside, as etcd's are: each with a loopback TCP connection of its own to its
//! master, running where etcd's clients run, on this process's runtime.
//!
//! Shoal: `replicas` masters in this process, each on a runtime of its own, sized as a master
//! process's is (one worker fewer than the machine's cores, at least one: see
//! [`shoal_store::store_workers`]), with its shard groups' logs and state on disk (redb,
//! durable commits), Raft messages and forwarded writes between them over loopback TCP (one
//! connection from each master to each other one), leaderships spread over the masters as the
//! balancer spreads them; the clients spread over the masters. (Three masters sharing one
//! runtime, as this benchmark once ran them, had a pair of workers serve all three, which no
//! three master processes get: three replicas took 8-12% more writes a second from 1 and 16
//! clients that way.)
//!
//! etcd: `replicas` `etcd` processes (Debian's etcd-server 3.4), each client with its own
//! gRPC connection to one member, calling `etcdserverpb.KV/Put`.
//!
//! With several replicas, each Shoal row also says what its writes cost in Raft messages:
//! append messages per write and entries per append, counted by the masters' hosts.
//!
//! Each configuration runs several times, the two systems taking turns, and its row is the
//! run with the median writes/s (with every run's writes/s beside it): the machine's speed
//! drifts by about a tenth from one run to the next, for both systems alike.
//!
//! Before the runs, the machine is looked at ([`machine`]): its processor and cores, and the
//! time its disk takes for one synchronous 4 KiB write where the runs keep their data. Both
//! systems' numbers, and the ratio between them, rest on these, so the report records them.
//!
//! Then, for both with three replicas: the time from killing the master (or member) that
//! leads a key's group to the first acknowledged write of that key's group.

mod etcd;
mod machine;
mod shoal;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::clear_dir;
use etcd::{EtcdClient, start_etcd, stop_etcd};
use shoal::{Client, ClientPath, start_masters, stop_masters};

/// Options of `shoal-bench store`.
#[derive(clap::Args, Clone)]
pub struct Options {
    /// Replica counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replicas: Vec<usize>,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Shoal's shard groups [default: as many as a master on this machine creates a cluster
    /// with: one per worker of its store's runtime, at most 8]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    shards: Option<u32>,
    /// Seconds each configuration runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Runs of each configuration, the two systems taking turns; each row reports the
    /// run with the median writes/s, so that the machine's drift from one run to the next
    /// (about a tenth here) weighs less on the comparison.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Where data directories go (on the disk being measured).
    #[arg(long, default_value = "/var/tmp/shoal-bench-store")]
    dir: PathBuf,
    /// Where the numbers are written.
    #[arg(long, default_value = "bench/results/store.json")]
    out: PathBuf,
    /// How Shoal's clients reach the store: in a master's process, as its API server does,
    /// or over TCP connections of their own.
    #[arg(long, value_enum, default_value_t = ClientPath::Local)]
    shoal_client: ClientPath,
    /// Measure Shoal's rows alone (no etcd, no failover), to compare one build with another.
    #[arg(long)]
    shoal_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn setup(what: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(what.to_string())
}

// ---------------------------------------------------------------------------------------
// The workload.

#[derive(Serialize, Clone)]
struct Row {
    system: String,
    replicas: usize,
    clients: usize,
    writes: u64,
    errors: u64,
    writes_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// Writes/s of every run of this configuration, in the order they ran.
    runs_writes_per_s: Vec<f64>,
    /// The p99 of every run, in the same order: a run's p99 rests on its slowest
    /// hundredth of writes, which a few stalls of the disk make, so it moves from run to run
    /// more than its writes/s does.
    runs_p99_us: Vec<u64>,
    /// Shoal's Raft traffic during the run, all masters together.
    #[serde(skip_serializing_if = "Option::is_none")]
    raft: Option<RaftTraffic>,
}

/// What Shoal's writes cost in Raft messages during a run.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct RaftTraffic {
    #[serde(flatten)]
    counts: shoal_store::raft::Traffic,
    /// Append messages per acknowledged write.
    append_messages_per_write: f64,
    /// Entries per append that carried any.
    entries_per_append: f64,
}

impl RaftTraffic {
    fn of(counts: shoal_store::raft::Traffic, writes: u64) -> RaftTraffic {
        let carrying = counts.appends.saturating_sub(counts.empty_appends);
        RaftTraffic {
            counts,
            append_messages_per_write: counts.append_messages as f64 / writes.max(1) as f64,
            entries_per_append: counts.entries as f64 / carrying.max(1) as f64,
        }
    }
}

/// The run with the median writes/s (the lower middle one of an even count), carrying the
/// writes/s and p99 of all of them.
fn median(mut runs: Vec<Row>) -> Option<Row> {
    let all: Vec<f64> = runs.iter().map(|r| r.writes_per_s).collect();
    let p99s: Vec<u64> = runs.iter().map(|r| r.p99_us).collect();
    runs.sort_by(|a, b| a.writes_per_s.total_cmp(&b.writes_per_s));
    let middle = runs.len().checked_sub(1)? / 2;
    let mut row = runs.swap_remove(middle);
    row.runs_writes_per_s = all;
    row.runs_p99_us = p99s;
    Some(row)
}

/// Runs `clients` loops of `put` for `seconds`; each client `c` uses `put(c, key)` and runs
/// on `runtimes[c % runtimes.len()]` (on the caller's runtime when there are none).
async fn drive<F, Fut>(
    system: &str,
    replicas: usize,
    clients: usize,
    seconds: u64,
    put: F,
    bar: &ProgressBar,
    runtimes: &[tokio::runtime::Handle],
) -> Row
where
    F: Fn(usize, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let put = Arc::new(put);
    // Every client makes one write before the clock starts, so that connections are set up
    // (256 at once can overflow a listener's queue and wait a second for a retry) and the
    // rows measure steady writes alone.
    let ready = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let start = Arc::new(tokio::sync::OnceCell::new());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let put = put.clone();
        let bar = bar.clone();
        let ready = ready.clone();
        let start = start.clone();
        let tag = format!("{system}-{replicas}-{clients}-{}", std::process::id());
        let on = runtimes
            .get(c % runtimes.len().max(1))
            .cloned()
            .unwrap_or_else(tokio::runtime::Handle::current);
        tasks.push(on.spawn(async move {
            let mut hist = histogram();
            let (mut n, mut errors) = (0u64, 0u64);
            let _ = put(c, format!("/bench/{tag}/{c}/warm-up")).await;
            ready.wait().await;
            let end = *start
                .get_or_init(|| async { Instant::now() + Duration::from_secs(seconds) })
                .await;
            while Instant::now() < end {
                let key = format!("/bench/{tag}/{c}/{n}");
                let t = Instant::now();
                match put(c, key).await {
                    Ok(()) => {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                        bar.inc(1);
                    }
                    Err(_) => errors += 1,
                }
                n += 1;
            }
            (hist, n - errors, errors)
        }));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut all = histogram();
    let (mut writes, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((h, w, e)) = t.await {
            let _ = all.add(&h);
            writes += w;
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Row {
        system: system.into(),
        replicas,
        clients,
        writes,
        errors,
        writes_per_s: writes as f64 / elapsed,
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
        max_us: all.max(),
        runs_writes_per_s: Vec::new(),
        runs_p99_us: Vec::new(),
        raft: None,
    }
}

/// Latencies in microseconds, 1 µs to a minute, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .expect("1 µs to 60 s at three significant digits is a valid range")
}

fn value(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| b'a' + (i % 26) as u8).collect()
}

/// How long a client waits for one write after a kill before it tries again, for both
/// systems alike (a client stuck on a dead leader would otherwise measure its own timeout).
const ATTEMPT: Duration = Duration::from_millis(250);

#[derive(Serialize)]
pub struct Failover {
    system: String,
    /// From the kill to the start of the first write that was acknowledged.
    first_write_after_ms: f64,
}

/// Retries a write, `ATTEMPT` at a time, until one is acknowledged: how long after now the
/// acknowledged attempt started. `put(n)` makes the n-th attempt.
async fn first_acknowledged<F, Fut>(put: F) -> Result<Duration, BenchError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let killed = Instant::now();
    for n in 0.. {
        let started = killed.elapsed();
        if let Ok(Ok(())) = tokio::time::timeout(ATTEMPT, put(n)).await {
            return Ok(started);
        }
        if killed.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    Err(setup("no write was acknowledged within 30 s of the kill"))
}

fn fresh_dir(base: &Path, name: &str) -> Result<PathBuf, BenchError> {
    let dir = base.join(name);
    clear_dir(&dir)?;
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// One run of Shoal's side of a configuration.
async fn shoal_row(
    options: &Options,
    replicas: usize,
    clients: usize,
    bar: &ProgressBar,
) -> Result<Row, BenchError> {
    let dir = fresh_dir(&options.dir, &format!("shoal-{replicas}-{clients}"))?;
    let masters = start_masters(replicas, options.shards(), &dir).await?;
    // Client c writes through master c mod n: in the process, on that master's runtime (see
    // `drive`); or from outside, over a connection of its own, on this process's runtime,
    // where etcd's clients run.
    let conns: Vec<Client> = (0..clients)
        .map(|c| {
            Client::of(
                &masters[c % masters.len()],
                options.shoal_client,
                options.shards(),
            )
        })
        .collect();
    let runtimes: Vec<_> = match options.shoal_client {
        ClientPath::Local => masters.iter().map(|m| m.handle()).collect(),
        ClientPath::Wire => Vec::new(),
    };
    let v = value(options.value_bytes);
    let traffic = |masters: &[shoal::BenchMaster]| {
        masters
            .iter()
            .fold(shoal_store::raft::Traffic::default(), |sum, m| {
                sum.plus(&m.traffic())
            })
    };
    let before = traffic(&masters);
    let mut row = drive(
        "shoal",
        replicas,
        clients,
        options.seconds,
        move |c, key| {
            let client = conns[c].clone();
            let v = v.clone();
            async move { client.put(key, v).await }
        },
        bar,
        &runtimes,
    )
    .await;
    // The warm-up writes are in it too: one per client.
    row.raft = Some(RaftTraffic::of(
        traffic(&masters).since(&before),
        row.writes + clients as u64,
    ));
    stop_masters(masters).await;
    clear_dir(&dir)?;
    Ok(row)
}

/// One run of etcd's side of a configuration.
async fn etcd_row(
    options: &Options,
    replicas: usize,
    clients: usize,
    bar: &ProgressBar,
) -> Result<Row, BenchError> {
    let dir = fresh_dir(&options.dir, &format!("etcd-{replicas}-{clients}"))?;
    let mut members = start_etcd(replicas, &options.etcd, &dir).await?;
    let mut conns = Vec::new();
    for c in 0..clients {
        let m = &members[c % members.len()];
        conns.push(EtcdClient::connect(m.client_addr).await.map_err(setup)?);
    }
    let v = value(options.value_bytes);
    let row = drive(
        "etcd 3.4",
        replicas,
        clients,
        options.seconds,
        move |c, key| {
            let conn = conns[c].clone();
            let v = v.clone();
            async move { conn.put(key, v).await }
        },
        bar,
        &[],
    )
    .await;
    stop_etcd(&mut members);
    clear_dir(&dir)?;
    Ok(row)
}

impl Options {
    /// The shard groups Shoal's masters get: the flag, or a new master's default.
    fn shards(&self) -> u32 {
        self.shards
            .unwrap_or_else(shoal_store::machine_default_shards)
    }
}

pub async fn run(options: Options) -> Result<(), BenchError> {
    let value_bytes = options.value_bytes;
    let systems = if options.shoal_only { 1 } else { 2 };
    let configs = options.replicas.len() * options.clients.len() * systems * options.runs as usize;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} writes")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("timing the disk");
    std::fs::create_dir_all(&options.dir)?;
    let machine = machine::probe(&options.dir)?;
    let mut rows = Vec::new();
    let mut done = 0;
    // Counts the run about to start and shows it on the progress line.
    let mut next_run = |system: &str, replicas: usize, clients: usize| {
        done += 1;
        bar.set_position(0);
        bar.set_message(format!(
            "[{done}/{configs}] {system}, {replicas} replica(s), {clients} client(s)"
        ));
    };
    for &replicas in &options.replicas {
        for &clients in &options.clients {
            let (mut shoal_runs, mut etcd_runs) = (Vec::new(), Vec::new());
            for _ in 0..options.runs {
                next_run("shoal", replicas, clients);
                shoal_runs.push(shoal_row(&options, replicas, clients, &bar).await?);
                if options.shoal_only {
                    continue;
                }
                next_run("etcd", replicas, clients);
                etcd_runs.push(etcd_row(&options, replicas, clients, &bar).await?);
            }
            rows.extend(median(shoal_runs));
            rows.extend(median(etcd_runs));
        }
    }
    let mut failovers = Vec::new();
    if !options.shoal_only {
        bar.set_message("failover: shoal");
        let dir = fresh_dir(&options.dir, "shoal-failover")?;
        failovers.push(
            shoal::failover(options.shards(), options.shoal_client, &dir, value_bytes).await?,
        );
        bar.set_message("failover: etcd");
        let dir = fresh_dir(&options.dir, "etcd-failover")?;
        failovers.push(etcd::failover(&options.etcd, &dir, value_bytes).await?);
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&options.dir);

    println!(
        "store writes, {value_bytes}-byte values, fsync on, {} s per run, Shoal with {} shards \
         and {} clients; each row the median of {} runs (the systems taking turns)",
        options.seconds,
        options.shards(),
        match options.shoal_client {
            ClientPath::Local => "in-process",
            ClientPath::Wire => "TCP",
        },
        options.runs
    );
    println!("{}", machine.describe());
    println!(
        "{:<10} {:>8} {:>8} {:>12} {:>10} {:>10} {:>10} {:>7}",
        "system", "replicas", "clients", "writes/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for r in &rows {
        println!(
            "{:<10} {:>8} {:>8} {:>12.0} {:>10.2} {:>10.2} {:>10.2} {:>7}",
            r.system,
            r.replicas,
            r.clients,
            r.writes_per_s,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.max_us as f64 / 1000.0,
            r.errors
        );
    }
    let runs = |row: &Row| {
        row.runs_writes_per_s
            .iter()
            .zip(&row.runs_p99_us)
            .map(|(w, p99)| format!("{w:.0} ({:.1} ms)", *p99 as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in rows.iter().filter(|r| r.replicas > 1) {
        if let Some(raft) = &r.raft {
            println!(
                "Shoal, {} replicas, {:>3} client(s): {:.2} append messages a write, {:.1} entries an \
                 append ({} of {} appends carried no entry)",
                r.replicas,
                r.clients,
                raft.append_messages_per_write,
                raft.entries_per_append,
                raft.counts.empty_appends,
                raft.counts.appends,
            );
        }
    }
    for pair in rows.chunks(systems) {
        if let [shoal, etcd] = pair {
            println!(
                "{} replica(s), {:>3} client(s): Shoal {:.2}x etcd's writes/s, p99 {:.2} ms vs {:.2} ms \
                 (runs, writes/s and p99: Shoal {}; etcd {})",
                shoal.replicas,
                shoal.clients,
                shoal.writes_per_s / etcd.writes_per_s.max(f64::MIN_POSITIVE),
                shoal.p99_us as f64 / 1000.0,
                etcd.p99_us as f64 / 1000.0,
                runs(shoal),
                runs(etcd),
            );
        }
    }
    for f in &failovers {
        println!(
            "{}: first acknowledged write {:.0} ms after the group leader's process was killed",
            f.system, f.first_write_after_ms
        );
    }
    let report = serde_json::json!({
        "benchmark": "store-writes",
        "value_bytes": value_bytes,
        "seconds_per_run": options.seconds,
        "runs_per_row": options.runs,
        "shoal_shards": options.shards(),
        "shoal_client": options.shoal_client,
        "machine": machine,
        "results": rows,
        "failover": failovers,
    });
    crate::write_report(&options.out, &report)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_at(writes_per_s: f64) -> Row {
        Row {
            system: "shoal".into(),
            replicas: 1,
            clients: 1,
            writes: 0,
            errors: 0,
            writes_per_s,
            p50_us: writes_per_s as u64,
            p99_us: 10 * writes_per_s as u64,
            max_us: 0,
            runs_writes_per_s: Vec::new(),
            runs_p99_us: Vec::new(),
            raft: None,
        }
    }

    #[test]
    fn raft_traffic_is_counted_per_write_and_per_carrying_append() {
        let counts = shoal_store::raft::Traffic {
            append_messages: 5,
            appends: 10,
            empty_appends: 2,
            entries: 16,
            client_messages: 3,
            client_requests: 4,
        };
        let t = RaftTraffic::of(counts, 4);
        assert_eq!(t.append_messages_per_write, 1.25);
        assert_eq!(
            t.entries_per_append, 2.0,
            "16 entries over the 8 appends that had any"
        );
        let none = RaftTraffic::of(shoal_store::raft::Traffic::default(), 0);
        assert_eq!(
            (none.append_messages_per_write, none.entries_per_append),
            (0.0, 0.0)
        );
    }

    #[test]
    fn a_row_is_its_median_run_with_every_run_beside_it() {
        let row = median(vec![run_at(3.0), run_at(1.0), run_at(2.0)]).expect("a row");
        assert_eq!(row.p50_us, 2, "the median run's own numbers");
        assert_eq!(
            row.runs_writes_per_s,
            vec![3.0, 1.0, 2.0],
            "in the order they ran"
        );
        assert_eq!(
            row.runs_p99_us,
            vec![30, 10, 20],
            "each run's p99 beside it"
        );
        let even = median(vec![run_at(4.0), run_at(1.0), run_at(3.0), run_at(2.0)]).expect("a row");
        assert_eq!(even.p50_us, 2, "the lower middle of an even count");
        assert!(median(Vec::new()).is_none());
    }
}
