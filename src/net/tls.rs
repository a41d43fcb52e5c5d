//! rustls configurations, always TLS 1.3, always the ring provider, always
//! certificates on both ends.
//!
//! | config | who uses it | presents | requires of the other side |
//! |---|---|---|---|
//! | [`server_config`] | `micropay-server` | server certificate | a client certificate chained to the CA |
//! | [`client_config`] | a person talking to the server | their certificate | a server certificate for the dialled name |
//! | [`peer_listener_config`] | a payee's `serve` | the payee's own certificate | a client certificate chained to the CA |
//! | [`payer_config`] | a payer's `send` | their certificate | a certificate for the payee's name |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::core::keys::SigningKey;
use crate::net::identity::{Identity, IdentityError};
use crate::net::revocation::Crl;

/// The only protocol version micropay speaks.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Whether a failed handshake failed because the other side's
/// certificate does not chain to the CA we trust (another deployment's
/// certificate, or a wrong CA file): the one failure a person can fix by
/// choosing the right files, so both ends say it in words.
pub fn is_foreign_ca(e: &std::io::Error) -> bool {
    use rustls::CertificateError::{BadSignature, UnknownIssuer};
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    matches!(
        rustls_error,
        Some(rustls::Error::InvalidCertificate(
            UnknownIssuer | BadSignature
        ))
    )
}

/// Whether the other side aborted the handshake because it does not trust
/// our certificate (it trusts another CA): the alerts rustls and OpenSSL
/// send for an unknown or badly signed issuer.
pub fn refused_by_peer_ca(e: &std::io::Error) -> bool {
    use rustls::AlertDescription::{BadCertificate, DecryptError, UnknownCA};
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    matches!(
        rustls_error,
        Some(rustls::Error::AlertReceived(
            UnknownCA | BadCertificate | DecryptError
        ))
    )
}

/// Why TLS material could not be loaded or a configuration built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("{path}: cannot read: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{key}: this key does not belong to the certificate in {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// Certificates and key of one party, with the CA they trust.
#[derive(Debug)]
pub struct Material {
    /// CA certificates trusted for the other side.
    pub roots: Vec<CertificateDer<'static>>,
    /// Our certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Our private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

impl Material {
    /// Loads PEM files: the CA certificate(s), our certificate chain and
    /// our PKCS#8 private key. Every error names the file.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Material, TlsError> {
        let roots = read_certs(ca)?;
        let chain = read_certs(cert)?;
        let key_bytes = std::fs::read(key).map_err(|error| TlsError::Read {
            path: key.to_owned(),
            error,
        })?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            what: format!("no PEM private key found ({e})"),
        })?;
        let material = Material {
            roots,
            chain,
            key: key_der,
        };
        material.check_key_matches().map_err(|e| match e {
            KeyCheck::Unusable(what) => TlsError::Pem {
                path: key.to_owned(),
                what,
            },
            KeyCheck::Mismatch => TlsError::KeyMismatch {
                key: key.to_owned(),
                cert: cert.to_owned(),
            },
        })?;
        Ok(material)
    }

    /// Builds material from PEM strings (tests and benchmarks).
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Material, TlsError> {
        let pem_err = |what: &str| TlsError::Pem {
            path: PathBuf::from("<memory>"),
            what: what.to_owned(),
        };
        let roots = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| pem_err("bad CA PEM"))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| pem_err("bad certificate PEM"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| pem_err("bad key PEM"))?;
        Ok(Material { roots, chain, key })
    }

    /// The signing key (the same key as the TLS key).
    pub fn signing_key(&self) -> Result<SigningKey, TlsError> {
        SigningKey::from_pkcs8_der(self.key.secret_der()).map_err(|e| TlsError::Pem {
            path: PathBuf::from("<key>"),
            what: e.to_string(),
        })
    }

    fn check_key_matches(&self) -> Result<(), KeyCheck> {
        let PrivateKeyDer::Pkcs8(pkcs8) = &self.key else {
            return Err(KeyCheck::Unusable(
                "the key must be PKCS#8 (\"BEGIN PRIVATE KEY\"); convert it with `openssl pkcs8 -topk8 -nocrypt`".into(),
            ));
        };
        let signing = SigningKey::from_pkcs8_der(pkcs8.secret_pkcs8_der())
            .map_err(|e| KeyCheck::Unusable(e.to_string()))?;
        let leaf = self.chain.first().ok_or(KeyCheck::Mismatch)?;
        let cert_key = crate::net::identity::public_key_of_cert(leaf)
            .map_err(|e| KeyCheck::Unusable(e.to_string()))?;
        if cert_key.spki_der() != signing.verifying_key().spki_der() {
            return Err(KeyCheck::Mismatch);
        }
        Ok(())
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        for root in &self.roots {
            store.add(root.clone())?;
        }
        Ok(store)
    }
}

enum KeyCheck {
    Unusable(String),
    Mismatch,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no certificate in this file (expected \"BEGIN CERTIFICATE\")".into(),
        });
    }
    Ok(certs)
}

/// The crypto provider: ring, chosen explicitly.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's configuration: TLS 1.3, a client certificate chained to
/// the CA required.
pub fn server_config(material: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_crl(material, None)
}

/// The server's configuration, with the certificates a CRL revokes
/// refused at the handshake when `crl` is given (its verifier follows
/// every reload, see [`crate::net::revocation::Crl`]).
pub fn server_config_with_crl(
    material: &Material,
    crl: Option<&Crl>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = match crl {
        Some(crl) => crl.verifier(),
        None => WebPkiClientVerifier::builder_with_provider(
            Arc::new(material.root_store()?),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?,
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    Ok(Arc::new(config))
}

/// A payee's peer listener: the payee's own certificate as the server
/// side, client certificates required. The same rules as the server's.
pub fn peer_listener_config(material: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(material)
}

/// A payee's peer listener that refuses, at the handshake, the payers
/// whose certificates `crl` revokes (see [`server_config_with_crl`]).
pub fn peer_listener_config_with_crl(
    material: &Material,
    crl: Option<&Crl>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_crl(material, crl)
}

/// A person's configuration for talking to the server: presents their
/// certificate, verifies the server's against the CA and the dialled name.
pub fn client_config(material: &Material) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(material.root_store()?)
        .with_client_auth_cert(material.chain.clone(), material.key.clone_key())?;
    Ok(Arc::new(config))
}

/// A payer's configuration for dialling a payee. The payee's name is the
/// TLS server name, so standard hostname verification proves the listener
/// is that person.
pub fn payer_config(material: &Material) -> Result<Arc<ClientConfig>, TlsError> {
    client_config(material)
}

/// The verified person on the other end of a connection. rustls has
/// verified the chain in the handshake; this reads the name and key.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, IdentityError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(IdentityError::DnsNameCount(0))?;
    Identity::from_cert_der(leaf)
}

/// Why a certificate offered for a rebind is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CertCheckError {
    /// The files could not be read.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The file holds no certificate.
    #[error("{0}: no certificate found")]
    Empty(PathBuf),
    /// The chain does not verify against the CA (or the certificate has
    /// expired, or is not yet valid).
    #[error("the certificate does not verify against the CA: {0}")]
    Untrusted(rustls::Error),
    /// The certificate does not name a person.
    #[error("{0}")]
    Identity(#[from] IdentityError),
}

/// Checks the person certificate in `cert` (PEM, leaf first) as the
/// server's handshake would: chained to the CA in `ca`, valid now, usable
/// for client authentication, naming a person. Returns its identity and
/// its DER (what the key history keeps as the proof of a rebind).
pub fn check_person_cert(ca: &Path, cert: &Path) -> Result<(Identity, Vec<u8>), CertCheckError> {
    let roots = read_certs(ca)?;
    let chain = read_certs(cert)?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| CertCheckError::Empty(cert.to_owned()))?;
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(CertCheckError::Untrusted)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    verifier
        .verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
        .map_err(CertCheckError::Untrusted)?;
    let identity = Identity::from_cert_der(leaf)?;
    Ok((identity, leaf.to_vec()))
}
