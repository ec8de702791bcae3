//! Certificates generated for the test that needs them, and a TLS client.
//!
//! Every certificate authority, server and client certificate is made
//! with `rcgen` when a test starts and written into that test's own
//! directory: no private key is ever committed. The client speaks rustls
//! with the `ring` provider and hands back a [`Client`] over the TLS
//! session.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Client, within};

/// A certificate authority of the test's own.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A subject alternative name of a client certificate.
#[derive(Clone, Copy)]
pub enum San<'a> {
    Dns(&'a str),
    Uri(&'a str),
}

impl Ca {
    /// A new self-signed CA whose subject CN is `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA");
        Ca { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self) -> Pem {
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server names");
        params.distinguished_name = common_name("asynq-guard test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with subject CN `cn` (none if empty) and the
    /// given subject alternative names.
    pub fn client(&self, cn: &str, sans: &[San<'_>]) -> Pem {
        let mut params = CertificateParams::default();
        params.distinguished_name = if cn.is_empty() {
            DistinguishedName::new()
        } else {
            common_name(cn)
        };
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san {
                San::Dns(v) => SanType::DnsName((*v).try_into().expect("DNS name")),
                San::Uri(v) => SanType::URI((*v).try_into().expect("URI")),
            })
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Pem {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// Paths of a certificate and key written to disk.
#[derive(Clone)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pem {
    /// Writes `<stem>.pem` and `<stem>-key.pem` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> PemFiles {
        let files = PemFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        };
        fs::write(&files.cert, &self.cert).expect("write certificate");
        fs::write(&files.key, &self.key).expect("write key");
        files
    }
}

/// Writes `pem` (a CA certificate) to `dir/<name>` and returns the path.
pub fn write_ca(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, pem).expect("write CA certificate");
    path
}

/// The `[listener.tls]` table for a listener presenting `server`; with
/// `client_ca`, mutual TLS.
pub fn listener_tls(server: &PemFiles, client_ca: Option<&Path>) -> String {
    let mut keys = format!(
        "[listener.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        server.cert.display().to_string(),
        server.key.display().to_string()
    );
    if let Some(ca) = client_ca {
        keys.push_str(&format!(
            "client_ca_file = {:?}\n",
            ca.display().to_string()
        ));
    }
    keys
}

/// Opens a TLS session to `address` that trusts only `ca_pem` and checks
/// the name `127.0.0.1`; presents `client` if given. The error is the
/// client's view of a failed handshake.
pub async fn tls_session(
    address: &str,
    ca_pem: &str,
    client: Option<&Pem>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    within(&format!("TLS session with {address}"), async {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        connector.connect(name, tcp).await
    })
    .await
}

/// A [`Client`] over a TLS session that must be established.
pub async fn tls_client(address: &str, ca_pem: &str, client: Option<&Pem>) -> Client {
    let session = tls_session(address, ca_pem, client)
        .await
        .unwrap_or_else(|e| panic!("TLS session with {address}: {e}"));
    Client::over(session)
}

/// Expects the server to refuse the TLS session: the handshake fails, or
/// (TLS 1.3 decides on the client certificate after the client has
/// finished) the first command gets no reply but an alert or a close.
/// Returns the client's error text.
pub async fn tls_refused(address: &str, ca_pem: &str, client: Option<&Pem>) -> String {
    let mut session = match tls_session(address, ca_pem, client).await {
        Err(e) => return e.to_string(),
        Ok(session) => session,
    };
    let outcome = within("the refused TLS session to end", async {
        session.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        session.flush().await?;
        let mut buf = Vec::new();
        session.read_to_end(&mut buf).await.map(|_| buf)
    })
    .await;
    match outcome {
        Err(e) => e.to_string(),
        Ok(bytes) => {
            assert!(
                bytes.is_empty(),
                "the server answered a refused TLS client: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            "closed without a reply".into()
        }
    }
}
