//! The Transport actor: one QUIC endpoint per process, a ractor_cluster node server whose
//! sessions ride on QUIC streams, dialing with back-off (nodes dial masters), accepting and
//! admitting joins (masters), identity checks, and the fault seam.
//!
//! Killing the actor closes the endpoint and every session; its supervisor starts a fresh one
//! and peers reconnect by themselves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, RactorMessage};
use rustls::pki_types::CertificateDer;
use shoal_core::faults::Faults;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::bootstrap::JoinAuthority;
use crate::pki::{CertPair, MASTERS_GROUP, common_name, organizations};
use crate::quic::{MASTER_SERVER_NAME, client_config, peer_chain, server_config};
use crate::raft::{RaftHandler, RaftService, serve_stream};
use crate::stream::{QuicSession, StreamKind};

/// What this process is in the cluster.
#[derive(Clone)]
pub enum Role {
    /// Listens on `listen`; admits joining nodes when `join` is set.
    Master {
        listen: SocketAddr,
        join: Option<Arc<JoinAuthority>>,
        /// Answers and sends Raft traffic between masters.
        raft: Option<RaftService>,
    },
    /// Dials every master and keeps the connections up.
    Node { masters: Vec<SocketAddr> },
}

/// What the Transport actor starts from.
#[derive(Clone)]
pub struct TransportArgs {
    /// This process's name; its certificate's common name and its ractor node name.
    pub name: String,
    pub identity: CertPair,
    pub ca_pem: String,
    pub role: Role,
    /// Shared by every member (the CA hash); ractor_cluster's handshake needs one.
    pub cookie: String,
}

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Config(#[from] crate::quic::QuicConfigError),
    #[error("cannot open the QUIC endpoint on {addr}: {source}")]
    Endpoint {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Live connections by peer name.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<HashMap<String, quinn::Connection>>>);

impl Peers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, quinn::Connection>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, name: &str, conn: &quinn::Connection) {
        if let Some(old) = self.lock().insert(name.to_owned(), conn.clone())
            && old.stable_id() != conn.stable_id()
        {
            old.close(0u32.into(), b"replaced");
        }
    }

    fn remove_if_same(&self, name: &str, conn: &quinn::Connection) {
        let mut peers = self.lock();
        if peers
            .get(name)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            peers.remove(name);
        }
    }

    fn close(&self, name: &str, why: &str) {
        if let Some(conn) = self.lock().remove(name) {
            conn.close(1u32.into(), why.as_bytes());
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }
}

enum SessionEvent {
    Authenticated(NodeServerSessionInformation),
    Disconnected(NodeServerSessionInformation),
}

struct Subscription(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Disconnected(ses));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Authenticated(ses));
    }
}

/// Messages of the Transport actor (local only).
#[derive(RactorMessage)]
pub enum TransportMsg {
    /// The names of the peers connected now.
    Peers(ractor::RpcReplyPort<Vec<String>>),
}

/// Stops everything the actor started when its state is dropped, however it ended.
struct Teardown {
    tasks: Vec<JoinHandle<()>>,
    raft: Option<RaftService>,
    endpoint: quinn::Endpoint,
    node_server: ActorRef<NodeServerMessage>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(raft) = &self.raft {
            raft.link.set_endpoint(None);
        }
        self.endpoint.close(0u32.into(), b"transport stopped");
        self.node_server.stop(Some("transport stopped".into()));
    }
}

/// The actor's state.
pub struct TransportState {
    peers: Peers,
    _teardown: Teardown,
}

/// The Transport actor.
#[derive(Clone)]
pub struct Transport;

/// The node part of a ractor name `node@host`.
fn node_part(full: &str) -> &str {
    full.split_once('@').map_or(full, |(n, _)| n)
}

async fn watch_sessions(mut events: mpsc::UnboundedReceiver<SessionEvent>, peers: Peers) {
    while let Some(event) = events.recv().await {
        match event {
            SessionEvent::Authenticated(ses) => {
                let claimed = ses
                    .peer_name
                    .as_ref()
                    .map(|n| node_part(&n.name).to_owned())
                    .unwrap_or_default();
                if claimed != ses.peer_addr {
                    tracing::warn!(certificate = %ses.peer_addr, claimed = %claimed, "peer's name does not match its certificate; dropping it");
                    ses.actor
                        .stop(Some("name does not match certificate".into()));
                    peers.close(&ses.peer_addr, "name does not match certificate");
                } else {
                    tracing::info!(peer = %claimed, "actor session up");
                }
            }
            SessionEvent::Disconnected(ses) => {
                tracing::info!(peer = %ses.peer_addr, "actor session down");
                peers.close(&ses.peer_addr, "session ended");
            }
        }
    }
}

/// Closes connections to peers that the fault seam has cut off.
async fn enforce_partitions(peers: Peers) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        for name in peers.names() {
            if Faults::global().is_partitioned(&name) {
                tracing::warn!(peer = %name, "partitioned by the fault seam");
                peers.close(&name, "partitioned");
            }
        }
    }
}

async fn open_actor_session(
    conn: &quinn::Connection,
    node_server: &ActorRef<NodeServerMessage>,
    peer: &str,
    local: &str,
) -> Result<(), String> {
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&[StreamKind::Actors as u8])
        .await
        .map_err(|e| e.to_string())?;
    let session = QuicSession {
        send,
        recv,
        peer: peer.to_owned(),
        local: local.to_owned(),
    };
    ractor_cluster::client_connect_external(node_server, Box::new(session))
        .await
        .map_err(|e| e.to_string())
}

/// Keeps one connection to a master up, redialing with back-off.
async fn dial_loop(
    endpoint: quinn::Endpoint,
    master: SocketAddr,
    node_server: ActorRef<NodeServerMessage>,
    peers: Peers,
    local: String,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match endpoint.connect(master, MASTER_SERVER_NAME) {
            Ok(connecting) => match connecting.await {
                Ok(conn) => {
                    let peer = peer_chain(&conn)
                        .and_then(|c| c.first().and_then(common_name))
                        .unwrap_or_else(|| master.to_string());
                    if Faults::global().is_partitioned(&peer) {
                        conn.close(1u32.into(), b"partitioned");
                    } else {
                        backoff = Duration::from_millis(100);
                        peers.insert(&peer, &conn);
                        match open_actor_session(&conn, &node_server, &peer, &local).await {
                            Ok(()) => tracing::info!(%master, %peer, "connected"),
                            Err(err) => {
                                tracing::warn!(%master, error = %err, "opening the actor session failed");
                                conn.close(1u32.into(), b"session failed");
                            }
                        }
                        let reason = conn.closed().await;
                        tracing::warn!(%master, %peer, %reason, "connection lost; reconnecting");
                        peers.remove_if_same(&peer, &conn);
                    }
                }
                Err(err) => tracing::debug!(%master, error = %err, "connect failed"),
            },
            Err(err) => tracing::warn!(%master, error = %err, "cannot dial"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    node_server: ActorRef<NodeServerMessage>,
    peers: Peers,
    join: Option<Arc<JoinAuthority>>,
    raft: Option<RaftHandler>,
    local: String,
) {
    let chain = peer_chain(&conn);
    let leaf = chain.as_ref().and_then(|c| c.first());
    let peer = leaf.and_then(common_name);
    let is_master = leaf.is_some_and(|c| organizations(c).iter().any(|o| o == MASTERS_GROUP));
    let mut requests = JoinSet::new();
    if let Some(name) = &peer {
        if Faults::global().is_partitioned(name) {
            conn.close(1u32.into(), b"partitioned");
            return;
        }
        peers.insert(name, &conn);
    }
    let mut joins = JoinSet::new();
    while let Ok((send, mut recv)) = conn.accept_bi().await {
        while requests.try_join_next().is_some() {}
        let mut kind = [0u8; 1];
        if recv.read_exact(&mut kind).await.is_err() {
            continue;
        }
        match (StreamKind::from_byte(kind[0]), &peer) {
            (Some(StreamKind::Actors), Some(name)) => {
                let session = QuicSession {
                    send,
                    recv,
                    peer: name.clone(),
                    local: local.clone(),
                };
                if node_server
                    .cast(NodeServerMessage::ConnectionOpenedExternal {
                        stream: Box::new(session),
                        is_server: true,
                    })
                    .is_err()
                {
                    break;
                }
            }
            (Some(StreamKind::Actors), None) => {
                conn.close(2u32.into(), b"a client certificate is required");
                break;
            }
            (Some(StreamKind::Join), _) => match &join {
                Some(authority) => {
                    let authority = authority.clone();
                    joins.spawn(async move { authority.serve(send, recv).await });
                }
                None => {
                    conn.close(3u32.into(), b"this master does not admit nodes");
                    break;
                }
            },
            (Some(StreamKind::Raft), Some(_)) if is_master => match &raft {
                Some(handler) => {
                    requests.spawn(serve_stream(handler.clone(), send, recv));
                }
                None => {
                    conn.close(6u32.into(), b"this process serves no raft");
                    break;
                }
            },
            (Some(StreamKind::Raft), _) => {
                conn.close(7u32.into(), b"raft traffic is for masters only");
                break;
            }
            (None, _) => {
                conn.close(4u32.into(), b"unknown stream kind");
                break;
            }
        }
    }
    if let Some(name) = &peer {
        peers.remove_if_same(name, &conn);
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    node_server: ActorRef<NodeServerMessage>,
    peers: Peers,
    join: Option<Arc<JoinAuthority>>,
    raft: Option<RaftHandler>,
    local: String,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let (node_server, peers, join, raft, local) = (node_server.clone(), peers.clone(), join.clone(), raft.clone(), local.clone());
                connections.spawn(async move {
                    match incoming.await {
                        Ok(conn) => serve_connection(conn, node_server, peers, join, raft, local).await,
                        Err(err) => tracing::debug!(error = %err, "incoming connection failed"),
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Opens the server endpoint, waiting briefly for a predecessor's socket to close: a restarted
/// transport finds the old endpoint's driver still winding down.
fn bind_server(
    server: quinn::ServerConfig,
    listen: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match quinn::Endpoint::server(server.clone(), listen) {
            Ok(endpoint) => return Ok(endpoint),
            Err(err)
                if err.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(TransportError::Endpoint {
                    addr: listen,
                    source,
                });
            }
        }
    }
}

fn endpoint_for(args: &TransportArgs) -> Result<quinn::Endpoint, TransportError> {
    let ca: CertificateDer<'static> = crate::pki::cert_der(&args.ca_pem)?;
    let chain = vec![args.identity.cert_der()?, ca.clone()];
    let client = client_config(chain.clone(), args.identity.key_der()?, &ca)?;
    let mut endpoint = match &args.role {
        Role::Master { listen, .. } => {
            let server = server_config(chain, args.identity.key_der()?, &ca)?;
            bind_server(server, *listen)?
        }
        Role::Node { masters } => {
            let v6 = masters.first().is_some_and(SocketAddr::is_ipv6);
            let bind: SocketAddr = if v6 {
                SocketAddr::from(([0u16; 8], 0))
            } else {
                SocketAddr::from(([0u8; 4], 0))
            };
            quinn::Endpoint::client(bind)
                .map_err(|source| TransportError::Endpoint { addr: bind, source })?
        }
    };
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

impl Actor for Transport {
    type Msg = TransportMsg;
    type State = TransportState;
    type Arguments = TransportArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TransportMsg>,
        args: TransportArgs,
    ) -> Result<TransportState, ActorProcessingErr> {
        let server = NodeServer::new(
            0,
            args.cookie.clone(),
            args.name.clone(),
            "shoal".into(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]));
        let (node_server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: "shoal-transport".into(),
            subscription: Box::new(Subscription(tx)),
        })?;
        let endpoint = endpoint_for(&args)?;
        let peers = Peers::default();
        let mut tasks = vec![
            tokio::spawn(watch_sessions(rx, peers.clone())),
            tokio::spawn(enforce_partitions(peers.clone())),
        ];
        let mut raft_service = None;
        match &args.role {
            Role::Master { listen, join, raft } => {
                tracing::info!(%listen, name = %args.name, "QUIC transport listening");
                if let Some(service) = raft {
                    service.link.set_endpoint(Some(endpoint.clone()));
                    raft_service = Some(service.clone());
                }
                tasks.push(tokio::spawn(accept_loop(
                    endpoint.clone(),
                    node_server.clone(),
                    peers.clone(),
                    join.clone(),
                    raft.as_ref().map(|r| r.handler.clone()),
                    args.name.clone(),
                )));
            }
            Role::Node { masters } => {
                for master in masters {
                    tasks.push(tokio::spawn(dial_loop(
                        endpoint.clone(),
                        *master,
                        node_server.clone(),
                        peers.clone(),
                        args.name.clone(),
                    )));
                }
            }
        }
        Ok(TransportState {
            peers,
            _teardown: Teardown {
                tasks,
                raft: raft_service,
                endpoint,
                node_server,
            },
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TransportMsg>,
        msg: TransportMsg,
        state: &mut TransportState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TransportMsg::Peers(reply) => {
                let _ = reply.send(state.peers.names());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<TransportMsg>,
        event: SupervisionEvent,
        _state: &mut TransportState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                Err(format!("the cluster node server stopped: {reason:?}").into())
            }
            SupervisionEvent::ActorFailed(_, err) => {
                Err(format!("the cluster node server failed: {err}").into())
            }
            _ => Ok(()),
        }
    }
}
