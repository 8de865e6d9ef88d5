//! Store writes, side by side with etcd 3.4 on the same machine, with the same workload:
//! clients that each put fresh keys with a fixed-size value, one write in flight per client,
//! for a fixed time. Both sides fsync every commit and are reached over loopback TCP.
//!
//! Shoal: `replicas` masters in this process, each with its shard groups' logs and state on
//! disk (redb, durable commits), Raft messages between them over loopback TCP, leaderships
//! spread over the masters as the balancer spreads them; each client sends its writes to
//! one master (the key's shard forwards them to the leader when it is elsewhere), as the
//! API server's store calls do.
//!
//! etcd: `replicas` `etcd` processes (Debian's etcd-server 3.4), each client with its own
//! gRPC connection to one member, calling `etcdserverpb.KV/Put`.
//!
//! Then, for both with three replicas: the time from killing the master (or member) that
//! leads a key's group to the first acknowledged write of that key's group.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use shoal_core::shard_for;
use shoal_store::raft::{
    ClientOp, ClientReply, Io, LogStore, Member, RaftHost, RaftRequest, RaftResponse, Router, Wire,
    WireFuture,
};
use shoal_store::{Proposal, ShardArgs, ShardDb, WriteOp, raft_config, start_replica};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Options of `shoal-bench store`.
#[derive(clap::Args, Clone)]
pub struct Options {
    /// Replica counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replicas: Vec<usize>,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Shoal's shard groups (the master's default is 8).
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Seconds each configuration runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
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
// Raft over loopback TCP: one request per connection at a time, connections pooled.

/// Frames: a u32 length, then the bytes. A response's first byte is 0 (bytes follow) or 1
/// (an error message follows).
async fn write_frame(stream: &mut TcpStream, tag: Option<u8>, body: &[u8]) -> std::io::Result<()> {
    let len = body.len() + usize::from(tag.is_some());
    let len = u32::try_from(len).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend(tag);
    out.extend_from_slice(body);
    stream.write_all(&out).await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

#[derive(Clone, Default)]
struct TcpWire {
    pools: Arc<Mutex<HashMap<String, Vec<TcpStream>>>>,
}

impl TcpWire {
    async fn exchange(&self, addr: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        let pooled = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop);
        let mut stream = match pooled {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s
            }
        };
        write_frame(&mut stream, None, request)
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = read_frame(&mut stream).await.map_err(|e| e.to_string())?;
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_owned())
            .or_default()
            .push(stream);
        match reply.first() {
            Some(0) => {
                reply.remove(0);
                Ok(reply)
            }
            Some(_) => Err(String::from_utf8_lossy(&reply[1..]).into_owned()),
            None => Err("an empty frame".into()),
        }
    }
}

impl Wire for TcpWire {
    fn call(&self, to: &Member, request: Vec<u8>, timeout: Duration) -> WireFuture {
        let wire = self.clone();
        let addr = to.addr.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, wire.exchange(&addr, &request))
                .await
                .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
        })
    }
}

/// Serves the host's replicas on `listener` until aborted (dropping the task drops every
/// connection with it).
async fn serve(listener: TcpListener, host: RaftHost) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        connections.spawn(async move {
            while let Ok(request) = read_frame(&mut stream).await {
                let written = match host.handle(&request).await {
                    Ok(reply) => write_frame(&mut stream, Some(0), &reply).await,
                    Err(why) => write_frame(&mut stream, Some(1), why.as_bytes()).await,
                };
                if written.is_err() {
                    break;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

// ---------------------------------------------------------------------------------------
// Shoal masters in this process.

struct BenchMaster {
    id: u64,
    member: Member,
    host: RaftHost,
    server: JoinHandle<()>,
}

async fn start_masters(n: usize, shards: u32, dir: &Path) -> Result<Vec<BenchMaster>, BenchError> {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for i in 0..n {
        let listener = TcpListener::bind(format!("127.0.0.{}:0", 41 + i)).await?;
        let member = Member {
            name: format!("m{}", i + 1),
            addr: listener.local_addr()?.to_string(),
            api: String::new(),
        };
        members.insert(i as u64 + 1, member);
        listeners.push(listener);
    }
    let config = raft_config().map_err(setup)?;
    let mut masters = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let member = members[&id].clone();
        let host = RaftHost::new();
        let router = Router::new(Arc::new(TcpWire::default()));
        for (peer, m) in &members {
            router.learn(*peer, m.clone());
        }
        let data = dir.join(&member.name);
        std::fs::create_dir_all(&data)?;
        for group in 0..shards {
            let args = ShardArgs {
                group,
                id,
                member: member.clone(),
                db: ShardDb::open(&data.join(format!("shard-{group}.redb")), group)
                    .map_err(setup)?,
                log: LogStore::open(&data.join(format!("shard-{group}.raft.redb")))
                    .map_err(setup)?,
                router: router.clone(),
                host: host.clone(),
                config: config.clone(),
                history_limit: 10_000,
                watch_queue: 1024,
                bootstrap: false,
                io: Io::Blocking,
                seed: rand::random(),
            };
            start_replica(&args).await.map_err(setup)?;
        }
        let server = tokio::spawn(serve(listener, host.clone()));
        masters.push(BenchMaster {
            id,
            member,
            host,
            server,
        });
    }
    for group in 0..shards {
        let replica = masters[0]
            .host
            .replica(group)
            .ok_or_else(|| setup("no replica"))?;
        replica
            .raft()
            .initialize(members.clone())
            .await
            .map_err(setup)?;
    }
    // Spread the leaderships as the balancer does: group g led by master g mod n.
    for group in 0..shards {
        let target = &masters[group as usize % n];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = leader_of(&masters, group).await;
            if leader == Some(target.id) {
                break;
            }
            if Instant::now() > deadline {
                return Err(setup(format!(
                    "group {group} never settled on m{}",
                    target.id
                )));
            }
            if let Some(current) = leader.and_then(|l| masters.iter().find(|m| m.id == l))
                && let Some(replica) = current.host.replica(group)
            {
                let _ = replica.raft().trigger().transfer_leader(target.id).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(masters)
}

/// The master that leads `group`, if one confirms it.
async fn leader_of(masters: &[BenchMaster], group: u32) -> Option<u64> {
    for m in masters {
        let replica = m.host.replica(group)?;
        if replica
            .raft()
            .ensure_linearizable(shoal_store::raft::ReadPolicy::ReadIndex)
            .await
            .is_ok()
        {
            return Some(m.id);
        }
    }
    None
}

async fn crash(master: &BenchMaster) {
    master.server.abort();
    for (group, replica) in master.host.all() {
        master.host.remove(group);
        let _ = replica.raft().shutdown().await;
    }
}

async fn stop_masters(masters: Vec<BenchMaster>) {
    for m in &masters {
        crash(m).await;
    }
}

/// A Shoal store client: writes go to one master over TCP, as `RaftRequest::Client`.
#[derive(Clone)]
struct ShoalClient {
    router: Router,
    shards: u32,
}

impl ShoalClient {
    async fn put(&self, to: &Member, key: String, value: Vec<u8>) -> Result<(), String> {
        let request = RaftRequest::Client {
            group: shard_for(&key, self.shards),
            op: ClientOp::Write(Proposal::write(WriteOp::Create { key, value })),
            hops: 2,
        };
        match self
            .router
            .send(to, &request, Duration::from_secs(5))
            .await?
        {
            RaftResponse::Client(ClientReply::Write(Ok(_))) => Ok(()),
            RaftResponse::Client(ClientReply::Write(Err(e))) => Err(e.to_string()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// etcd through its v3 gRPC API. The two calls used are declared here with prost's derive.

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(uint64, tag = "4")]
    leader: u64,
}

#[derive(Clone)]
struct EtcdClient {
    channel: tonic::transport::Channel,
}

impl EtcdClient {
    async fn connect(addr: SocketAddr) -> Result<EtcdClient, String> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(EtcdClient { channel })
    }

    async fn unary<Req, Resp>(&self, path: &'static str, request: Req) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| e.to_string())?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| e.message().to_owned())
    }

    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.unary::<PutRequest, PutResponse>(
            "/etcdserverpb.KV/Put",
            PutRequest {
                key: key.into_bytes(),
                value,
            },
        )
        .await
        .map(|_| ())
    }

    /// (this member's id, the leader's id)
    async fn status(&self) -> Result<(u64, u64), String> {
        let status: StatusResponse = self
            .unary("/etcdserverpb.Maintenance/Status", StatusRequest {})
            .await?;
        Ok((status.header.map_or(0, |h| h.member_id), status.leader))
    }
}

struct EtcdMember {
    client_addr: SocketAddr,
    child: Child,
}

fn free_port(ip: &str) -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind(format!("{ip}:0"))?
        .local_addr()?
        .port())
}

async fn start_etcd(n: usize, etcd: &Path, dir: &Path) -> Result<Vec<EtcdMember>, BenchError> {
    let mut specs = Vec::new();
    for i in 0..n {
        let ip = format!("127.0.0.{}", 51 + i);
        let client = free_port(&ip)?;
        let peer = free_port(&ip)?;
        specs.push((format!("e{}", i + 1), ip, client, peer));
    }
    let cluster: Vec<String> = specs
        .iter()
        .map(|(name, ip, _, peer)| format!("{name}=http://{ip}:{peer}"))
        .collect();
    let mut members = Vec::new();
    for (name, ip, client, peer) in &specs {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(etcd)
            .args(["--name", name])
            .args(["--data-dir", &dir.join(name).display().to_string()])
            .args(["--listen-client-urls", &format!("http://{ip}:{client}")])
            .args(["--advertise-client-urls", &format!("http://{ip}:{client}")])
            .args(["--listen-peer-urls", &format!("http://{ip}:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:{peer}"),
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "shoal-bench"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| setup(format!("starting {}: {e}", etcd.display())))?;
        members.push(EtcdMember {
            client_addr: format!("{ip}:{client}")
                .parse()
                .map_err(|e| setup(format!("{e}")))?,
            child,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in &members {
        loop {
            let ready = match EtcdClient::connect(m.client_addr).await {
                Ok(c) => c.put("/bench/ready".into(), b"1".to_vec()).await.is_ok(),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(setup(format!(
                    "etcd at {} never became ready",
                    m.client_addr
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(members)
}

fn stop_etcd(members: &mut [EtcdMember]) {
    for m in members {
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
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
}

/// Runs `clients` loops of `put` for `seconds`; each client `c` uses `put(c, key)`.
async fn drive<F, Fut>(
    system: &str,
    replicas: usize,
    clients: usize,
    seconds: u64,
    put: F,
    bar: &ProgressBar,
) -> Row
where
    F: Fn(usize, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let put = Arc::new(put);
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let put = put.clone();
        let bar = bar.clone();
        let tag = format!("{system}-{replicas}-{clients}-{}", std::process::id());
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut n, mut errors) = (0u64, 0u64);
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
struct Failover {
    system: String,
    /// From the kill to the start of the first write that was acknowledged.
    first_write_after_ms: f64,
}

async fn shoal_failover(
    shards: u32,
    dir: &Path,
    value_bytes: usize,
) -> Result<Failover, BenchError> {
    let masters = start_masters(3, shards, dir).await?;
    let client = ShoalClient {
        router: Router::new(Arc::new(TcpWire::default())),
        shards,
    };
    // A key of group 0, which master 1 leads.
    let key_in_group = |n: usize| {
        (0..)
            .map(|i| format!("/bench/failover/{n}/{i}"))
            .find(|k| shard_for(k, shards) == 0)
            .unwrap_or_default()
    };
    let leader = leader_of(&masters, 0)
        .await
        .ok_or_else(|| setup("group 0 has no leader"))?;
    let victim = masters
        .iter()
        .position(|m| m.id == leader)
        .ok_or_else(|| setup("no such master"))?;
    let via = masters[(victim + 1) % 3].member.clone();
    client
        .put(&via, key_in_group(0), value(value_bytes))
        .await
        .map_err(setup)?;
    crash(&masters[victim]).await;
    let killed = Instant::now();
    let mut n = 1;
    let took = loop {
        let started = killed.elapsed();
        let attempt = client.put(&via, key_in_group(n), value(value_bytes));
        if let Ok(Ok(())) = tokio::time::timeout(ATTEMPT, attempt).await {
            break started;
        }
        n += 1;
        if killed.elapsed() > Duration::from_secs(30) {
            return Err(setup("no write was acknowledged within 30 s of the kill"));
        }
    };
    stop_masters(masters).await;
    Ok(Failover {
        system: "shoal".into(),
        first_write_after_ms: took.as_secs_f64() * 1000.0,
    })
}

async fn etcd_failover(
    etcd: &Path,
    dir: &Path,
    value_bytes: usize,
) -> Result<Failover, BenchError> {
    let mut members = start_etcd(3, etcd, dir).await?;
    let mut ids = Vec::new();
    let mut leader = 0;
    for m in &members {
        let client = EtcdClient::connect(m.client_addr).await.map_err(setup)?;
        let (id, lead) = client.status().await.map_err(setup)?;
        ids.push(id);
        leader = lead;
    }
    let victim = ids
        .iter()
        .position(|id| *id == leader)
        .ok_or_else(|| setup("no etcd member leads"))?;
    let via = EtcdClient::connect(members[(victim + 1) % 3].client_addr)
        .await
        .map_err(setup)?;
    let _ = members[victim].child.kill();
    let killed = Instant::now();
    let mut n = 0;
    let took = loop {
        let started = killed.elapsed();
        let attempt = via.put(format!("/bench/failover/{n}"), value(value_bytes));
        if let Ok(Ok(())) = tokio::time::timeout(ATTEMPT, attempt).await {
            break started;
        }
        n += 1;
        if killed.elapsed() > Duration::from_secs(30) {
            stop_etcd(&mut members);
            return Err(setup("etcd acknowledged no write within 30 s of the kill"));
        }
    };
    stop_etcd(&mut members);
    Ok(Failover {
        system: "etcd 3.4".into(),
        first_write_after_ms: took.as_secs_f64() * 1000.0,
    })
}

fn fresh_dir(base: &Path, name: &str) -> Result<PathBuf, BenchError> {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub async fn run(options: Options) -> Result<(), BenchError> {
    let value_bytes = options.value_bytes;
    let configs = options.replicas.len() * options.clients.len() * 2;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} writes")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut rows = Vec::new();
    let mut done = 0;
    for &replicas in &options.replicas {
        for &clients in &options.clients {
            done += 1;
            bar.set_position(0);
            bar.set_message(format!(
                "[{done}/{configs}] shoal, {replicas} replica(s), {clients} client(s)"
            ));
            let dir = fresh_dir(&options.dir, &format!("shoal-{replicas}-{clients}"))?;
            let masters = start_masters(replicas, options.shards, &dir).await?;
            let client = ShoalClient {
                router: Router::new(Arc::new(TcpWire::default())),
                shards: options.shards,
            };
            let targets: Vec<Member> = masters.iter().map(|m| m.member.clone()).collect();
            let v = value(value_bytes);
            let row = drive(
                "shoal",
                replicas,
                clients,
                options.seconds,
                move |c, key| {
                    let client = client.clone();
                    let to = targets[c % targets.len()].clone();
                    let v = v.clone();
                    async move { client.put(&to, key, v).await }
                },
                &bar,
            )
            .await;
            stop_masters(masters).await;
            rows.push(row);

            done += 1;
            bar.set_position(0);
            bar.set_message(format!(
                "[{done}/{configs}] etcd, {replicas} replica(s), {clients} client(s)"
            ));
            let dir = fresh_dir(&options.dir, &format!("etcd-{replicas}-{clients}"))?;
            let mut members = start_etcd(replicas, &options.etcd, &dir).await?;
            let mut conns = Vec::new();
            for c in 0..clients {
                let m = &members[c % members.len()];
                conns.push(EtcdClient::connect(m.client_addr).await.map_err(setup)?);
            }
            let v = value(value_bytes);
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
                &bar,
            )
            .await;
            stop_etcd(&mut members);
            rows.push(row);
        }
    }
    bar.set_message("failover: shoal");
    let failover_shoal = shoal_failover(
        options.shards,
        &fresh_dir(&options.dir, "shoal-failover")?,
        value_bytes,
    )
    .await?;
    bar.set_message("failover: etcd");
    let failover_etcd = etcd_failover(
        &options.etcd,
        &fresh_dir(&options.dir, "etcd-failover")?,
        value_bytes,
    )
    .await?;
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&options.dir);

    println!(
        "store writes, {value_bytes}-byte values, fsync on, {} s per row, Shoal with {} shards",
        options.seconds, options.shards
    );
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
    for pair in rows.chunks(2) {
        if let [shoal, etcd] = pair {
            println!(
                "{} replica(s), {:>3} client(s): Shoal {:.2}x etcd's writes/s, p99 {:.2} ms vs {:.2} ms",
                shoal.replicas,
                shoal.clients,
                shoal.writes_per_s / etcd.writes_per_s.max(f64::MIN_POSITIVE),
                shoal.p99_us as f64 / 1000.0,
                etcd.p99_us as f64 / 1000.0
            );
        }
    }
    for f in [&failover_shoal, &failover_etcd] {
        println!(
            "{}: first acknowledged write {:.0} ms after the group leader's process was killed",
            f.system, f.first_write_after_ms
        );
    }
    let report = serde_json::json!({
        "benchmark": "store-writes",
        "value_bytes": value_bytes,
        "seconds_per_row": options.seconds,
        "shoal_shards": options.shards,
        "results": rows,
        "failover": [failover_shoal, failover_etcd],
    });
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &options.out,
        serde_json::to_vec_pretty(&report).map_err(setup)?,
    )?;
    println!("written to {}", options.out.display());
    Ok(())
}
