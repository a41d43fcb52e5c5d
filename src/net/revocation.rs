//! Certificate revocation: a CRL file, checked at the handshake and at
//! every request, and reloaded without a restart.
//!
//! A [`Crl`] is loaded from a PEM file (`certs/crl.pem`, written by
//! `micropay-certs --revoke`) and verified to be signed by the configured
//! CA; a CRL from another issuer is refused, because rustls would
//! otherwise treat every client certificate's status as unknown. It
//! provides two things that are swapped together on every reload:
//!
//! - a client-certificate verifier ([`Crl::verifier`]) for a listener's
//!   `rustls::ServerConfig`, which delegates to the current
//!   `WebPkiClientVerifier` built `.with_crls(..)`: a revoked certificate
//!   fails new full handshakes. Swapping the verifier rather than the
//!   whole configuration keeps the listener's session cache, which is
//!   harmless because of the next point.
//! - a [`Revocations`] handle, the set of revoked serials, cheap to clone.
//!   TLS 1.3 resumption restores a certificate without verifying it again,
//!   and a connection opened before a revocation stays open, so the server
//!   and a payee's listener check the caller's serial against it at every
//!   request.
//!
//! A reload that fails (unreadable file, bad PEM, foreign signature)
//! keeps the previous list and says why. A CRL past its next-update time
//! is still enforced: a revocation never expires, and dropping the list
//! would readmit every revoked key. The watcher warns about it at most
//! every [`CRL_STALE_WARN_MS`] until a fresh CRL is installed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::sync::watch;
use tracing::{info, warn};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::core::limits::CRL_STALE_WARN_MS;

/// Why a CRL could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// The file is missing or unreadable.
    #[error("{path}: cannot read the CRL: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file holds no CRL, more than one, or one that does not parse.
    #[error("{path}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The CRL is not signed by the configured CA.
    #[error("{path}: this CRL is not signed by the configured CA (its issuer is {issuer:?}); refusing it")]
    ForeignIssuer {
        /// The file.
        path: PathBuf,
        /// The issuer the CRL names.
        issuer: String,
    },
    /// No CA certificate was given to check the CRL against.
    #[error("{path}: no CA certificate to check this CRL against")]
    NoCa {
        /// The file.
        path: PathBuf,
    },
    /// rustls could not build a verifier with this CRL.
    #[error("{path}: the CRL cannot be used: {what}")]
    Verifier {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        what: String,
    },
}

/// The certificates one CRL revokes, with its freshness.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    /// Revoked serial numbers, normalized (see [`normalize_serial`]).
    serials: HashSet<Vec<u8>>,
    /// The CRL number, when the CRL carries one that fits.
    number: Option<u64>,
    /// The CRL's nextUpdate, unix seconds, when present.
    next_update_s: Option<i64>,
}

impl RevocationList {
    /// How many certificates the list revokes.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// Whether the list revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// The CRL number.
    pub fn number(&self) -> Option<u64> {
        self.number
    }

    /// The CRL's nextUpdate, unix seconds.
    pub fn next_update_s(&self) -> Option<i64> {
        self.next_update_s
    }

    /// Whether the CRL's nextUpdate has passed at `now_s` (unix seconds).
    /// Its entries stay in force regardless.
    pub fn is_stale_at(&self, now_s: u64) -> bool {
        match (self.next_update_s, i64::try_from(now_s)) {
            (Some(next), Ok(now)) => now > next,
            _ => false,
        }
    }
}

/// The serial number as compared: big-endian magnitude without leading
/// zero octets (DER adds one when the top bit is set).
pub fn normalize_serial(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    &serial[start..]
}

/// The current revocation set, shared and cheap to clone: what the server
/// (in its context) and a payee's listener check every request against.
/// Without a CRL it revokes nothing.
#[derive(Debug, Clone)]
pub struct Revocations {
    current: Arc<ArcSwap<RevocationList>>,
}

impl Default for Revocations {
    fn default() -> Revocations {
        Revocations::none()
    }
}

impl Revocations {
    /// A set that revokes nothing (no `--crl`).
    pub fn none() -> Revocations {
        Revocations {
            current: Arc::new(ArcSwap::from_pointee(RevocationList::default())),
        }
    }

    /// Whether the certificate with this serial number (as encoded in the
    /// certificate, see [`crate::net::identity::Identity::serial`]) is
    /// revoked by the current list.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.current
            .load()
            .serials
            .contains(normalize_serial(serial))
    }

    /// A snapshot of the current list.
    pub fn list(&self) -> Arc<RevocationList> {
        self.current.load_full()
    }

    fn store(&self, list: RevocationList) {
        self.current.store(Arc::new(list));
    }
}

/// A client-certificate verifier that delegates to the current
/// CRL-aware `WebPkiClientVerifier`, swapped on every reload. The root
/// hints cannot change (the CA does not), so they are kept here.
#[derive(Debug)]
pub struct ReloadingVerifier {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
    root_hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for ReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// What identifies one version of the file: a rewrite, or a new file
/// renamed into place, changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp_of(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// A CRL file in force on one listener: its revocation set, its
/// verifier, and how to reload it.
#[derive(Debug)]
pub struct Crl {
    path: PathBuf,
    cas: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    poll_ms: u64,
    revocations: Revocations,
    verifier: Arc<ReloadingVerifier>,
    stamp: Mutex<Option<FileStamp>>,
}

/// One loaded version of the file: what [`Crl`] swaps in.
struct Loaded {
    list: RevocationList,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Crl {
    /// Loads and checks the CRL at `path` against the CA certificates
    /// `cas`; `poll_ms` is how often [`Crl::watch`] looks at the file.
    pub fn load(
        path: &Path,
        cas: &[CertificateDer<'static>],
        poll_ms: u64,
    ) -> Result<Arc<Crl>, CrlError> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca.clone()).map_err(|e| CrlError::Verifier {
                path: path.to_owned(),
                what: format!("the CA certificate cannot be used: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let stamp = stamp_of(path);
        let loaded = read_crl(path, cas, &roots)?;
        let root_hints = loaded.verifier.root_hint_subjects().to_vec();
        let revocations = Revocations::none();
        revocations.store(loaded.list);
        Ok(Arc::new(Crl {
            path: path.to_owned(),
            cas: cas.to_vec(),
            roots,
            poll_ms: poll_ms.max(1),
            revocations,
            verifier: Arc::new(ReloadingVerifier {
                current: ArcSwap::from_pointee(loaded.verifier),
                root_hints,
            }),
            stamp: Mutex::new(stamp),
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The revocation set, for checks at every request.
    pub fn revocations(&self) -> Revocations {
        self.revocations.clone()
    }

    /// The client-certificate verifier for a listener's configuration.
    pub fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier.clone()
    }

    /// Reads the file again and, if it is a valid CRL of the CA, puts it
    /// in force for new handshakes and every following request. On error
    /// the previous list stays in force.
    pub fn reload(&self) -> Result<Arc<RevocationList>, CrlError> {
        let stamp = stamp_of(&self.path);
        // Remember this version even if it fails, so a broken file is
        // reported once rather than at every poll.
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        let loaded = read_crl(&self.path, &self.cas, &self.roots)?;
        self.verifier.current.store(Arc::new(loaded.verifier));
        self.revocations.store(loaded.list);
        Ok(self.revocations.list())
    }

    /// Reloads if the file changed since it was last read. `Ok(None)`:
    /// unchanged.
    pub fn reload_if_changed(&self) -> Result<Option<Arc<RevocationList>>, CrlError> {
        let now = stamp_of(&self.path);
        let last = *self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if now == last {
            return Ok(None);
        }
        self.reload().map(Some)
    }

    /// Reloads on SIGHUP and whenever the file changes (polled every
    /// `poll_ms`), logging each outcome, until `shutdown` turns true.
    /// Warns while the CRL is past its next update.
    pub async fn watch(self: Arc<Crl>, mut shutdown: watch::Receiver<bool>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("cannot listen for SIGHUP ({e}); the CRL is reloaded when its file changes");
                None
            }
        };
        let every = Duration::from_millis(self.poll_ms);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned_at: Option<tokio::time::Instant> = None;
        loop {
            let forced = tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            let outcome = if forced {
                self.reload().map(Some)
            } else {
                self.reload_if_changed()
            };
            self.log_reload(forced, outcome);
            self.warn_if_stale(&mut warned_at);
        }
    }

    fn log_reload(&self, forced: bool, outcome: Result<Option<Arc<RevocationList>>, CrlError>) {
        let why = if forced { "SIGHUP" } else { "file changed" };
        match outcome {
            Ok(Some(list)) => info!(
                path = %self.path.display(),
                revoked = list.len(),
                number = ?list.number(),
                "CRL reloaded ({why})"
            ),
            Ok(None) => {}
            Err(e) => warn!(
                "CRL reload ({why}) failed, keeping the previous list of {} revocation(s): {e}",
                self.revocations.list().len()
            ),
        }
    }

    fn warn_if_stale(&self, warned_at: &mut Option<tokio::time::Instant>) {
        let list = self.revocations.list();
        if !list.is_stale_at(crate::system::clock::now_s()) {
            *warned_at = None;
            return;
        }
        let now = tokio::time::Instant::now();
        if warned_at
            .is_some_and(|at| now.duration_since(at).as_millis() < u128::from(CRL_STALE_WARN_MS))
        {
            return;
        }
        *warned_at = Some(now);
        warn!(
            path = %self.path.display(),
            next_update_s = ?list.next_update_s(),
            "the CRL is past its next update; still enforcing its {} revocation(s); install a fresh one (micropay-certs --revoke NAME re-signs it)",
            list.len()
        );
    }
}

/// Reads, parses and checks the CRL file, and builds its verifier.
fn read_crl(
    path: &Path,
    cas: &[CertificateDer<'static>],
    roots: &Arc<RootCertStore>,
) -> Result<Loaded, CrlError> {
    let malformed = |what: String| CrlError::Malformed {
        path: path.to_owned(),
        what,
    };
    let bytes = std::fs::read(path).map_err(|error| CrlError::Read {
        path: path.to_owned(),
        error,
    })?;
    let ders = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(format!("not a PEM CRL file ({e})")))?;
    let [der] = ders.as_slice() else {
        return Err(malformed(format!(
            "expected exactly one CRL (\"BEGIN X509 CRL\"), found {}",
            ders.len()
        )));
    };
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| malformed(format!("the CRL does not parse: {e}")))?;
    check_issuer(path, &crl, cas)?;
    let list = list_of(&crl);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::net::tls::provider())
            .with_crls([der.clone()])
            .only_check_end_entity_revocation()
            .build()
            .map_err(|e| CrlError::Verifier {
                path: path.to_owned(),
                what: e.to_string(),
            })?;
    Ok(Loaded { list, verifier })
}

/// Checks that one of the CA certificates signed the CRL.
fn check_issuer(
    path: &Path,
    crl: &CertificateRevocationList<'_>,
    cas: &[CertificateDer<'static>],
) -> Result<(), CrlError> {
    if cas.is_empty() {
        return Err(CrlError::NoCa {
            path: path.to_owned(),
        });
    }
    let signed_by = |ca: &CertificateDer<'static>| {
        X509Certificate::from_der(ca.as_ref()).is_ok_and(|(_, cert)| {
            cert.subject() == crl.issuer() && crl.verify_signature(cert.public_key()).is_ok()
        })
    };
    if cas.iter().any(signed_by) {
        Ok(())
    } else {
        Err(CrlError::ForeignIssuer {
            path: path.to_owned(),
            issuer: crl.issuer().to_string(),
        })
    }
}

fn list_of(crl: &CertificateRevocationList<'_>) -> RevocationList {
    let serials = crl
        .iter_revoked_certificates()
        .map(|entry| normalize_serial(entry.raw_serial()).to_vec())
        .collect();
    let number = crl.crl_number().and_then(|n| u64::try_from(n).ok());
    RevocationList {
        serials,
        number,
        next_update_s: crl.next_update().map(|t| t.timestamp()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_without_leading_zeros() {
        assert_eq!(normalize_serial(&[0, 0x80, 1]), &[0x80, 1]);
        assert_eq!(normalize_serial(&[0x7f]), &[0x7f]);
        assert_eq!(normalize_serial(&[0, 0]), &[] as &[u8]);
    }

    #[test]
    fn a_stale_list_is_stale_only_after_its_next_update() {
        let list = RevocationList {
            next_update_s: Some(100),
            ..RevocationList::default()
        };
        assert!(!list.is_stale_at(100));
        assert!(list.is_stale_at(101));
        assert!(!RevocationList::default().is_stale_at(u64::MAX));
    }

    #[test]
    fn no_crl_revokes_nothing() {
        assert!(!Revocations::none().is_revoked(&[1, 2, 3]));
    }
}
