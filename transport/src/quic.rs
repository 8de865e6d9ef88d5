//! QUIC configuration: mutual TLS 1.3 on every connection, keep-alive and a short idle
//! timeout as the failure detector, and a verifier that pins the CA by hash for joining.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::pki::ca_cert_hash;

/// The ALPN protocol of the cluster transport.
pub const ALPN: &[u8] = b"shoal/1";
/// The server name nodes ask masters for; every master certificate carries it.
pub const MASTER_SERVER_NAME: &str = "shoal-master";

/// How often an idle connection is pinged.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// How long without any packet before a peer is declared dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Configuration failures.
#[derive(Debug, thiserror::Error)]
pub enum QuicConfigError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(String),
    #[error("QUIC crypto: {0}")]
    Crypto(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // Three seconds always fits the VarInt range of idle timeouts.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.max_concurrent_bidi_streams(256u32.into());
    Arc::new(t)
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore, QuicConfigError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(roots)
}

/// The server side: presents `chain` (leaf, then CA); client certificates are optional at the
/// TLS layer — a connection without one may only ask to join.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: &CertificateDer<'static>,
) -> Result<quinn::ServerConfig, QuicConfigError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| QuicConfigError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| QuicConfigError::Crypto(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The client side of a member: trusts the cluster CA and presents its own certificate.
pub fn client_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: &CertificateDer<'static>,
) -> Result<quinn::ClientConfig, QuicConfigError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    finish_client(tls)
}

fn finish_client(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, QuicConfigError> {
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| QuicConfigError::Crypto(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The client side of a joining node, which has no CA yet: it accepts the master only if the
/// CA in the master's chain has the pinned hash and the master's certificate chains to it.
/// The hash it saw is recorded, so a mismatch can be reported clearly.
pub fn pinned_client_config(
    expected_hash: &str,
    seen: Arc<Mutex<Option<String>>>,
) -> Result<quinn::ClientConfig, QuicConfigError> {
    let verifier = Arc::new(PinnedCaVerifier {
        expected: expected_hash.to_owned(),
        seen,
        provider: provider(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    finish_client(tls)
}

#[derive(Debug)]
struct PinnedCaVerifier {
    expected: String,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .last()
            .ok_or_else(|| rustls::Error::General("the master sent no CA certificate".into()))?;
        let hash = ca_cert_hash(ca).map_err(|e| rustls::Error::General(e.to_string()))?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash.clone());
        if hash != self.expected {
            return Err(rustls::Error::General(format!(
                "CA certificate hash {hash} does not match the expected {}",
                self.expected
            )));
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(
            end_entity,
            &intermediates[..intermediates.len() - 1],
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate chain a connected peer presented, if any.
pub fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|b| *b)
}
