//! Shoal's side: masters in this process, each with its own runtime (as a master process has)
//! and its shard groups on disk, talking over the TCP wire; clients that each write through
//! one master: in its process, on its runtime, as its API server does, or from outside over
//! a TCP connection of their own.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::shard_for;
use shoal_store::raft::{
    ClientOp, ClientReply, Forward, Io, Journal, Member, RaftHost, RaftRequest, RaftResponse,
    Router,
};
use shoal_store::{
    FORWARD_HOPS, Proposal, ShardArgs, ShardDb, WriteOp, raft_config, start_replica,
};
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use super::wire::{TcpWire, serve};
use super::{BenchError, Failover, first_acknowledged, setup, value};

pub struct BenchMaster {
    id: u64,
    pub member: Member,
    host: RaftHost,
    server: JoinHandle<()>,
    /// The master's own runtime, sized as a master process's is ([`shoal_store::store_runtime`]):
    /// its Raft cores, state machines, lanes and connections run there.
    runtime: Runtime,
}

impl BenchMaster {
    /// The Raft traffic this master has answered.
    pub fn traffic(&self) -> shoal_store::raft::Traffic {
        self.host.traffic()
    }

    /// Where the master's tasks run; its in-process clients run there too, as the API
    /// server's store calls run in its master's process.
    pub fn handle(&self) -> Handle {
        self.runtime.handle().clone()
    }

    /// A client in this master's process, for a store of `shards` shards.
    pub fn local_client(&self, shards: u32) -> LocalClient {
        LocalClient {
            host: self.host.clone(),
            shards,
        }
    }
}

/// How the benchmark's clients reach Shoal's store.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientPath {
    /// In the master's process, as its API server reaches the store: a write goes to the
    /// key's replica on that master, as the shard actor hands it over, and on to the
    /// group's leader over the masters' wire when the leader is another master.
    Local,
    /// From outside, each client with a loopback TCP connection of its own to its master,
    /// which serves the write as it serves one forwarded from another master. The clients
    /// run on the benchmark's own runtime, as etcd's do.
    Wire,
}

/// A client of one master, by either path.
#[derive(Clone)]
pub enum Client {
    Local(LocalClient),
    Wire(WireClient, Member),
}

impl Client {
    /// A client of `master` by `path`, for a store of `shards` shards.
    pub fn of(master: &BenchMaster, path: ClientPath, shards: u32) -> Client {
        match path {
            ClientPath::Local => Client::Local(master.local_client(shards)),
            ClientPath::Wire => Client::Wire(WireClient::new(shards), master.member.clone()),
        }
    }

    pub async fn put(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        match self {
            Client::Local(c) => c.put(key, value).await,
            Client::Wire(c, to) => c.put(to, key, value).await,
        }
    }
}

/// A client in a master's process (see [`ClientPath::Local`]).
#[derive(Clone)]
pub struct LocalClient {
    host: RaftHost,
    shards: u32,
}

impl LocalClient {
    pub async fn put(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        let group = shard_for(&key, self.shards);
        let replica = self
            .host
            .replica(group)
            .ok_or_else(|| format!("this master has no replica of group {group}"))?;
        replica
            .write(
                Proposal::write(WriteOp::Create { key, value }),
                FORWARD_HOPS,
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

pub async fn start_masters(
    n: usize,
    shards: u32,
    dir: &Path,
) -> Result<Vec<BenchMaster>, BenchError> {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for i in 0..n {
        let listener = std::net::TcpListener::bind(format!("127.0.0.{}:0", 41 + i))?;
        listener.set_nonblocking(true)?;
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
        let runtime = shoal_store::store_runtime()
            .thread_name(format!("{}-worker", member.name))
            .build()?;
        let handle = runtime.handle().clone();
        let host = RaftHost::new();
        let router = Router::new(Arc::new(TcpWire::default()));
        for (peer, m) in &members {
            router.learn(*peer, m.clone());
        }
        let data = dir.join(&member.name);
        std::fs::create_dir_all(&data)?;
        let journal = Journal::open(&data.join("journal")).map_err(setup)?;
        for group in 0..shards {
            let args = ShardArgs {
                group,
                id,
                member: member.clone(),
                db: ShardDb::open(&data.join(format!("shard-{group}.redb")), group)
                    .map_err(setup)?,
                log: journal.log(group),
                router: router.clone(),
                host: host.clone(),
                config: config.clone(),
                history_limit: 10_000,
                watch_queue: 1024,
                bootstrap: false,
                io: Io::Blocking,
                seed: rand::random(),
            };
            // On the master's runtime, where its Raft tasks then live.
            handle
                .spawn(async move { start_replica(&args).await.map(drop) })
                .await
                .map_err(setup)?
                .map_err(setup)?;
        }
        // Registered with the master's runtime, which serves its connections.
        let listener = {
            let _in_master = handle.enter();
            TcpListener::from_std(listener)?
        };
        let server = handle.spawn(serve(listener, host.clone()));
        masters.push(BenchMaster {
            id,
            member,
            host,
            server,
            runtime,
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
pub async fn leader_of(masters: &[BenchMaster], group: u32) -> Option<u64> {
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

pub async fn crash(master: &BenchMaster) {
    master.server.abort();
    for (group, replica) in master.host.all() {
        master.host.remove(group);
        let _ = replica.raft().shutdown().await;
    }
}

pub async fn stop_masters(masters: Vec<BenchMaster>) {
    for m in &masters {
        crash(m).await;
    }
    for m in masters {
        // Its tasks are stopped where they stand, as a process's are when it exits; its disk
        // work on the blocking pool is let finish, so that its files are closed when this
        // returns (the run's data is removed next).
        tokio::task::block_in_place(|| m.runtime.shutdown_timeout(Duration::from_secs(10)));
    }
}

/// A client from outside (see [`ClientPath::Wire`]): writes go to one master over TCP, as
/// `RaftRequest::Client`.
#[derive(Clone)]
pub struct WireClient {
    router: Router,
    shards: u32,
}

impl WireClient {
    /// A client with its own connections, for a store of `shards` shards.
    pub fn new(shards: u32) -> WireClient {
        WireClient {
            router: Router::new(Arc::new(TcpWire::default())),
            shards,
        }
    }

    pub async fn put(&self, to: &Member, key: String, value: Vec<u8>) -> Result<(), String> {
        let patience = Duration::from_secs(5);
        let request = RaftRequest::Client(Forward::new(
            shard_for(&key, self.shards),
            ClientOp::Write(Proposal::write(WriteOp::Create { key, value })),
            FORWARD_HOPS,
            patience,
        ));
        match self.router.send(to, &request, patience).await? {
            RaftResponse::Client(ClientReply::Write(Ok(_))) => Ok(()),
            RaftResponse::Client(ClientReply::Write(Err(e))) => Err(e.to_string()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

/// Kills the master leading a key's group (of three) and times the first write after.
pub async fn failover(
    shards: u32,
    path: ClientPath,
    dir: &Path,
    value_bytes: usize,
) -> Result<Failover, BenchError> {
    let masters = start_masters(3, shards, dir).await?;
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
    // Through another master: on its runtime, or from outside on this one.
    let via = &masters[(victim + 1) % 3];
    let client = Client::of(via, path, shards);
    let on = match path {
        ClientPath::Local => via.handle(),
        ClientPath::Wire => Handle::current(),
    };
    let put = |key: String| {
        let client = client.clone();
        let on = on.clone();
        async move {
            on.spawn(async move { client.put(key, value(value_bytes)).await })
                .await
                .map_err(|e| e.to_string())?
        }
    };
    put(key_in_group(0)).await.map_err(setup)?;
    crash(&masters[victim]).await;
    let took = first_acknowledged(|n| put(key_in_group(n + 1))).await;
    stop_masters(masters).await;
    Ok(Failover {
        system: "shoal".into(),
        first_write_after_ms: took?.as_secs_f64() * 1000.0,
    })
}
