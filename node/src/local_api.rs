//! The node's local API endpoint (for example 127.0.0.1:6444): a TCP relay to a live master's
//! API server, so a kubeconfig pointed at it keeps working while any one master is down and
//! no load balancer is needed. TLS passes through untouched; the masters' certificates name
//! 127.0.0.1. Which masters are live comes from their identity leases, read every 2 s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use shoal_controllers::apiserver_identity::{list_identities, live_addresses};
use tokio::net::{TcpListener, TcpStream};

/// The live API servers, and which to try first.
#[derive(Clone, Default)]
struct Targets {
    addresses: Arc<Mutex<Vec<SocketAddr>>>,
    next: Arc<AtomicUsize>,
}

impl Targets {
    fn set(&self, addresses: Vec<SocketAddr>) {
        *self.addresses.lock().unwrap_or_else(|p| p.into_inner()) = addresses;
    }

    /// The addresses in the order to try them: the last one that worked first.
    fn ordered(&self) -> Vec<SocketAddr> {
        let mut list = self
            .addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !list.is_empty() {
            let start = self.next.load(Ordering::Relaxed) % list.len();
            list.rotate_left(start);
        }
        list
    }

    fn skip(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
    }
}

async fn refresh(targets: Targets) {
    loop {
        match list_identities(Duration::from_secs(3)).await {
            Ok(list) => {
                let live: Vec<SocketAddr> = live_addresses(&list, Timestamp::now())
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .collect();
                if !live.is_empty() {
                    targets.set(live);
                }
            }
            Err(err) => tracing::debug!(error = %err, "reading the API servers' identities failed"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn relay(mut client: TcpStream, targets: Targets) {
    for target in targets.ordered() {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(target)).await {
            Ok(Ok(mut server)) => {
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                return;
            }
            _ => {
                tracing::debug!(%target, "API server unreachable; trying the next");
                targets.skip();
            }
        }
    }
    tracing::warn!("no API server reachable for a local client");
}

/// Serves the local endpoint on `listen` until the process ends.
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let targets = Targets::default();
    tokio::spawn(refresh(targets.clone()));
    tracing::info!(%listen, "local API endpoint relaying to the live masters");
    loop {
        let (client, _) = listener.accept().await?;
        let _ = client.set_nodelay(true);
        tokio::spawn(relay(client, targets.clone()));
    }
}
