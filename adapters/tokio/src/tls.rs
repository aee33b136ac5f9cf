//! TLS for Rivulet links (feature `tls`): rustls on the ring backend, TLS 1.3.
//!
//! - [`server_config_from_pem`] and [`client_config`] build rustls configurations from PEM files,
//!   with errors that name the file and what is wrong with it, for a gateway's startup to print.
//! - [`Acceptor`] makes a server speak TLS: `Server::from_listener_with(listener, options,
//!   handler, Acceptor::new(config))`.
//! - [`Connector`] makes a client speak TLS: `connect_via(Connector::new(addr, name, config)?,
//!   options)`; it dials and shakes hands again on every reconnect.
//!
//! Each configuration gets the ring provider explicitly rather than the process default, so a
//! binary that also links another provider still builds the same configurations here.
//!
//! A server and a client over TLS:
//!
//! ```no_run
//! use rivulet_tokio::{ClientOptions, Server, ServerOptions, connect_via, tls};
//! # use rivulet_tokio::server::{Registration, ServerHandler, ClientInfo, HandlerError};
//! # use rivulet_tokio::model::Event;
//! # struct Store;
//! # impl ServerHandler for Store {
//! #     async fn register(&self, _: &ClientInfo, _: Vec<Registration>) -> Result<Vec<Event>, HandlerError> { Ok(Vec::new()) }
//! # }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = tls::server_config_from_pem("gateway.crt", "gateway.key")?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7781").await?;
//! let server = Server::from_listener_with(listener, ServerOptions::default(), Store, tls::Acceptor::new(config))?;
//!
//! let trust = tls::client_config("ca.crt")?;
//! let connector = tls::Connector::new("gateway.example:7781", "gateway.example", trust)?;
//! let (client, events) = connect_via(connector, ClientOptions::new("thermostat")).await?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
/// The rustls this module builds on, for callers that tune a configuration further.
pub use tokio_rustls::rustls;

use crate::client::Connect;
use crate::server::Accept;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM certificate chain (the server's certificate first, then
/// any intermediates) and a PEM private key (PKCS#8, PKCS#1 or SEC1). Both may be one file.
/// Clients are not asked for certificates.
pub fn server_config_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, String> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let certs = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                "{}: the private key does not match the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
            e => format!("{} with {}: {e}", cert_path.display(), key_path.display()),
        })?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts the certificates in a PEM file (a private CA, or the
/// server's own self-signed certificate) and no others.
pub fn client_config(ca_pem_path: impl AsRef<Path>) -> Result<Arc<ClientConfig>, String> {
    let path = ca_pem_path.as_ref();
    let mut roots = RootCertStore::empty();
    for (n, cert) in read_certificates(path)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("{}: certificate {} is not a usable trust anchor: {e}", path.display(), n + 1))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

/// Every certificate in a PEM file; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it (no BEGIN CERTIFICATE block)", path.display()));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{}: no private key in it (no BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
            path.display()
        ),
        e => format!("{}: not valid PEM: {e}", path.display()),
    })
}

/// Shakes hands as a TLS server on each accepted connection; see [`Accept`].
#[derive(Clone)]
pub struct Acceptor(tokio_rustls::TlsAcceptor);

impl Acceptor {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Acceptor(tokio_rustls::TlsAcceptor::from(config))
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Accept for Acceptor {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;

    async fn accept(&self, stream: TcpStream) -> std::io::Result<Self::Stream> {
        self.0.accept(stream).await
    }
}

/// Dials `addr` over TCP and shakes hands as a TLS client, on every (re)connect; see
/// [`Connect`]. Errors say which step failed, for the client's first-connect error.
#[derive(Clone)]
pub struct Connector {
    addr: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

impl Connector {
    /// Connects to `addr` (`host:port`, resolved on each attempt) and accepts only a certificate
    /// valid for `server_name` (a DNS name, or an IP address the certificate lists).
    pub fn new(addr: impl Into<String>, server_name: &str, config: Arc<ClientConfig>) -> Result<Self, String> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| format!("{server_name:?} is neither a DNS name nor an IP address"))?;
        Ok(Connector { addr: addr.into(), server_name, tls: tokio_rustls::TlsConnector::from(config) })
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Connect for Connector {
    type Stream = tokio_rustls::client::TlsStream<TcpStream>;

    async fn connect(&self) -> std::io::Result<Self::Stream> {
        let stream = TcpStream::connect(&*self.addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot connect to {}: {e}", self.addr)))?;
        // Packets are small and latency matters more than segment count.
        let _ = stream.set_nodelay(true);
        self.tls
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake with {} failed: {e}", self.addr)))
    }
}
