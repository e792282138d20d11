//! HTTPS for the REST API: the server's certificate chain and key from PEM files (rustls with
//! the ring provider), an accept loop that runs each TLS handshake on its own task with a
//! deadline (a client that never finishes its handshake holds nothing but its own task), and
//! a development CA with a server certificate for `tessera dev`.
//!
//! Clients trust only the CA they are given ([`CoordinatorClient::with_ca`]
//! (crate::client::CoordinatorClient::with_ca)); there are no built-in roots.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A certificate or key is unusable.
    #[error("{0}")]
    Invalid(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The server side of HTTPS: the certificate chain in `cert` (PEM, the server's certificate
/// first) and its private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only, TLS 1.2
/// and 1.3.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, "certificates", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, "certificates", e))?;
    if chain.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no PEM certificate found; give the server's certificate (then its \
             intermediates) in PEM",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{} and {} do not make a usable certificate and key ({e}); check that the key \
                 is the certificate's",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_error(path: &Path, what: &str, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Io {
            path: path.to_owned(),
            source,
        },
        other => TlsError::Invalid(format!(
            "{}: cannot read the {what} as PEM ({other:?})",
            path.display()
        )),
    }
}

/// A TCP listener that hands out TLS streams: each accepted connection's handshake runs on its
/// own task (at most [`HANDSHAKE_DEADLINE`]), so a slow or silent client delays nobody else.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let tls = TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait a moment, as axum does.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let tls = tls.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_DEADLINE, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task ends only when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The files of a development CA and a server certificate it issued
/// ([`dev_certificates`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevTls {
    /// The CA certificate (PEM): what clients trust (`tessera --ca-cert`).
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// Makes a development CA and a server certificate for `hosts` (DNS names or IP addresses)
/// in `dir`: `ca.pem`, `server.pem` and `server.key` (0600). The CA's own key is not kept, so
/// it issues nothing else. For `tessera dev` and tests; a deployment uses its own PKI.
pub fn dev_certificates(dir: &Path, hosts: &[String]) -> Result<DevTls, TlsError> {
    let invalid = |e: rcgen::Error| TlsError::Invalid(format!("certificate generation: {e}"));
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tessera development API CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(invalid)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(invalid)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(hosts.to_vec()).map_err(invalid)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Tessera coordinator API");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(invalid)?;
    let cert = params.signed_by(&key, &issuer).map_err(invalid)?;

    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let files = DevTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    write(&files.ca, &ca_cert.pem(), false)?;
    write(&files.cert, &cert.pem(), false)?;
    write(&files.key, &key.serialize_pem(), true)?;
    Ok(files)
}

/// Writes a file; a secret one is created with mode 0600 before anything is written.
fn write(path: &Path, content: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(content.as_bytes()).map_err(io_error(path))
}
