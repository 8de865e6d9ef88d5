//! An HTTPS client for the benchmark: one HTTP/1.1 connection per client, authenticated
//! with the admin kubeconfig's client certificate, as kubectl is.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ApiBenchError;

fn bad(what: impl std::fmt::Display) -> ApiBenchError {
    ApiBenchError::Client(what.to_string())
}

/// Where the API server is and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: TlsConnector,
}

fn field<'a>(config: &'a serde_json::Value, pointer: &str) -> Result<&'a str, ApiBenchError> {
    config
        .pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad(format!("the kubeconfig has no {pointer}")))
}

fn data(config: &serde_json::Value, pointer: &str) -> Result<Vec<u8>, ApiBenchError> {
    STANDARD.decode(field(config, pointer)?).map_err(bad)
}

impl Endpoint {
    /// The endpoint an admin kubeconfig (as the master writes it) names.
    pub fn from_kubeconfig(path: &Path) -> Result<Endpoint, ApiBenchError> {
        let text = std::fs::read_to_string(path)?;
        let config: serde_json::Value = serde_yaml::from_str(&text).map_err(bad)?;
        let server = field(&config, "/clusters/0/cluster/server")?;
        let addr: SocketAddr = server
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| bad(format!("server {server}: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&data(
            &config,
            "/clusters/0/cluster/certificate-authority-data",
        )?) {
            roots.add(cert.map_err(bad)?).map_err(bad)?;
        }
        let chain = CertificateDer::pem_slice_iter(&data(
            &config,
            "/users/0/user/client-certificate-data",
        )?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
        let key = PrivateKeyDer::from_pem_slice(&data(&config, "/users/0/user/client-key-data")?)
            .map_err(bad)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(bad)?;
        Ok(Endpoint {
            addr,
            name: ServerName::IpAddress(addr.ip().into()),
            tls: TlsConnector::from(Arc::new(tls)),
        })
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<Conn, ApiBenchError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.name.clone(), tcp).await?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(bad)?;
        tokio::spawn(connection);
        Ok(Conn { send })
    }
}

/// One connection, one request at a time.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiBenchError> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "kubernetes")
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(bad)?;
        self.send.ready().await.map_err(bad)?;
        self.send.send_request(request).await.map_err(bad)
    }

    /// A request and its whole response: the status code and the body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), ApiBenchError> {
        let response = self.send(method, path, content_type, body).await?;
        let code = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(bad)?
            .to_bytes();
        Ok((code, body))
    }

    /// A request whose body is read as it comes (a watch).
    pub async fn stream(&mut self, path: &str) -> Result<hyper::body::Incoming, ApiBenchError> {
        let response = self
            .send("GET", path, "application/json", Vec::new())
            .await?;
        if response.status() != http::StatusCode::OK {
            return Err(bad(format!("watch {path}: {}", response.status())));
        }
        Ok(response.into_body())
    }
}
