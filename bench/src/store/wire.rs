//! Raft and client requests over loopback TCP for the in-process masters: one request per
//! connection at a time, connections pooled. Reads are buffered, so that a frame's length
//! and body usually come in with one receive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_store::raft::{Member, RaftHost, Wire, WireFuture};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Frames: a u32 length, then the bytes. A response's first byte is 0 (bytes follow) or 1
/// (an error message follows).
async fn write_frame(stream: &mut TcpStream, tag: Option<u8>, body: &[u8]) -> std::io::Result<()> {
    let len = body.len() + usize::from(tag.is_some());
    let len = u32::try_from(len).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend(tag);
    out.extend_from_slice(body);
    stream.write_all(&out).await
}

async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

#[derive(Clone, Default)]
pub struct TcpWire {
    pools: Arc<Mutex<HashMap<String, Vec<BufReader<TcpStream>>>>>,
}

impl TcpWire {
    async fn exchange(&self, addr: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        let pooled = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop);
        let mut stream = match pooled {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                BufReader::new(s)
            }
        };
        write_frame(stream.get_mut(), None, request)
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = read_frame(&mut stream).await.map_err(|e| e.to_string())?;
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_owned())
            .or_default()
            .push(stream);
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

impl Wire for TcpWire {
    fn call(&self, to: &Member, request: Vec<u8>, timeout: Duration) -> WireFuture {
        let wire = self.clone();
        let addr = to.addr.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, wire.exchange(&addr, &request))
                .await
                .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
        })
    }
}

/// Serves the host's replicas on `listener` until aborted (dropping the task drops every
/// connection with it).
pub async fn serve(listener: TcpListener, host: RaftHost) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let mut stream = BufReader::new(stream);
        let host = host.clone();
        connections.spawn(async move {
            while let Ok(request) = read_frame(&mut stream).await {
                let written = match host.handle(&request).await {
                    Ok(reply) => write_frame(stream.get_mut(), Some(0), &reply).await,
                    Err(why) => write_frame(stream.get_mut(), Some(1), why.as_bytes()).await,
                };
                if written.is_err() {
                    break;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
}
