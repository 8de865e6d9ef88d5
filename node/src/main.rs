//! `shoal-node`: a worker. Joins the cluster with a bootstrap token and the CA's hash (once;
//! the certificate it receives is kept), then runs the node's supervision tree:
//!
//! ```text
//! node (one-for-one)
//! ├─ transport   QUIC to every master, reconnecting by itself
//! └─ kubelet     Node registration, lease renewal
//! ```

mod local_api;

/// mimalloc: under load the store allocates and frees per entry on every thread, and glibc's
/// allocator spent about 18% of the CPU there (`shoal-bench store`, 3 replicas).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ractor::Actor;
use shoal_core::supervisor::{ChildSpec, RestartIntensity, Supervisor, SupervisorArgs};
use shoal_kubelet::KubeletArgs;
use shoal_kubelet::objects::NodeIdentity;
use shoal_transport::bootstrap::{join, load_identity, save_identity};
use shoal_transport::pki::{ca_cert_hash, cert_der};
use shoal_transport::{Role, Transport, TransportArgs};

/// Join a Shoal cluster as a node.
#[derive(Parser, Debug)]
#[command(name = "shoal-node", version)]
struct Args {
    /// A master's QUIC address (host:port); repeat for several masters.
    #[arg(long, required = true)]
    join: Vec<SocketAddr>,
    /// The bootstrap token the master printed.
    #[arg(long)]
    token: Option<String>,
    /// The CA certificate hash the master printed (sha256:…).
    #[arg(long)]
    ca_cert_hash: Option<String>,
    /// This node's name; the host name by default.
    #[arg(long)]
    name: Option<String>,
    /// The node's address, reported as its InternalIP and serving the admin endpoint.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Where the node keeps its certificate.
    #[arg(long, default_value = "/var/lib/shoal/node")]
    data_dir: PathBuf,
    /// HTTPS port of the node's admin endpoint.
    #[arg(long, default_value_t = 10250)]
    admin_port: u16,
    /// How long the node's lease lasts.
    #[arg(long, default_value_t = 40)]
    lease_duration_seconds: u32,
    /// How often the node renews its lease.
    #[arg(long, default_value_t = 10_000)]
    lease_renew_interval_ms: u64,
    /// The local API endpoint: relays to a live master's API server.
    #[arg(long, default_value = "127.0.0.1:6444")]
    local_api: SocketAddr,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("this node has not joined yet: --token and --ca-cert-hash are required")]
    MissingJoinFlags,
    #[error("{0}")]
    Join(#[from] shoal_transport::bootstrap::JoinError),
    #[error(transparent)]
    Pki(#[from] shoal_transport::pki::PkiError),
    #[error(transparent)]
    Tls(#[from] shoal_apiserver::tls::TlsError),
    #[error(
        "the saved identity belongs to a cluster whose CA hash is {saved}, not {given}; remove {dir} to join another cluster"
    )]
    OtherCluster {
        saved: String,
        given: String,
        dir: String,
    },
    #[error("starting the supervision tree: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "shoal-node".into())
}

async fn run(args: Args) -> Result<(), NodeError> {
    let name = args.name.clone().unwrap_or_else(hostname);
    std::fs::create_dir_all(&args.data_dir).map_err(|source| NodeError::DataDir {
        path: args.data_dir.display().to_string(),
        source,
    })?;
    let (identity, ca_pem) = match load_identity(&args.data_dir) {
        Some(saved) => saved,
        None => {
            let (Some(token), Some(hash)) = (&args.token, &args.ca_cert_hash) else {
                return Err(NodeError::MissingJoinFlags);
            };
            let (pair, ca) = join(args.join[0], token, hash, &name).await?;
            save_identity(&args.data_dir, &pair, &ca)?;
            println!("This node has joined the cluster as {name}.");
            (pair, ca)
        }
    };
    let ca_der = cert_der(&ca_pem)?;
    let ca_hash = ca_cert_hash(&ca_der)?;
    if let Some(given) = &args.ca_cert_hash
        && *given != ca_hash
    {
        return Err(NodeError::OtherCluster {
            saved: ca_hash,
            given: given.clone(),
            dir: args.data_dir.display().to_string(),
        });
    }
    let transport = TransportArgs {
        name: name.clone(),
        identity: identity.clone(),
        ca_pem: ca_pem.clone(),
        role: Role::Node {
            masters: args.join.clone(),
        },
        cookie: ca_hash,
    };
    let kubelet = KubeletArgs {
        identity: NodeIdentity {
            name: name.clone(),
            address: args.address.to_string(),
            control_plane: false,
        },
        facts: shoal_kubelet::machine::read(),
        lease_duration_s: args.lease_duration_seconds,
        renew_interval: Duration::from_millis(args.lease_renew_interval_ms),
        status_every: 10,
    };
    let children = vec![
        ChildSpec::actor("transport", Transport, transport),
        shoal_kubelet::child_spec(kubelet),
    ];
    let root_args = SupervisorArgs {
        children,
        intensity: RestartIntensity::new(20, Duration::from_secs(10)),
    };
    let (_root, handle) = Actor::spawn(Some("node".into()), Supervisor, root_args).await?;
    let admin_tls = shoal_apiserver::tls::server_config(
        vec![identity.cert_der()?, ca_der.clone()],
        identity.key_der()?,
        ca_der,
    )?;
    let listener =
        shoal_apiserver::tls::bind(SocketAddr::new(args.address, args.admin_port)).await?;
    let admin = tokio::spawn(shoal_apiserver::tls::serve(
        listener,
        admin_tls,
        shoal_apiserver::admin::router(),
        Arc::new(HashMap::new()),
    ));
    let local_listen = args.local_api;
    let local_api = tokio::spawn(async move {
        if let Err(err) = local_api::serve(local_listen).await {
            tracing::error!(listen = %local_listen, error = %err, "the local API endpoint is not available");
        }
    });
    println!(
        "Node {name} is running; admin endpoint https://{}:{}",
        args.address, args.admin_port
    );
    println!(
        "Local API endpoint (relays to a live master): https://{}",
        args.local_api
    );
    tokio::select! {
        _ = handle => tracing::error!("the node's supervision tree stopped"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    admin.abort();
    local_api.abort();
    Ok(())
}

#[tokio::main]
async fn main() {
    shoal_core::logging::init(shoal_core::logging::PROCESS_DEFAULT);
    if let Err(err) = run(Args::parse()).await {
        eprintln!("shoal-node: {err}");
        std::process::exit(1);
    }
}
