//! Raft and client requests over loopback TCP for the in-process masters.
//!
//! One connection per peer carries every request to it, as the masters' QUIC connection
//! does: each frame has a request id, requests are served concurrently, and whatever frames
//! are queued when a connection's writer wakes go out in one `write`, so that under load
//! many messages share a system call. Reads are buffered for the same reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_store::raft::{Member, RaftHost, Wire, WireFuture};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Bytes one `write` gathers at most before it goes out.
const WRITE_BATCH: usize = 256 * 1024;
/// The read buffer of a connection.
const READ_BUFFER: usize = 64 * 1024;

/// A frame: a u32 length (of what follows), a u64 request id, then the body. A response's
/// body starts with 0 (the reply follows) or 1 (an error message follows).
fn frame(out: &mut Vec<u8>, id: u64, tag: Option<u8>, body: &[u8]) -> std::io::Result<()> {
    let len = 8 + usize::from(tag.is_some()) + body.len();
    let len = u32::try_from(len).map_err(std::io::Error::other)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(tag);
    out.extend_from_slice(body);
    Ok(())
}

async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u64, Vec<u8>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len < 8 {
        return Err(std::io::Error::other("a frame shorter than its id"));
    }
    let mut id = [0u8; 8];
    stream.read_exact(&mut id).await?;
    let mut body = vec![0u8; len - 8];
    stream.read_exact(&mut body).await?;
    Ok((u64::from_be_bytes(id), body))
}

/// Writes every queued frame, gathering those that are waiting into one write, until the
/// queue closes or the connection fails.
async fn write_frames(
    mut stream: impl AsyncWrite + Unpin,
    mut queue: mpsc::UnboundedReceiver<(u64, Option<u8>, Vec<u8>)>,
) {
    let mut out = Vec::with_capacity(WRITE_BATCH);
    while let Some((id, tag, body)) = queue.recv().await {
        out.clear();
        if frame(&mut out, id, tag, &body).is_err() {
            return;
        }
        while out.len() < WRITE_BATCH {
            let Ok((id, tag, body)) = queue.try_recv() else {
                break;
            };
            if frame(&mut out, id, tag, &body).is_err() {
                return;
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// One connection to a peer, shared by every request to it.
struct Connection {
    queue: mpsc::UnboundedSender<(u64, Option<u8>, Vec<u8>)>,
    waiting: Waiting,
    next: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Connection {
    async fn open(addr: &str) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let (queue, frames) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(write, frames));
        let waiting: Waiting = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (replies, done) = (waiting.clone(), closed.clone());
        tokio::spawn(async move {
            let mut read = BufReader::with_capacity(READ_BUFFER, read);
            while let Ok((id, body)) = read_frame(&mut read).await {
                let waiter = replies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(body);
                }
            }
            // The peer is gone: fail every request still waiting (dropping its sender),
            // and let the next call connect again.
            done.store(true, Ordering::Release);
            replies.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(Connection {
            queue,
            waiting,
            next: AtomicU64::new(0),
            closed,
        })
    }

    async fn exchange(&self, request: Vec<u8>) -> Result<Vec<u8>, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Forget the request if this call is dropped (a timeout) before its reply.
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        self.queue
            .send((id, None, request))
            .map_err(|_| "the connection closed".to_owned())?;
        let mut reply = rx.await.map_err(|_| "the connection closed".to_owned())?;
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

struct Forget<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// A wire with one connection per peer address, opened on first use and again after it
/// fails.
#[derive(Clone, Default)]
pub struct TcpWire {
    connections: Arc<Mutex<HashMap<String, Arc<Connection>>>>,
}

impl TcpWire {
    async fn connection(&self, addr: &str) -> Result<Arc<Connection>, String> {
        let open = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .cloned();
        if let Some(c) = open {
            return Ok(c);
        }
        // Two calls may both connect; the later one's connection is kept, and the other
        // serves its own request and closes when that is done.
        let c = Arc::new(Connection::open(addr).await.map_err(|e| e.to_string())?);
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_owned(), c.clone());
        Ok(c)
    }
}

impl Wire for TcpWire {
    fn call(&self, to: &Member, request: Vec<u8>, timeout: Duration) -> WireFuture {
        let wire = self.clone();
        let addr = to.addr.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, async {
                wire.connection(&addr).await?.exchange(request).await
            })
            .await
            .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
        })
    }
}

/// Serves the host's replicas on `listener` until aborted (dropping the task drops every
/// connection and every request being served with it).
pub async fn serve(listener: TcpListener, host: RaftHost) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        connections.spawn(serve_connection(stream, host));
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection(stream: TcpStream, host: RaftHost) {
    let (read, write) = stream.into_split();
    let (replies, frames) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(write_frames(write, frames));
    let mut read = BufReader::with_capacity(READ_BUFFER, read);
    while let Ok((id, request)) = read_frame(&mut read).await {
        let host = host.clone();
        let replies = replies.clone();
        tasks.spawn(async move {
            let reply = match host.handle(&request).await {
                Ok(reply) => (id, Some(0), reply),
                Err(why) => (id, Some(1), why.into_bytes()),
            };
            let _ = replies.send(reply);
        });
        while tasks.try_join_next().is_some() {}
    }
    // The client closed: let the replies being made go out before the connection does.
    drop(replies);
    while tasks.join_next().await.is_some() {}
}
