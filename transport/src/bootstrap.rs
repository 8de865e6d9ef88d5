//! Joining: a node without a certificate connects, pinning the CA by hash, presents a
//! bootstrap token and a certificate request, and receives a certificate naming it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::pki::{CertPair, ClusterCa, certificate_request, constant_time_eq};
use crate::quic::{MASTER_SERVER_NAME, pinned_client_config};
use crate::stream::StreamKind;

/// The largest join message accepted, either way.
const MAX_MESSAGE: u32 = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct JoinRequest {
    token: String,
    name: String,
    csr: String,
    /// A master joining the control plane: it receives the CA's key and the bootstrap
    /// token too, since every master issues certificates and admits nodes.
    #[serde(default)]
    control_plane: bool,
}

#[derive(Serialize, Deserialize)]
struct JoinResponse {
    certificate: Option<String>,
    ca: Option<String>,
    error: Option<String>,
    #[serde(default)]
    ca_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
    /// To a joining master: the cluster's store shards, fixed when it was created.
    #[serde(default)]
    shards: Option<u32>,
}

/// What a joining master receives: the CA (certificate and key), the bootstrap token and
/// the cluster's store shards (which a master that predates them does not send).
pub struct ControlPlaneKit {
    pub ca: CertPair,
    pub token: String,
    pub shards: Option<u32>,
}

/// Why a join failed. The messages are what the node's operator reads.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "the master's CA certificate hash is {seen}, not the {expected} given with --ca-cert-hash: refusing to trust this master"
    )]
    CaHashMismatch { expected: String, seen: String },
    #[error("the master refused to let this node join: {0}")]
    Refused(String),
    #[error("cannot reach the master at {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("join protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Config(#[from] crate::quic::QuicConfigError),
}

async fn write_message<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), JoinError> {
    let body = serde_json::to_vec(msg).map_err(|e| JoinError::Protocol(e.to_string()))?;
    let len =
        u32::try_from(body.len()).map_err(|_| JoinError::Protocol("message too large".into()))?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    send.write_all(&body)
        .await
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    Ok(())
}

async fn read_message<T: for<'de> Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
) -> Result<T, JoinError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MESSAGE {
        return Err(JoinError::Protocol(format!(
            "message of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| JoinError::Protocol(e.to_string()))
}

/// Joins the cluster through `master` and returns the node's certificate and the CA (PEM).
pub async fn join(
    master: SocketAddr,
    token: &str,
    ca_hash: &str,
    name: &str,
) -> Result<(CertPair, String), JoinError> {
    let (key_pem, response) = exchange(master, token, ca_hash, name, false).await?;
    match (response.certificate, response.ca, response.error) {
        (Some(cert_pem), Some(ca), _) => Ok((CertPair { cert_pem, key_pem }, ca)),
        (_, _, Some(error)) => Err(JoinError::Refused(error)),
        _ => Err(JoinError::Protocol(
            "the master's answer had neither a certificate nor an error".into(),
        )),
    }
}

/// Joins the control plane through `master`: returns the cluster CA with its key and the
/// bootstrap token, from which the new master makes its own certificates.
pub async fn join_control_plane(
    master: SocketAddr,
    token: &str,
    ca_hash: &str,
    name: &str,
) -> Result<ControlPlaneKit, JoinError> {
    let (_, response) = exchange(master, token, ca_hash, name, true).await?;
    match (response.ca, response.ca_key, response.token, response.error) {
        (Some(cert_pem), Some(key_pem), Some(token), _) => Ok(ControlPlaneKit {
            ca: CertPair { cert_pem, key_pem },
            token,
            shards: response.shards,
        }),
        (_, _, _, Some(error)) => Err(JoinError::Refused(error)),
        _ => Err(JoinError::Protocol(
            "the master's answer had neither the CA nor an error".into(),
        )),
    }
}

async fn exchange(
    master: SocketAddr,
    token: &str,
    ca_hash: &str,
    name: &str,
    control_plane: bool,
) -> Result<(String, JoinResponse), JoinError> {
    let seen = Arc::new(Mutex::new(None));
    let config = pinned_client_config(ca_hash, seen.clone())?;
    let bind: SocketAddr = if master.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| JoinError::Protocol("bind address".into()))?;
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| JoinError::Unreachable {
        addr: master,
        reason: e.to_string(),
    })?;
    let connecting = endpoint
        .connect_with(config, master, MASTER_SERVER_NAME)
        .map_err(|e| JoinError::Unreachable {
            addr: master,
            reason: e.to_string(),
        })?;
    let conn = match connecting.await {
        Ok(conn) => conn,
        Err(err) => {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(match seen {
                Some(seen) if seen != ca_hash => JoinError::CaHashMismatch {
                    expected: ca_hash.to_owned(),
                    seen,
                },
                _ => JoinError::Unreachable {
                    addr: master,
                    reason: err.to_string(),
                },
            });
        }
    };
    let (key_pem, csr) = certificate_request(name)?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    send.write_all(&[StreamKind::Join as u8])
        .await
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    write_message(
        &mut send,
        &JoinRequest {
            token: token.to_owned(),
            name: name.to_owned(),
            csr,
            control_plane,
        },
    )
    .await?;
    let _ = send.finish();
    let response: JoinResponse = read_message(&mut recv).await?;
    conn.close(0u32.into(), b"joined");
    endpoint.wait_idle().await;
    Ok((key_pem, response))
}

/// What a master needs to admit nodes.
pub struct JoinAuthority {
    pub ca: Arc<ClusterCa>,
    pub token: String,
    /// The cluster's store shards, told to joining masters; `None` where only nodes join.
    pub shards: Option<u32>,
}

fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl JoinAuthority {
    fn decide(&self, request: &JoinRequest) -> JoinResponse {
        let refuse = |why: &str| JoinResponse {
            certificate: None,
            ca: None,
            error: Some(why.to_owned()),
            ca_key: None,
            token: None,
            shards: None,
        };
        if !constant_time_eq(&request.token, &self.token) {
            return refuse("invalid bootstrap token");
        }
        if !valid_node_name(&request.name) {
            return refuse(&format!(
                "node name {:?} is not a lowercase RFC 1123 subdomain",
                request.name
            ));
        }
        if request.control_plane {
            return JoinResponse {
                certificate: None,
                ca: Some(self.ca.cert_pem().to_owned()),
                error: None,
                ca_key: Some(self.ca.pair().key_pem.clone()),
                token: Some(self.token.clone()),
                shards: self.shards,
            };
        }
        match self
            .ca
            .sign_request(&request.csr, &request.name, &["system:nodes"])
        {
            Ok(cert) => JoinResponse {
                certificate: Some(cert),
                ca: Some(self.ca.cert_pem().to_owned()),
                error: None,
                ca_key: None,
                token: None,
                shards: None,
            },
            Err(err) => refuse(&format!("invalid certificate request: {err}")),
        }
    }

    /// Answers one join stream.
    pub async fn serve(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let request: JoinRequest = match read_message(&mut recv).await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(error = %err, "malformed join request");
                return;
            }
        };
        let response = self.decide(&request);
        match &response.error {
            None if request.control_plane => {
                tracing::info!(master = %request.name, "master joined the control plane")
            }
            None => tracing::info!(node = %request.name, "node joined"),
            Some(why) => tracing::warn!(node = %request.name, reason = %why, "join refused"),
        }
        let _ = write_message(&mut send, &response).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}

/// Loads the node's saved identity from `dir`, if it joined before.
pub fn load_identity(dir: &Path) -> Option<(CertPair, String)> {
    let pair = CertPair::load(&dir.join("node")).ok()?;
    let ca = std::fs::read_to_string(dir.join("ca.crt")).ok()?;
    Some((pair, ca))
}

/// Saves the node's identity in `dir`.
pub fn save_identity(
    dir: &Path,
    pair: &CertPair,
    ca_pem: &str,
) -> Result<(), crate::pki::PkiError> {
    pair.save(&dir.join("node"))?;
    std::fs::write(dir.join("ca.crt"), ca_pem).map_err(|source| crate::pki::PkiError::Io {
        path: dir.join("ca.crt"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_joining_master_is_told_the_clusters_shards_and_only_with_the_token() {
        let dir = std::env::temp_dir().join(format!("shoal-join-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let authority = JoinAuthority {
            ca: Arc::new(ClusterCa::load_or_create(&dir).expect("a CA")),
            token: "abcdef.0123456789abcdef".into(),
            shards: Some(3),
        };
        let (_, csr) = certificate_request("m2").expect("a request");
        let request = |token: &str, control_plane: bool| JoinRequest {
            token: token.into(),
            name: "m2".into(),
            csr: csr.clone(),
            control_plane,
        };
        let master = authority.decide(&request(&authority.token, true));
        assert_eq!(master.shards, Some(3));
        assert!(master.ca_key.is_some() && master.error.is_none());
        let node = authority.decide(&request(&authority.token, false));
        assert_eq!(node.shards, None);
        assert!(node.certificate.is_some());
        let refused = authority.decide(&request("wrong.0123456789abcdef", true));
        assert_eq!(refused.shards, None);
        assert!(refused.error.is_some());
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn node_names_follow_kubernetes_rules() {
        assert!(valid_node_name("node-1"));
        assert!(valid_node_name("a.b.c"));
        assert!(!valid_node_name("Node_1"));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name(""));
    }
}
