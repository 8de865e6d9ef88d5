//! etcd's side: `etcd` processes (Debian's etcd-server 3.4) and a client of its v3 gRPC API.
//! The calls used are declared here with prost's derive, so no protoc is needed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BenchError, Failover, first_acknowledged, setup, value};

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
pub struct EtcdClient {
    channel: tonic::transport::Channel,
}

impl EtcdClient {
    pub async fn connect(addr: SocketAddr) -> Result<EtcdClient, String> {
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

    pub async fn put(&self, key: String, value: Vec<u8>) -> Result<(), String> {
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

pub struct EtcdMember {
    pub client_addr: SocketAddr,
    child: Child,
}

fn free_port(ip: &str) -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind(format!("{ip}:0"))?
        .local_addr()?
        .port())
}

pub async fn start_etcd(n: usize, etcd: &Path, dir: &Path) -> Result<Vec<EtcdMember>, BenchError> {
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

pub fn stop_etcd(members: &mut [EtcdMember]) {
    for m in members {
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
}

/// Kills the leading member of three and times the first write after.
pub async fn failover(etcd: &Path, dir: &Path, value_bytes: usize) -> Result<Failover, BenchError> {
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
    let took =
        first_acknowledged(|n| via.put(format!("/bench/failover/{n}"), value(value_bytes))).await;
    stop_etcd(&mut members);
    Ok(Failover {
        system: "etcd 3.4".into(),
        first_write_after_ms: took?.as_secs_f64() * 1000.0,
    })
}
