//! The simulated control plane: masters whose shard replicas talk over an in-memory wire
//! with seeded delays, drops and partitions, and that crash and restart on command.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_store::raft::{
    Io, LogStore, Member, RaftConfig, RaftHost, Replica, Router, Wire, WireFuture,
};
use shoal_store::{ShardArgs, ShardDb, start_replica};

pub const MASTERS: u64 = 3;
pub const GROUPS: u32 = 2;

pub fn name(id: u64) -> String {
    format!("m{id}")
}

/// The simulated network: who is up, which links are cut, and the seeded randomness of
/// delays and drops.
pub struct Net {
    pub hosts: Mutex<HashMap<String, RaftHost>>,
    pub cut: Mutex<HashSet<String>>,
    /// Links cut between two masters (each pair in name order), the rest of their links up.
    pub links: Mutex<HashSet<(String, String)>>,
    /// Masters gone without closing their connections (a process killed, its peers' QUIC
    /// connections still open): a call to one is never answered, and waits out its timeout.
    pub silent: Mutex<HashSet<String>>,
    pub rng: Mutex<StdRng>,
}

impl Net {
    pub fn host(&self, name: &str) -> Option<RaftHost> {
        self.hosts.lock().expect("hosts").get(name).cloned()
    }

    pub fn blocked(&self, a: &str, b: &str) -> bool {
        let cut = self.cut.lock().expect("cut");
        cut.contains(a)
            || cut.contains(b)
            || self.links.lock().expect("links").contains(&link(a, b))
    }

    pub fn draw(&self) -> (Duration, bool) {
        let mut rng = self.rng.lock().expect("rng");
        let delay = Duration::from_micros(rng.random_range(200..8000));
        let drop = rng.random_bool(0.01);
        (delay, drop)
    }
}

/// The link between two masters, however named.
pub fn link(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

pub struct SimWire {
    pub from: String,
    pub net: Arc<Net>,
}

impl Wire for SimWire {
    fn call(&self, to: &Member, request: Vec<u8>, timeout: Duration) -> WireFuture {
        let from = self.from.clone();
        let to = to.name.clone();
        let net = self.net.clone();
        Box::pin(async move {
            let exchange = async {
                if net.silent.lock().expect("silent").contains(&to) {
                    std::future::pending::<()>().await;
                }
                let (delay, drop) = net.draw();
                tokio::time::sleep(delay).await;
                if drop || net.blocked(&from, &to) || net.host(&from).is_none() {
                    return Err("unreachable".to_owned());
                }
                let host = net.host(&to).ok_or("down")?;
                let reply = host.handle(&request).await?;
                let (delay, drop) = net.draw();
                tokio::time::sleep(delay).await;
                if drop || net.blocked(&from, &to) {
                    return Err("reply lost".to_owned());
                }
                Ok(reply)
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        })
    }
}

/// A master's durable files, which survive its crashes.
pub struct Master {
    pub id: u64,
    pub files: Vec<(ShardDb, LogStore)>,
    pub incarnation: u64,
}

pub fn config() -> Arc<RaftConfig> {
    let config = RaftConfig {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        // Small, so that snapshots, purges and snapshot transfers happen in a short run.
        snapshot_policy: shoal_store::raft::SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 5,
        purge_batch_size: 1,
        // The rest as the masters have it.
        ..(*shoal_store::raft_config().expect("the masters' config")).clone()
    };
    Arc::new(config.validate().expect("config"))
}

pub struct Sim {
    pub seed: u64,
    pub net: Arc<Net>,
    pub masters: Mutex<Vec<Master>>,
    pub clock: Mutex<u64>,
}

impl Sim {
    pub fn tick(&self) -> u64 {
        let mut c = self.clock.lock().expect("clock");
        *c += 1;
        *c
    }

    pub fn members() -> BTreeMap<u64, Member> {
        (1..=MASTERS)
            .map(|id| {
                (
                    id,
                    Member {
                        name: name(id),
                        addr: format!("sim:{id}"),
                        api: String::new(),
                    },
                )
            })
            .collect()
    }

    pub async fn start(&self, index: usize) {
        let (id, files, incarnation) = {
            let mut masters = self.masters.lock().expect("masters");
            let m = &mut masters[index];
            m.incarnation += 1;
            (m.id, m.files.clone(), m.incarnation)
        };
        let host = RaftHost::new();
        let router = Router::new(Arc::new(SimWire {
            from: name(id),
            net: self.net.clone(),
        }));
        for (group, (db, log)) in files.into_iter().enumerate() {
            let args = ShardArgs {
                group: group as u32,
                id,
                member: Sim::members()[&id].clone(),
                db,
                log,
                router: router.clone(),
                host: host.clone(),
                config: config(),
                history_limit: 100_000,
                watch_queue: 100_000,
                bootstrap: false,
                io: Io::Inline,
                seed: self.seed ^ (id << 40) ^ ((group as u64) << 32) ^ incarnation,
            };
            start_replica(&args).await.expect("replica starts");
        }
        self.net.hosts.lock().expect("hosts").insert(name(id), host);
    }

    pub async fn crash(&self, index: usize) {
        let id = self.masters.lock().expect("masters")[index].id;
        let host = self.net.hosts.lock().expect("hosts").remove(&name(id));
        if let Some(host) = host {
            for (group, replica) in host.all() {
                host.remove(group);
                let _ = replica.raft().shutdown().await;
                replica.machine().hub().close();
            }
        }
    }

    /// Crashes master `index` so that calls to it are never answered, as a killed process's
    /// peers find while their connections to it stay open.
    pub async fn vanish(&self, index: usize) {
        let id = self.masters.lock().expect("masters")[index].id;
        self.net.silent.lock().expect("silent").insert(name(id));
        self.crash(index).await;
    }

    /// Master `id`'s replica of `group`, while it runs.
    pub fn replica(&self, id: u64, group: u32) -> Option<Replica> {
        self.net.host(&name(id)).and_then(|h| h.replica(group))
    }

    pub fn up(&self) -> Vec<u64> {
        let hosts = self.net.hosts.lock().expect("hosts");
        (1..=MASTERS)
            .filter(|id| hosts.contains_key(&name(*id)))
            .collect()
    }
}

/// Starts the masters and initializes every group from the first.
pub async fn boot(seed: u64) -> Result<Arc<Sim>, String> {
    let net = Arc::new(Net {
        hosts: Mutex::new(HashMap::new()),
        cut: Mutex::new(HashSet::new()),
        links: Mutex::new(HashSet::new()),
        silent: Mutex::new(HashSet::new()),
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
    });
    let masters = (1..=MASTERS)
        .map(|id| Master {
            id,
            files: (0..GROUPS)
                .map(|g| (ShardDb::in_memory(g).expect("db"), LogStore::in_memory()))
                .collect(),
            incarnation: 0,
        })
        .collect();
    let sim = Arc::new(Sim {
        seed,
        net,
        masters: Mutex::new(masters),
        clock: Mutex::new(0),
    });
    for i in 0..MASTERS as usize {
        sim.start(i).await;
    }
    let first = sim.net.host(&name(1)).expect("m1");
    for group in 0..GROUPS {
        let replica = first.replica(group).expect("replica");
        replica
            .raft()
            .initialize(Sim::members())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(sim)
}

/// The revision the group's leader has applied, once some replica confirms it leads.
pub async fn leader_revision(sim: &Sim, group: u32) -> Result<u64, String> {
    let leader = leader_of(sim, group).await?;
    sim.replica(leader as u64 + 1, group)
        .map(|replica| replica.machine().hub().published())
        .ok_or_else(|| format!("group {group}'s leader went away"))
}

pub fn runtime(seed: u64) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()))
        .build()
        .map_err(|e| e.to_string())
}

/// The index of the leader of `group` among the running masters, once one confirms it leads.
pub async fn leader_of(sim: &Sim, group: u32) -> Result<usize, String> {
    for _ in 0..300 {
        for (index, id) in (1..=MASTERS).enumerate() {
            let Some(replica) = sim.replica(id, group) else {
                continue;
            };
            if replica
                .raft()
                .ensure_linearizable(shoal_store::raft::ReadPolicy::ReadIndex)
                .await
                .is_ok()
            {
                return Ok(index);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("group {group} found no leader"))
}
