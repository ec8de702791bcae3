//! TLS material: loading PEM files into rustls configurations.
//!
//! Everything here runs while the configuration is validated, so a bad
//! certificate or key is a configuration error with the file's name, never
//! a panic at connection time. The rustls `ring` provider is used, with
//! TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate of a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate found"));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How the proxy connects to Redis over TLS.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the client configuration from PEM files.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the file or setting at fault.
    pub fn load(
        ca_file: &Path,
        server_name: &str,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_certs(ca_file)? {
            roots.add(cert).map_err(|e| file_error(ca_file, e))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (client_cert, client_key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| file_error(key, e))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Config(
                    "client_cert_file and client_key_file go together".into(),
                ));
            }
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Config(format!("server name {server_name:?}: {e}")))?;
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A TLS listener's configuration, re-read from its files on SIGHUP.
pub struct ListenerTls {
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    client_ca_file: Option<std::path::PathBuf>,
    acceptor: arc_swap::ArcSwap<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("cert_file", &self.cert_file)
            .field("mutual", &self.is_mutual())
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Loads the listener's certificate, key and, for mutual TLS, the CA
    /// that signs client certificates.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the file at fault.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let acceptor = build_acceptor(cert, key, client_ca)?;
        Ok(ListenerTls {
            cert_file: cert.to_owned(),
            key_file: key.to_owned(),
            client_ca_file: client_ca.map(Path::to_owned),
            acceptor: arc_swap::ArcSwap::from_pointee(acceptor),
        })
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.client_ca_file.is_some()
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> Arc<tokio_rustls::TlsAcceptor> {
        self.acceptor.load_full()
    }

    /// Re-reads the files; on error the current configuration stays.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] naming the file at fault.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = build_acceptor(
            &self.cert_file,
            &self.key_file,
            self.client_ca_file.as_deref(),
        )?;
        self.acceptor.store(Arc::new(acceptor));
        Ok(())
    }
}

fn build_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| file_error(ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| file_error(key, e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
