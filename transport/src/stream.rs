//! A ractor_cluster session carried on one QUIC bidirectional stream, with the fault seam's
//! delay applied to its writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};
use shoal_core::faults::Faults;
use tokio::io::AsyncWrite;
use tokio::time::Sleep;

/// The first byte of every stream says what it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamKind {
    /// A ractor_cluster node session.
    Actors = 1,
    /// A node asking to join with a bootstrap token.
    Join = 2,
    /// One Raft request between masters and its response.
    Raft = 3,
}

impl StreamKind {
    /// The kind a stream's first byte names.
    pub fn from_byte(byte: u8) -> Option<StreamKind> {
        match byte {
            1 => Some(StreamKind::Actors),
            2 => Some(StreamKind::Join),
            3 => Some(StreamKind::Raft),
            _ => None,
        }
    }
}

/// One QUIC stream pair handed to ractor_cluster as its session transport.
pub struct QuicSession {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// The peer's name, from its certificate.
    pub peer: String,
    pub local: String,
}

impl ClusterBidiStream for QuicSession {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let writer = DelayedWrite {
            inner: self.send,
            peer: self.peer,
            sleep: None,
            waited: false,
        };
        (Box::new(self.recv), Box::new(writer))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.clone())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.clone())
    }
}

/// Delays each write by the peer's injected delay (none, normally).
struct DelayedWrite {
    inner: quinn::SendStream,
    peer: String,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The current write has already waited its delay.
    waited: bool,
}

impl AsyncWrite for DelayedWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.waited {
            let delay = Faults::global().delay(&self.peer);
            if !delay.is_zero() {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            self.waited = true;
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if result.is_ready() {
            self.waited = false;
        }
        result.map_err(io::Error::from)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
