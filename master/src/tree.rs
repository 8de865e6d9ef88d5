//! The master's set-up and supervision tree:
//!
//! ```text
//! master (one-for-one)
//! ├─ transport          QUIC endpoint, actor sessions, joins
//! ├─ store (one-for-one) ─ shard-0 … shard-N
//! ├─ apiserver-identity  this master's API address, in a Lease
//! ├─ leader-balancer     spreads shard leaderships over the masters
//! ├─ apiserver
//! ├─ controller-manager-elector ─ (while it holds the lease) node-lifecycle
//! └─ kubelet            with --with-node
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, SpawnErr};
use shoal_apiserver::tls::{Identity, server_config};
use shoal_apiserver::{ApiServer, ApiServerArgs};
use shoal_controllers::apiserver_identity::{ApiServerIdentity, IdentityArgs};
use shoal_controllers::disruption::{Disruption, DisruptionArgs};
use shoal_controllers::event_expiry::{EventExpiry, EventExpiryArgs};
use shoal_controllers::garbage_collector::Resource;
use shoal_controllers::leader::{RaiseError, Singleton};
use shoal_controllers::{
    Elector, ElectorArgs, GarbageCollector, GarbageCollectorArgs, NodeLifecycle, NodeLifecycleArgs,
};
use shoal_core::supervisor::{ChildSpec, RestartIntensity, Supervisor, SupervisorArgs};
use shoal_kubelet::KubeletArgs;
use shoal_kubelet::objects::NodeIdentity;
use shoal_store::raft::balance::{Balancer, BalancerArgs};
use shoal_store::raft::{Io, LogStore, Member, NodeId, RaftHost, Router};
use shoal_store::{Shard, ShardArgs, ShardDb, Store, StoreError, raft_config, shard_name};
use shoal_transport::bootstrap::{JoinAuthority, JoinError, join_control_plane};
use shoal_transport::pki::{CertPair, ClusterCa, Usage, install_token, load_or_create_token};
use shoal_transport::{RaftLink, RaftService, Role, Transport, TransportArgs};

use crate::Args;
use crate::kubeconfig::admin_kubeconfig;
use crate::raft;
use crate::shards::{self, Known, ShardCountError};

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] shoal_transport::pki::PkiError),
    #[error(transparent)]
    Tls(#[from] shoal_apiserver::tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] shoal_store::StoreError),
    #[error("starting the supervision tree: {0}")]
    Spawn(#[from] SpawnErr),
    #[error("joining the control plane: {0}")]
    Join(#[from] JoinError),
    #[error("store shards: {0}")]
    Shards(#[from] ShardCountError),
}

/// Everything the master's PKI provides.
pub struct MasterPki {
    pub ca: Arc<ClusterCa>,
    pub ca_hash: String,
    pub token: String,
    pub api_tls: Arc<rustls::ServerConfig>,
    /// This master's identity in the cluster transport.
    pub peer: CertPair,
}

fn prepare_pki(args: &Args, pki_dir: &Path) -> Result<MasterPki, MasterError> {
    let ca = ClusterCa::load_or_create(pki_dir)?;
    let mut sans = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
    ];
    sans.push(args.address.to_string());
    sans.push(args.master_name());
    sans.dedup();
    let api = ca.load_or_issue(
        pki_dir,
        &format!("apiserver-{}", args.address),
        "kube-apiserver",
        &[],
        &sans,
        Usage::Server,
    )?;
    let admin = ca.load_or_issue(
        pki_dir,
        "admin",
        "kubernetes-admin",
        &["system:masters"],
        &[],
        Usage::Client,
    )?;
    let token = load_or_create_token(pki_dir)?;
    let kubeconfig = admin_kubeconfig(
        &format!("https://{}", args.api_addr()),
        ca.cert_pem(),
        &admin.cert_pem,
        &admin.key_pem,
    );
    let path = args.data_dir.join("admin.kubeconfig");
    std::fs::write(&path, kubeconfig).map_err(|source| MasterError::DataDir {
        path: path.display().to_string(),
        source,
    })?;
    let api_tls = server_config(
        vec![api.cert_der()?, ca.cert_der()?],
        api.key_der()?,
        ca.cert_der()?,
    )?;
    let name = args.master_name();
    let peer_sans = vec![
        shoal_transport::quic::MASTER_SERVER_NAME.to_owned(),
        name.clone(),
    ];
    let peer = ca.load_or_issue(
        pki_dir,
        "master",
        &name,
        &["shoal:masters"],
        &peer_sans,
        Usage::Peer,
    )?;
    let ca_hash = ca.hash()?;
    Ok(MasterPki {
        ca: Arc::new(ca),
        ca_hash,
        token,
        api_tls,
        peer,
    })
}

/// What every shard replica of this master shares.
struct Replication {
    id: NodeId,
    member: Member,
    router: Router,
    host: RaftHost,
    config: Arc<shoal_store::raft::RaftConfig>,
    bootstrap: bool,
}

fn store_tree(files: Vec<(ShardDb, LogStore)>, history: u64, r: &Replication) -> ChildSpec {
    let shards = files
        .into_iter()
        .map(|(db, log)| {
            let group = db.shard();
            ChildSpec::actor(
                shard_name(group),
                Shard,
                ShardArgs {
                    group,
                    id: r.id,
                    member: r.member.clone(),
                    db,
                    log,
                    router: r.router.clone(),
                    host: r.host.clone(),
                    config: r.config.clone(),
                    history_limit: history,
                    watch_queue: 4096,
                    bootstrap: r.bootstrap,
                    io: Io::Blocking,
                    seed: rand::random(),
                },
            )
        })
        .collect();
    ChildSpec::supervisor(
        "store",
        shards,
        RestartIntensity::new(20, Duration::from_secs(10)),
    )
}

/// Sets up the master and runs it until its tree gives up or the process is interrupted.
pub async fn run(args: Args) -> Result<(), MasterError> {
    let dir_err = |source| MasterError::DataDir {
        path: args.data_dir.display().to_string(),
        source,
    };
    let pki_dir = args.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).map_err(dir_err)?;
    let store_dir = args.data_dir.join("store");
    std::fs::create_dir_all(&store_dir).map_err(dir_err)?;
    let joined_marker = store_dir.join("joined");
    let mut known = Known {
        stored: shards::stored(&store_dir)?,
        asked: args.shards,
        cluster: None,
    };
    if let (Some(target), Some(token), Some(hash)) = (args.join, &args.token, &args.ca_cert_hash)
        && !pki_dir.join("ca.crt").exists()
    {
        let kit = join_control_plane(target, token, hash, &args.master_name()).await?;
        // Settled and recorded before anything of the cluster's is installed: a refused
        // join leaves the directory as it was, and a start cut short after the CA is in
        // place (which is not joined again) still finds the cluster's count.
        known.cluster = kit.shards;
        let count = shards::settle(known, shoal_store::machine_default_shards())?;
        shards::record(&store_dir, count)?;
        known.stored = Some(count);
        ClusterCa::install(&pki_dir, &kit.ca)?;
        install_token(&pki_dir, &kit.token)?;
        std::fs::write(&joined_marker, format!("{target}\n")).map_err(dir_err)?;
        println!("This master has joined the control plane through {target}.");
    }
    let shard_count = shards::settle(known, shoal_store::machine_default_shards())?;
    if known.stored != Some(shard_count) {
        shards::record(&store_dir, shard_count)?;
    }
    tracing::info!(shards = shard_count, "store shards");
    let pki = prepare_pki(&args, &pki_dir)?;
    let files = raft::open_shards(&store_dir, shard_count).await?;
    let id = raft::member_id(&store_dir).map_err(dir_err)?;
    let link = RaftLink::new();
    let host = RaftHost::new();
    let replication = Replication {
        id,
        member: Member {
            name: args.master_name(),
            addr: args.quic_addr().to_string(),
            api: args.api_addr().to_string(),
        },
        router: raft::router(link.clone()),
        host: host.clone(),
        config: raft_config()?,
        // A master that joined waits to be added; the first one starts the groups.
        bootstrap: !joined_marker.exists(),
    };
    let store = Store::new(shard_count);
    let api_args = ApiServerArgs {
        listen: args.api_addr(),
        advertise: args.api_addr().to_string(),
        tls: pki.api_tls.clone(),
        store: store.clone(),
        tokens: Arc::new(HashMap::<String, Identity>::new()),
        control_plane: Some(host.clone()),
        ranges: shoal_apiserver::addresses::ServiceRanges {
            cidr: args.service_cidr,
            node_ports: args.service_node_port_range.clone(),
        },
    };
    let transport_args = TransportArgs {
        name: args.master_name(),
        identity: pki.peer.clone(),
        ca_pem: pki.ca.cert_pem().to_owned(),
        role: Role::Master {
            listen: args.quic_addr(),
            join: Some(Arc::new(JoinAuthority {
                ca: pki.ca.clone(),
                token: pki.token.clone(),
                shards: Some(shard_count),
            })),
            raft: Some(RaftService {
                link,
                handler: raft::handler(host.clone()),
            }),
        },
        cookie: pki.ca_hash.clone(),
    };
    let mut children = vec![
        ChildSpec::actor("transport", Transport, transport_args),
        store_tree(files, args.watch_history, &replication),
        ChildSpec::actor(
            "apiserver-identity",
            ApiServerIdentity,
            IdentityArgs {
                name: args.master_name(),
                address: args.api_addr().to_string(),
                period: Duration::from_secs(2),
            },
        ),
        ChildSpec::actor(
            "leader-balancer",
            Balancer,
            BalancerArgs {
                id,
                host: host.clone(),
                period: Duration::from_secs(2),
            },
        ),
        ChildSpec::actor("apiserver", ApiServer, api_args),
        ChildSpec::actor(
            "controller-manager-elector",
            Elector,
            controller_manager(&args, store.clone()),
        ),
    ];
    if args.with_node {
        children.push(shoal_kubelet::child_spec(KubeletArgs {
            identity: NodeIdentity {
                name: args.master_name(),
                address: args.address.to_string(),
                control_plane: true,
            },
            facts: shoal_kubelet::machine::read(),
            lease_duration_s: args.lease_duration_seconds,
            renew_interval: Duration::from_millis(args.lease_renew_interval_ms),
            status_every: 10,
        }));
    }
    let root_args = SupervisorArgs {
        children,
        intensity: RestartIntensity::new(20, Duration::from_secs(10)),
    };
    let (_root, handle) = Actor::spawn(Some("master".into()), Supervisor, root_args).await?;
    if let Some(target) = args.join {
        tokio::spawn(raft::become_member(
            replication.router.clone(),
            target,
            shard_count,
            id,
            replication.member.clone(),
        ));
    }
    print_banner(&args, &pki)?;
    tokio::select! {
        _ = handle => tracing::error!("the master's supervision tree stopped"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}

fn print_banner(args: &Args, pki: &MasterPki) -> Result<(), MasterError> {
    println!("Shoal control plane is running.");
    println!("  API server:  https://{}", args.api_addr());
    println!(
        "  kubeconfig:  {}",
        args.data_dir.join("admin.kubeconfig").display()
    );
    println!();
    println!("To use the cluster:");
    println!(
        "  export KUBECONFIG={}",
        args.data_dir.join("admin.kubeconfig").display()
    );
    println!("  kubectl get nodes");
    println!();
    println!("To add a master, run on it:");
    println!(
        "  shoal-master --join {} --token {} --ca-cert-hash {} --address <its address>",
        args.quic_addr(),
        pki.token,
        pki.ca_hash
    );
    println!();
    println!("To add a node, run on it:");
    println!(
        "  shoal-node --join {} --token {} --ca-cert-hash {}",
        args.quic_addr(),
        pki.token,
        pki.ca_hash
    );
    Ok(())
}

/// The controller manager: one leader in the cluster, elected through the
/// `kube-system/kube-controller-manager` Lease; every master stands by to take over. Its
/// controllers write under the term they were started with.
fn controller_manager(args: &Args, store: Store) -> ElectorArgs {
    let grace = args.node_monitor_grace();
    let event_ttl = args.event_ttl();
    // Every kind the API serves may own others or be owned (a view's objects are those
    // of the resource it shows).
    let resources: Vec<Resource> = shoal_apiserver::resources::RESOURCES
        .iter()
        .filter(|r| r.view.is_none())
        .map(|r| Resource {
            group: r.group.into(),
            version: r.version.into(),
            resource: r.resource.into(),
            kind: r.kind.into(),
            namespaced: r.namespaced,
        })
        .collect();
    let singleton: Singleton = Arc::new(move |fence| {
        vec![
            ChildSpec::actor(
                "node-lifecycle",
                NodeLifecycle,
                NodeLifecycleArgs {
                    grace,
                    period: Duration::from_millis(250),
                    fence: Some(fence.clone()),
                },
            ),
            ChildSpec::actor(
                "event-expiry",
                EventExpiry,
                EventExpiryArgs {
                    ttl: event_ttl,
                    // A tenth of the time to live, between a second and a minute.
                    period: (event_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
                    fence: Some(fence.clone()),
                },
            ),
            ChildSpec::actor(
                "disruption",
                Disruption,
                DisruptionArgs {
                    period: Duration::from_millis(500),
                    fence: Some(fence.clone()),
                },
            ),
            ChildSpec::actor(
                "garbage-collector",
                GarbageCollector,
                GarbageCollectorArgs {
                    resources: resources.clone(),
                    period: Duration::from_secs(1),
                    idle_period: Duration::from_secs(4),
                    fence: Some(fence),
                },
            ),
        ]
    });
    ElectorArgs {
        lease: "kube-controller-manager".into(),
        identity: format!("{}_{}", args.master_name(), uuid::Uuid::new_v4()),
        lease_duration: Duration::from_secs(args.leader_elect_lease_duration_seconds),
        renew_deadline: Duration::from_millis(args.leader_elect_renew_deadline_ms),
        retry_period: Duration::from_millis(args.leader_elect_retry_period_ms),
        raise: Arc::new(move |fence| {
            let store = store.clone();
            Box::pin(async move {
                store.raise_fence(&fence).await.map_err(|err| match err {
                    StoreError::Fenced { current, .. } => RaiseError::Superseded(current),
                    other => RaiseError::Failed(other.to_string()),
                })
            })
        }),
        singleton,
    }
}
