//! HTTPS serving with rustls: optional client certificates verified against the cluster CA,
//! the caller's identity handed to every request, and connections that die with their server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Who is calling: from the client certificate (CN = user, O = groups) or a bearer token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub user: Option<String>,
    pub groups: Vec<String>,
}

impl Identity {
    /// Whether the caller is in `system:masters`, the admin group.
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// TLS failures while setting up a server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid TLS material: {0}")]
    Material(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A rustls server config: `cert_chain`/`key` serve, client certificates are optional and, when
/// given, must chain to `client_ca`.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: CertificateDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(client_ca)
        .map_err(|e| TlsError::Material(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Material(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Material(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)
        .map_err(|e| TlsError::Material(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity in a verified client certificate.
pub fn identity_of(cert: &CertificateDer<'_>) -> Identity {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Identity::default();
    };
    let subject = parsed.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Identity { user, groups }
}

/// Bearer tokens and who they stand for.
pub type Tokens = HashMap<String, Identity>;

fn bearer_identity<B>(req: &hyper::Request<B>, tokens: &Tokens) -> Identity {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| tokens.get(token.trim()))
        .cloned()
        .unwrap_or_default()
}

/// Binds `addr`, retrying briefly: a restarted server may find its predecessor's socket still
/// closing.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TlsError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err)
                if tokio::time::Instant::now() < deadline
                    && err.kind() == std::io::ErrorKind::AddrInUse =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => return Err(TlsError::Bind { addr, source }),
        }
    }
}

/// Serves `router` over TLS on `listener` until the returned future is dropped; every
/// connection is owned by it and closes with it.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    tokens: Arc<Tokens>,
) {
    let acceptor = TlsAcceptor::from(config);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let tokens = tokens.clone();
                connections.spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(identity_of).unwrap_or_default();
                    let tokens = tokens.clone();
                    let service = router.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        let who = if identity.user.is_some() { identity.clone() } else { bearer_identity(&req, &tokens) };
                        req.extensions_mut().insert(who);
                        req
                    });
                    let hyper_service = TowerToHyperService::new(service);
                    if let Err(err) = Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(tls), hyper_service).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
