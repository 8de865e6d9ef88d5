//! `shoal-master`: the control plane. Makes the cluster PKI on first start, opens the store,
//! and runs the master's supervision tree; prints how nodes join.

mod kubeconfig;
mod raft;
mod shards;
mod tree;

/// mimalloc: under load the store allocates and frees per entry on every thread, and glibc's
/// allocator spent about 18% of the CPU there (`shoal-bench store`, 3 replicas).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Start a Shoal control plane.
#[derive(Parser, Debug, Clone)]
#[command(name = "shoal-master", version)]
pub struct Args {
    /// Where the store, the PKI and the admin kubeconfig live.
    #[arg(long, default_value = "/var/lib/shoal/master")]
    pub data_dir: PathBuf,
    /// The address to listen on and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// HTTPS port of the Kubernetes API.
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// UDP port of the cluster's QUIC transport.
    #[arg(long, default_value_t = 7443)]
    pub quic_port: u16,
    /// Store shards, fixed when the cluster is created: a new cluster gets one per worker
    /// of the store's runtime (one fewer than the cores), at most 8; a joining master takes
    /// the cluster's; a restarted one keeps its own.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shards: Option<u32>,
    /// Store events kept per shard for watches; older starts get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    pub watch_history: u64,
    /// How long a node's lease may go unrenewed before the node is NotReady.
    #[arg(long, default_value_t = 40_000)]
    pub node_monitor_grace_period_ms: u64,
    /// How long Events are kept after they were last seen (Kubernetes keeps them an hour).
    #[arg(long, default_value_t = 86_400)]
    pub event_ttl_seconds: u64,
    /// Also run a node in this process.
    #[arg(long)]
    pub with_node: bool,
    /// The name of this master (and of its node with --with-node).
    #[arg(long)]
    pub name: Option<String>,
    /// With --with-node: how long the node's lease lasts.
    #[arg(long, default_value_t = 40)]
    pub lease_duration_seconds: u32,
    /// With --with-node: how often the node renews its lease.
    #[arg(long, default_value_t = 10_000)]
    pub lease_renew_interval_ms: u64,
    /// Join the control plane of the cluster whose master listens at this QUIC address
    /// (host:port), instead of starting a new cluster.
    #[arg(long, requires_all = ["token", "ca_cert_hash"])]
    pub join: Option<SocketAddr>,
    /// With --join: the bootstrap token a master printed.
    #[arg(long)]
    pub token: Option<String>,
    /// With --join: the CA certificate hash a master printed (sha256:…).
    #[arg(long)]
    pub ca_cert_hash: Option<String>,
    /// How long the controller manager's leader lease lives unrenewed before a standby
    /// master takes it over (whole seconds, as the Lease object counts them).
    #[arg(long, default_value_t = 1)]
    pub leader_elect_lease_duration_seconds: u64,
    /// How long a leading controller manager keeps going while its renewals fail.
    #[arg(long, default_value_t = 800)]
    pub leader_elect_renew_deadline_ms: u64,
    /// How often candidates look at the leader lease (and the leader renews it).
    #[arg(long, default_value_t = 200)]
    pub leader_elect_retry_period_ms: u64,
    /// The range Services get their cluster IPs from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: shoal_apiserver::addresses::Cidr,
    /// The range NodePort Services get their node ports from (low-high).
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
}

/// `low-high`, both ports, low not above high.
fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range of ports (low-high)"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|e| format!("{p:?} is not a port: {e}"))
    };
    let (low, high) = (port(low)?, port(high)?);
    if low == 0 || low > high {
        return Err(format!(
            "{text:?} is not a range of ports (1 <= low <= high)"
        ));
    }
    Ok(low..=high)
}

impl Args {
    /// This master's name: the flag, or the host name.
    pub fn master_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| sysinfo_hostname().to_lowercase())
    }

    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.api_port)
    }

    pub fn quic_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.quic_port)
    }

    pub fn event_ttl(&self) -> Duration {
        Duration::from_secs(self.event_ttl_seconds)
    }

    pub fn node_monitor_grace(&self) -> Duration {
        Duration::from_millis(self.node_monitor_grace_period_ms)
    }
}

fn sysinfo_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "shoal-master".into())
}

fn main() {
    shoal_core::logging::init(shoal_core::logging::PROCESS_DEFAULT);
    if let Err(err) = shoal_store::disable_transparent_huge_pages() {
        tracing::warn!(reason = %err, "transparent huge pages stay on; writes may stall on page faults");
    }
    let args = Args::parse();
    // One worker fewer than the cores: the store's journal writer keeps one while writes come.
    let runtime = match shoal_store::store_runtime().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("shoal-master: starting the runtime: {err}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(tree::run(args)) {
        Ok(()) => {}
        Err(err) => {
            eprintln!("shoal-master: {err}");
            std::process::exit(1);
        }
    }
}
