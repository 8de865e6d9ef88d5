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
use tokio::sync::watch;
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

/// How long open connections may finish their requests once the server stops.
const DRAIN: Duration = Duration::from_secs(1);

/// Serves `router` over TLS on `listener` until the returned future is dropped. Then every
/// connection stops taking requests, finishes the ones in flight for up to [`DRAIN`] (a
/// request that killed the server still gets its answer), and closes.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    tokens: Arc<Tokens>,
) {
    let acceptor = TlsAcceptor::from(config);
    // Dropped with this future: every connection sees its receiver close.
    let (_running, stopped) = watch::channel(());
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, tokens, mut stopped) = (
            acceptor.clone(),
            router.clone(),
            tokens.clone(),
            stopped.clone(),
        );
        tokio::spawn(async move {
            let tls = tokio::select! {
                handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)) => match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                _ = stopped.changed() => return,
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(identity_of)
                .unwrap_or_default();
            let service =
                router.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let who = if identity.user.is_some() {
                        identity.clone()
                    } else {
                        bearer_identity(&req, &tokens)
                    };
                    req.extensions_mut().insert(who);
                    req
                });
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(tls),
                TowerToHyperService::new(service),
            );
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
        });
    }
}
