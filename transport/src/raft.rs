//! Raft traffic between masters on QUIC streams of their own (DESIGN §3): each request opens
//! a bidirectional stream on the connection to the peer, sends the request, and reads the
//! response, so no shard group, snapshot or actor message waits behind another. Bytes only:
//! what they mean is the store's business.
//!
//! Frames: the stream-kind byte, then the request until the sender finishes its side. The
//! response is a status byte (0 ok, 1 refused, followed by the reason) and the body.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::faults::Faults;

use crate::pki::common_name;
use crate::quic::{MASTER_SERVER_NAME, peer_chain};
use crate::stream::StreamKind;

/// The largest Raft message accepted (a snapshot of a big shard).
pub const MAX_MESSAGE: usize = 1 << 30;

/// What answers Raft requests on this master.
pub type RaftHandler = Arc<
    dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> + Send + Sync,
>;

/// A master's Raft service: how it answers, and its link for asking.
#[derive(Clone)]
pub struct RaftService {
    pub link: RaftLink,
    pub handler: RaftHandler,
}

/// Sends Raft requests to other masters over the process's QUIC endpoint. Cheap to clone;
/// follows the endpoint across transport restarts.
#[derive(Clone, Default)]
pub struct RaftLink {
    endpoint: Arc<Mutex<Option<quinn::Endpoint>>>,
    connections: Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>,
}

impl RaftLink {
    /// A link with no endpoint yet: calls fail until the transport starts.
    pub fn new() -> RaftLink {
        RaftLink::default()
    }

    pub(crate) fn set_endpoint(&self, endpoint: Option<quinn::Endpoint>) {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = endpoint;
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    async fn connection(&self, peer: &str, addr: SocketAddr) -> Result<quinn::Connection, String> {
        let cached = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned();
        if let Some(conn) = cached
            && conn.close_reason().is_none()
        {
            return Ok(conn);
        }
        let endpoint = self
            .endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("the transport is not running")?;
        let conn = endpoint
            .connect(addr, MASTER_SERVER_NAME)
            .map_err(|e| format!("dialing {addr}: {e}"))?
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let name = peer_chain(&conn).and_then(|c| c.first().and_then(common_name));
        // An empty name: a master known only by its address (the one a joining master was
        // pointed at); its certificate is still checked against the cluster CA.
        if !peer.is_empty() && name.as_deref() != Some(peer) {
            conn.close(5u32.into(), b"unexpected peer");
            return Err(format!("{addr} is {name:?}, not {peer}"));
        }
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, conn.clone());
        Ok(conn)
    }

    /// Sends `request` to master `peer` at `addr` and returns its response; an empty `peer`
    /// accepts whichever master answers there.
    pub async fn call(
        &self,
        peer: &str,
        addr: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
        let exchange = async {
            if Faults::global().is_partitioned(peer) {
                return Err(format!("{peer} is partitioned"));
            }
            let delay = Faults::global().delay(peer);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let conn = self.connection(peer, addr).await?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&[StreamKind::Raft as u8])
                .await
                .map_err(|e| e.to_string())?;
            send.write_all(&request).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let reply = recv
                .read_to_end(MAX_MESSAGE)
                .await
                .map_err(|e| e.to_string())?;
            match reply.split_first() {
                Some((0, body)) => Ok(body.to_vec()),
                Some((_, why)) => Err(String::from_utf8_lossy(why).into_owned()),
                None => Err("empty reply".into()),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("{peer} did not answer within {timeout:?}")))
    }
}

/// Answers one Raft stream whose kind byte was read.
pub(crate) async fn serve_stream(
    handler: RaftHandler,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let request = match recv.read_to_end(MAX_MESSAGE).await {
        Ok(request) => request,
        Err(err) => {
            tracing::debug!(error = %err, "reading a raft request failed");
            return;
        }
    };
    let mut reply = Vec::new();
    match handler(request).await {
        Ok(body) => {
            reply.push(0);
            reply.extend_from_slice(&body);
        }
        Err(why) => {
            reply.push(1);
            reply.extend_from_slice(why.as_bytes());
        }
    }
    if send.write_all(&reply).await.is_ok() {
        let _ = send.finish();
    }
}
