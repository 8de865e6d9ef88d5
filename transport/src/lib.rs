//! Transport (DESIGN §3): the cluster PKI, one QUIC endpoint per process with mutual TLS,
//! ractor_cluster sessions carried on QUIC streams, joining with a bootstrap token, reconnects,
//! and the fault-injection seam.

pub mod bootstrap;
pub mod cluster;
pub mod pki;
pub mod quic;
pub mod raft;
pub mod stream;

pub use cluster::{Role, Transport, TransportArgs, TransportMsg};
pub use raft::{RaftHandler, RaftLink, RaftService};
