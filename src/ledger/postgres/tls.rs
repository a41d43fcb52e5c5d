//! TLS to PostgreSQL, from the URL's libpq-style `sslmode` and
//! `sslrootcert` parameters (tokio-postgres knows neither `verify-ca`,
//! `verify-full` nor `sslrootcert`, so they are taken out of the URL here
//! and honoured with rustls through `tokio-postgres-rustls`).
//!
//! | `sslmode` | the connection |
//! |---|---|
//! | absent, `disable`, `allow`, `prefer` | plain TCP (`prefer` does not try TLS: say `require` to get it) |
//! | `require` | TLS; the server's certificate is checked against `sslrootcert` when given (as libpq does), otherwise not at all |
//! | `verify-ca` | TLS; the certificate must chain to `sslrootcert` |
//! | `verify-full` | TLS; the certificate must chain to `sslrootcert` and name the host |

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS; the certificate is verified only if a root certificate is given.
    Require,
    /// TLS; the certificate must chain to the root certificate.
    VerifyCa,
    /// TLS; the certificate must chain to the root certificate and name
    /// the host.
    VerifyFull,
}

/// Why the TLS parameters of a PostgreSQL URL are unusable.
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    /// `sslmode` has a value libpq does not define.
    #[error("sslmode={0} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    BadMode(String),
    /// `verify-ca` or `verify-full` without a CA to verify against.
    #[error("sslmode={0} needs sslrootcert=PATH (the CA certificate, PEM)")]
    NoRootCert(&'static str),
    /// The root certificate file could not be read or holds no certificate.
    #[error("sslrootcert {path}: {why}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// What is left of the URL does not parse.
    #[error("not a valid PostgreSQL URL")]
    BadUrl,
}

/// The TLS wishes of a URL, and the URL without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// The URL tokio-postgres is given: `sslrootcert` removed, `sslmode`
    /// rewritten to `require` when TLS is wanted, else `disable`.
    pub url: String,
    /// The mode asked for.
    pub mode: SslMode,
    /// `sslrootcert`, if given.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `url`.
pub fn split_tls_params(url: &str) -> Result<TlsParams, PgTlsError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root_cert, mut kept) = (SslMode::Disable, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode_str(value).decode_utf8_lossy();
        match key {
            "sslmode" => mode = parse_mode(&decoded)?,
            "sslrootcert" => root_cert = Some(PathBuf::from(decoded.as_ref())),
            _ => kept.push(pair),
        }
    }
    if root_cert.is_none() && matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        let name = if mode == SslMode::VerifyCa {
            "verify-ca"
        } else {
            "verify-full"
        };
        return Err(PgTlsError::NoRootCert(name));
    }
    kept.push(if mode == SslMode::Disable {
        "sslmode=disable"
    } else {
        "sslmode=require"
    });
    Ok(TlsParams {
        url: format!("{base}?{}", kept.join("&")),
        mode,
        root_cert,
    })
}

fn parse_mode(value: &str) -> Result<SslMode, PgTlsError> {
    match value {
        "disable" | "allow" | "prefer" => Ok(SslMode::Disable),
        "require" => Ok(SslMode::Require),
        "verify-ca" => Ok(SslMode::VerifyCa),
        "verify-full" => Ok(SslMode::VerifyFull),
        other => Err(PgTlsError::BadMode(other.chars().take(32).collect())),
    }
}

/// A parsed connection configuration with its TLS connector.
#[derive(Clone)]
pub struct PgConfig {
    /// What tokio-postgres connects with.
    pub config: Config,
    /// The TLS connector, when `sslmode` asks for TLS.
    pub tls: Option<MakeRustlsConnect>,
}

impl PgConfig {
    /// Parses `url` and, when it asks for TLS, reads the root certificate
    /// and builds the rustls client configuration (ring provider).
    pub fn from_url(url: &str) -> Result<PgConfig, PgTlsError> {
        let params = split_tls_params(url)?;
        let config = Config::from_str(&params.url).map_err(|_| PgTlsError::BadUrl)?;
        let tls = match params.mode {
            SslMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(client_config(
                mode,
                params.root_cert.as_deref(),
            )?)),
        };
        Ok(PgConfig { config, tls })
    }
}

/// The rustls client configuration for `mode`.
fn client_config(
    mode: SslMode,
    root_cert: Option<&std::path::Path>,
) -> Result<ClientConfig, PgTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let verifier: Arc<dyn ServerCertVerifier> = match root_cert {
        None => Arc::new(Unverified(provider)),
        Some(path) => {
            let roots = read_roots(path)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| PgTlsError::RootCert {
                    path: path.to_owned(),
                    why: e.to_string(),
                })?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The certificates in the PEM file at `path`.
fn read_roots(path: &std::path::Path) -> Result<RootCertStore, PgTlsError> {
    let bad = |why: String| PgTlsError::RootCert {
        path: path.to_owned(),
        why,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// `verify-ca` (and `require` with a root certificate): the chain is
/// verified, the host name is not, as libpq does.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a root certificate: encrypted, but any certificate is
/// accepted (libpq's meaning of `require`; it protects against passive
/// eavesdropping only). The handshake signature is still checked, so the
/// server holds the key of the certificate it showed.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "postgres://u:pw@127.0.0.1:5432/db";

    #[test]
    fn no_sslmode_is_plain_and_keeps_other_parameters() {
        let p = split_tls_params(&format!("{BASE}?connect_timeout=3")).expect("parses");
        assert_eq!(p.mode, SslMode::Disable);
        assert_eq!(p.url, format!("{BASE}?connect_timeout=3&sslmode=disable"));
        assert!(PgConfig::from_url(BASE).expect("parses").tls.is_none());
    }

    #[test]
    fn verify_full_takes_the_root_cert_out_of_the_url() {
        let url = format!(
            "{BASE}?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem&application_name=m"
        );
        let p = split_tls_params(&url).expect("parses");
        assert_eq!(p.mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert, Some(PathBuf::from("/tmp/ca x.pem")));
        assert_eq!(p.url, format!("{BASE}?application_name=m&sslmode=require"));
        Config::from_str(&p.url).expect("tokio-postgres accepts what is left");
    }

    #[test]
    fn require_without_a_root_cert_builds_an_unverified_connector() {
        let config = PgConfig::from_url(&format!("{BASE}?sslmode=require")).expect("parses");
        assert!(config.tls.is_some());
    }

    #[test]
    fn verifying_modes_need_a_root_cert() {
        for mode in ["verify-ca", "verify-full"] {
            let e = split_tls_params(&format!("{BASE}?sslmode={mode}")).expect_err("refused");
            assert!(matches!(e, PgTlsError::NoRootCert(m) if m == mode));
        }
    }

    #[test]
    fn unknown_modes_and_unreadable_root_certs_are_refused() {
        let e = split_tls_params(&format!("{BASE}?sslmode=always")).expect_err("refused");
        assert!(matches!(e, PgTlsError::BadMode(m) if m == "always"));
        let url = format!("{BASE}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let e = PgConfig::from_url(&url).err().expect("refused");
        assert!(matches!(e, PgTlsError::RootCert { .. }));
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("written");
        let url = format!("{BASE}?sslmode=verify-ca&sslrootcert={}", empty.display());
        let e = PgConfig::from_url(&url).err().expect("refused");
        assert!(matches!(e, PgTlsError::RootCert { .. }), "{e}");
    }
}
