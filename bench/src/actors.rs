//! Actor messaging over three paths with the same messages: in-process, QUIC (Shoal's
//! transport, mutual TLS) and TCP (ractor_cluster's own transport, plain).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, RactorClusterMessage};
use serde::Serialize;
use shoal_transport::pki::{ClusterCa, Usage};
use shoal_transport::{Role, Transport, TransportArgs};

const SINK_GROUP: &str = "bench-sink";
const COOKIE: &str = "shoal-bench";

/// The benchmark's actor: counts data messages, answers pings.
#[derive(RactorClusterMessage)]
pub enum SinkMsg {
    Data(Vec<u8>),
    #[rpc]
    Ping(u64, RpcReplyPort<u64>),
    #[rpc]
    Count(u64, RpcReplyPort<u64>),
}

struct Sink;

impl Actor for Sink {
    type Msg = SinkMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<SinkMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        ractor::pg::join(SINK_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(0)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Data(_) => *count += 1,
            SinkMsg::Ping(n, reply) => {
                let _ = reply.send(n);
            }
            SinkMsg::Count(_, reply) => {
                let _ = reply.send(*count);
            }
        }
        Ok(())
    }
}

/// Options of `shoal-bench actors`.
#[derive(clap::Args, Clone)]
pub struct Options {
    /// One-way messages per path.
    #[arg(long, default_value_t = 300_000)]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Request/response round trips per path.
    #[arg(long, default_value_t = 20_000)]
    round_trips: u64,
    /// Where the numbers are written.
    #[arg(long, default_value = "bench/results/actor-messaging.json")]
    out: PathBuf,
}

/// Options of the far side.
#[derive(clap::Args, Clone)]
pub struct PeerOptions {
    #[arg(long)]
    mode: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    pki: PathBuf,
}

/// Benchmark failures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Setup(e.to_string())
}

#[derive(Serialize, Clone)]
struct PathResult {
    path: String,
    messages: u64,
    payload_bytes: usize,
    one_way_msgs_per_s: f64,
    round_trips: u64,
    rtt_us_p50: u64,
    rtt_us_p99: u64,
    rtt_us_max: u64,
}

fn transport_args(
    pki: &std::path::Path,
    name: &str,
    role: Role,
) -> Result<TransportArgs, BenchError> {
    let ca = ClusterCa::load_or_create(pki).map_err(setup)?;
    let sans = vec![
        shoal_transport::quic::MASTER_SERVER_NAME.to_owned(),
        name.to_owned(),
    ];
    let identity = ca
        .load_or_issue(pki, name, name, &[], &sans, Usage::Peer)
        .map_err(setup)?;
    Ok(TransportArgs {
        name: name.to_owned(),
        identity,
        ca_pem: ca.cert_pem().to_owned(),
        role,
        cookie: COOKIE.into(),
    })
}

/// The far side: a sink reachable over QUIC or TCP. Prints `ready` once listening.
pub async fn peer(options: PeerOptions) -> Result<(), BenchError> {
    let (_sink, _) = Actor::spawn(Some("sink".into()), Sink, ())
        .await
        .map_err(setup)?;
    match options.mode.as_str() {
        "quic" => {
            let listen = SocketAddr::from(([127, 0, 0, 1], options.port));
            let args = transport_args(
                &options.pki,
                "bench-server",
                Role::Master {
                    listen,
                    join: None,
                    raft: None,
                },
            )?;
            Actor::spawn(Some("transport".into()), Transport, args)
                .await
                .map_err(setup)?;
        }
        "tcp" => {
            let server = NodeServer::new(
                options.port,
                COOKIE.into(),
                "bench-server".into(),
                "localhost".into(),
                None,
                None,
            )
            .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]));
            Actor::spawn(None, server, ()).await.map_err(setup)?;
        }
        other => return Err(BenchError::Setup(format!("unknown mode {other}"))),
    }
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}

/// The far side's process; killed by PID when dropped.
struct PeerProcess(Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer(mode: &str, port: u16, pki: &std::path::Path) -> Result<PeerProcess, BenchError> {
    let exe = std::env::current_exe().map_err(setup)?;
    let mut child = Command::new(exe)
        .args([
            "actors-peer",
            "--mode",
            mode,
            "--port",
            &port.to_string(),
            "--pki",
            &pki.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(setup)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("no stdout".into()))?;
    let process = PeerProcess(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(setup)?;
    if line.trim() != "ready" {
        return Err(BenchError::Setup(format!(
            "the peer did not start: {line:?}"
        )));
    }
    Ok(process)
}

async fn remote_sink(deadline: Duration) -> Result<ActorRef<SinkMsg>, BenchError> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(cell) = ractor::pg::get_members(&SINK_GROUP.to_owned())
            .into_iter()
            .find(|c| !c.get_id().is_local())
        {
            return Ok(ActorRef::from(cell));
        }
        if Instant::now() > until {
            return Err(BenchError::Setup("the remote sink never appeared".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn call(
    sink: &ActorRef<SinkMsg>,
    make: impl Fn(RpcReplyPort<u64>) -> SinkMsg,
) -> Result<u64, BenchError> {
    match sink
        .call(make, Some(Duration::from_secs(30)))
        .await
        .map_err(setup)?
    {
        ractor::rpc::CallResult::Success(n) => Ok(n),
        _ => Err(BenchError::Setup("a call failed".into())),
    }
}

async fn measure(
    path: &str,
    sink: &ActorRef<SinkMsg>,
    options: &Options,
    bar: &ProgressBar,
) -> Result<PathResult, BenchError> {
    let base = call(sink, |r| SinkMsg::Count(0, r)).await?;
    bar.set_message(format!("{path}: one-way"));
    let payload = vec![7u8; options.payload];
    let start = Instant::now();
    for i in 0..options.messages {
        sink.cast(SinkMsg::Data(payload.clone())).map_err(setup)?;
        if i % 10_000 == 0 {
            bar.inc(10_000.min(options.messages - i));
            tokio::task::yield_now().await;
        }
    }
    while call(sink, |r| SinkMsg::Count(0, r)).await? < base + options.messages {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let one_way = options.messages as f64 / start.elapsed().as_secs_f64();
    bar.set_message(format!("{path}: round trips"));
    let mut hist = Histogram::<u64>::new(3).map_err(setup)?;
    for i in 0..options.round_trips {
        let t = Instant::now();
        call(sink, |r| SinkMsg::Ping(i, r)).await?;
        hist.record(t.elapsed().as_micros() as u64).map_err(setup)?;
        if i % 1000 == 0 {
            bar.inc(1000);
        }
    }
    Ok(PathResult {
        path: path.to_owned(),
        messages: options.messages,
        payload_bytes: options.payload,
        one_way_msgs_per_s: one_way,
        round_trips: options.round_trips,
        rtt_us_p50: hist.value_at_quantile(0.5),
        rtt_us_p99: hist.value_at_quantile(0.99),
        rtt_us_max: hist.max(),
    })
}

fn free_port() -> Result<u16, BenchError> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(setup)?;
    Ok(sock.local_addr().map_err(setup)?.port())
}

/// Runs every path and prints and saves the table.
pub async fn run(options: Options) -> Result<(), BenchError> {
    let pki = std::env::temp_dir().join(format!("shoal-bench-pki-{}", std::process::id()));
    std::fs::create_dir_all(&pki).map_err(setup)?;
    let per_path = options.messages + options.round_trips;
    let bar = ProgressBar::new(per_path * 3);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").map_err(setup)?);
    let mut results = Vec::new();

    let (local, _) = Actor::spawn(None, Sink, ()).await.map_err(setup)?;
    results.push(measure("in-process", &local, &options, &bar).await?);
    local.stop(None);
    // The local sink left the group; only remote sinks are looked up from here on.

    let quic_port = free_port()?;
    let quic_peer = start_peer("quic", quic_port, &pki)?;
    let masters = vec![SocketAddr::from(([127, 0, 0, 1], quic_port))];
    let (transport, _) = Actor::spawn(
        None,
        Transport,
        transport_args(&pki, "bench-client", Role::Node { masters })?,
    )
    .await
    .map_err(setup)?;
    let sink = remote_sink(Duration::from_secs(10)).await?;
    results.push(measure("QUIC (mTLS)", &sink, &options, &bar).await?);
    transport.stop(None);
    drop(quic_peer);
    let until = Instant::now() + Duration::from_secs(10);
    while ractor::pg::get_members(&SINK_GROUP.to_owned())
        .iter()
        .any(|c| !c.get_id().is_local())
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let tcp_port = free_port()?;
    let tcp_peer = start_peer("tcp", tcp_port, &pki)?;
    let client = NodeServer::new(
        0,
        COOKIE.into(),
        "bench-client".into(),
        "localhost".into(),
        None,
        None,
    )
    .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]));
    let (client_ref, _) = Actor::spawn(None, client, ()).await.map_err(setup)?;
    ractor_cluster::client_connect(&client_ref, ("127.0.0.1", tcp_port))
        .await
        .map_err(setup)?;
    let sink = remote_sink(Duration::from_secs(10)).await?;
    results.push(measure("TCP (ractor_cluster, plain)", &sink, &options, &bar).await?);
    drop(tcp_peer);
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&pki);

    println!(
        "{:<30} {:>16} {:>12} {:>12} {:>12}",
        "path", "one-way msg/s", "RTT p50 µs", "RTT p99 µs", "RTT max µs"
    );
    for r in &results {
        println!(
            "{:<30} {:>16.0} {:>12} {:>12} {:>12}",
            r.path, r.one_way_msgs_per_s, r.rtt_us_p50, r.rtt_us_p99, r.rtt_us_max
        );
    }
    println!(
        "({} messages of {} bytes one way, {} round trips per path)",
        options.messages, options.payload, options.round_trips
    );
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).map_err(setup)?;
    }
    let report = serde_json::json!({"benchmark": "actor-messaging", "results": results});
    std::fs::write(
        &options.out,
        serde_json::to_vec_pretty(&report).map_err(setup)?,
    )
    .map_err(setup)?;
    println!("saved to {}", options.out.display());
    Ok(())
}
