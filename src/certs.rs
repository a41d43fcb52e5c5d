//! Making certificates with rcgen: a CA, the server's certificate and one
//! certificate per person, plus writing them to a directory the way
//! `micropay-certs` (and `scripts/gen-certs.sh`) promise: keys with mode
//! 0600, the CA reused, nothing overwritten without `force`.
//!
//! Tests build their in-memory PKIs with the same functions.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::core::name::Name;

/// How far in the past a new certificate's validity starts, to absorb
/// clock skew between machines.
pub const BACKDATE_S: i64 = 5 * 60;

/// Longest validity the tool issues.
pub const VALIDITY_DAYS_MAX: u32 = 3650;

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A file exists and `force` was not given.
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// Only one of `ca.pem` and `ca.key` exists.
    #[error("{0} exists without its partner (ca.pem and ca.key go together); remove it or restore the other")]
    HalfCa(PathBuf),
    /// The CA key does not belong to the CA certificate.
    #[error("{0}: this key does not belong to ca.pem")]
    CaKeyMismatch(PathBuf),
    /// A DNS name for the server is not acceptable.
    #[error("bad server name {0:?}")]
    BadServerName(String),
    /// Validity out of range.
    #[error("--days must be between 1 and {VALIDITY_DAYS_MAX}")]
    BadDays,
}

/// The key algorithm of new certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// Ed25519, the default.
    #[default]
    Ed25519,
    /// ECDSA P-256.
    EcdsaP256,
}

impl KeyType {
    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyType::Ed25519 => ed25519_pkcs8_v1(KeyPair::generate_for(&rcgen::PKCS_ED25519)?),
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        }
    }
}

/// ring writes new Ed25519 keys as PKCS#8 v2 (RFC 5958, public key
/// included), which OpenSSL before 3.5 cannot read (openssl/openssl#10468),
/// so `openssl x509 -req -CAkey ca.key` would fail. Re-encodes the key as
/// PKCS#8 v1 (RFC 8410 section 7, what `openssl genpkey` writes), which
/// ring, rcgen and rustls read as well.
fn ed25519_pkcs8_v1(key: KeyPair) -> Result<KeyPair, rcgen::Error> {
    // SEQUENCE { INTEGER v, SEQUENCE { OID 1.3.101.112 }, OCTET STRING {
    // OCTET STRING (32-byte seed) } ...}; v2 adds [1] publicKey.
    const V2_PREFIX: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let der = key.serialize_der();
    let Some(seed) = der
        .strip_prefix(&V2_PREFIX[..])
        .and_then(|rest| rest.get(..32))
    else {
        return Ok(key);
    };
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    KeyPair::from_pkcs8_der_and_sign_algo(&v1.into(), &rcgen::PKCS_ED25519)
}

/// A validity window, always explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From [`BACKDATE_S`] ago until `days` from now.
    pub fn days_from_now(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::seconds(BACKDATE_S),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedPem {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM. Never log it.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedPem").finish_non_exhaustive()
    }
}

/// A certificate authority able to issue server and person certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate and key, PEM.
    pub pem: CertifiedPem,
}

impl Ca {
    /// Makes a new self-signed CA.
    pub fn new(common_name: &str, key_type: KeyType, validity: Validity) -> Result<Ca, CertError> {
        let key = key_type.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let pem = CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// Loads an existing CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            issuer,
            pem: CertifiedPem {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            },
        })
    }

    /// Issues the server's certificate for the given DNS names and IPs
    /// (ServerAuth only: a server certificate cannot log in as a person).
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        key_type: KeyType,
        validity: Validity,
    ) -> Result<CertifiedPem, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "micropay server");
        for dns in dns_names {
            let ia5 = dns
                .clone()
                .try_into()
                .map_err(|_| CertError::BadServerName(dns.clone()))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_leaf(params, key_type, validity)
    }

    /// Issues a person's certificate: CN and the only DNS subjectAltName
    /// are the name; ClientAuth for talking to the server and paying,
    /// ServerAuth for their own peer listener.
    pub fn issue_person(
        &self,
        name: &Name,
        key_type: KeyType,
        validity: Validity,
    ) -> Result<CertifiedPem, CertError> {
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        self.issue_leaf(params, key_type, validity)
    }

    fn issue_leaf(
        &self,
        mut params: CertificateParams,
        key_type: KeyType,
        validity: Validity,
    ) -> Result<CertifiedPem, CertError> {
        let key = key_type.generate()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A positive 16-byte random serial (RFC 5280 wants at most 20 octets and
/// no sign bit).
fn random_serial() -> SerialNumber {
    let mut bytes = crate::core::payment::PaymentId::random().0;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// What `micropay-certs` should make.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Validity of new leaf certificates, days.
    pub days: u32,
    /// Key algorithm of new keys.
    pub key_type: KeyType,
    /// The server's DNS names.
    pub server_names: Vec<String>,
    /// The server's IP addresses.
    pub server_ips: Vec<IpAddr>,
    /// Replace existing leaf certificates.
    pub force: bool,
    /// People to issue certificates for.
    pub people: Vec<Name>,
}

/// What happened to each file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GenerateReport {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files found and reused.
    pub reused: Vec<PathBuf>,
}

/// Validity of the CA: longer than any leaf it signs.
const CA_VALIDITY_DAYS: u32 = VALIDITY_DAYS_MAX + 365;

/// Makes the CA (unless present), the server certificate (unless present,
/// or when `force`) and every person's certificate, into `out_dir`.
///
/// Everything is checked before anything is written, so a refusal leaves
/// the directory as it was.
pub fn generate(opts: &GenerateOptions) -> Result<GenerateReport, CertError> {
    if opts.days == 0 || opts.days > VALIDITY_DAYS_MAX {
        return Err(CertError::BadDays);
    }
    let dir = &opts.out_dir;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let server_cert_path = dir.join("server.pem");
    let server_key_path = dir.join("server.key");
    let mut report = GenerateReport::default();

    // Refuse up front: every person file that exists needs --force.
    if !opts.force {
        for person in &opts.people {
            for path in [
                dir.join(format!("{person}.pem")),
                dir.join(format!("{person}.key")),
            ] {
                if path.exists() {
                    return Err(CertError::Exists(path));
                }
            }
        }
    }
    match (ca_cert_path.exists(), ca_key_path.exists()) {
        (true, false) => return Err(CertError::HalfCa(ca_cert_path)),
        (false, true) => return Err(CertError::HalfCa(ca_key_path)),
        _ => {}
    }
    fs::create_dir_all(dir).map_err(|error| CertError::Io {
        path: dir.clone(),
        error,
    })?;

    let ca = if ca_cert_path.exists() {
        let cert_pem = read_to_string(&ca_cert_path)?;
        let key_pem = read_to_string(&ca_key_path)?;
        let ca = Ca::from_pem(&cert_pem, &key_pem)?;
        check_key_matches(&ca, &ca_key_path)?;
        report.reused.push(ca_cert_path.clone());
        ca
    } else {
        let ca = Ca::new(
            "micropay CA",
            opts.key_type,
            Validity::days_from_now(CA_VALIDITY_DAYS),
        )?;
        write_pair(&ca.pem, &ca_cert_path, &ca_key_path, false)?;
        report.written.push(ca_cert_path.clone());
        report.written.push(ca_key_path.clone());
        ca
    };

    let validity = Validity::days_from_now(opts.days);
    if server_cert_path.exists() && !opts.force {
        report.reused.push(server_cert_path);
    } else {
        let server = ca.issue_server(
            &opts.server_names,
            &opts.server_ips,
            opts.key_type,
            validity,
        )?;
        write_pair(&server, &server_cert_path, &server_key_path, opts.force)?;
        report.written.push(server_cert_path);
        report.written.push(server_key_path);
    }

    for person in &opts.people {
        let pem = ca.issue_person(person, opts.key_type, validity)?;
        let cert_path = dir.join(format!("{person}.pem"));
        let key_path = dir.join(format!("{person}.key"));
        write_pair(&pem, &cert_path, &key_path, opts.force)?;
        report.written.push(cert_path);
        report.written.push(key_path);
    }
    Ok(report)
}

/// Checks that the CA key file's public key is the CA certificate's.
fn check_key_matches(ca: &Ca, key_path: &Path) -> Result<(), CertError> {
    let key = KeyPair::from_pem(&ca.pem.key_pem)?;
    let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem.cert_pem.as_bytes())
        .map(|der: rustls::pki_types::CertificateDer<'static>| der.to_vec())
        .map_err(|_| CertError::CaKeyMismatch(key_path.to_owned()))?;
    let spki = crate::net::identity::public_key_of_cert(&cert_der)
        .map_err(|_| CertError::CaKeyMismatch(key_path.to_owned()))?;
    if spki.spki_der() != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err(CertError::CaKeyMismatch(key_path.to_owned()));
    }
    Ok(())
}

fn read_to_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|error| CertError::Io {
        path: path.to_owned(),
        error,
    })
}

/// Writes a certificate (mode 0644) and its key (mode 0600). The key is
/// created with its final mode, so it is never readable by others, not
/// even for a moment.
fn write_pair(
    pem: &CertifiedPem,
    cert_path: &Path,
    key_path: &Path,
    replace: bool,
) -> Result<(), CertError> {
    write_file(key_path, pem.key_pem.as_bytes(), 0o600, replace)?;
    write_file(cert_path, pem.cert_pem.as_bytes(), 0o644, replace)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let io = |error| CertError::Io {
        path: path.to_owned(),
        error,
    };
    if replace && path.exists() {
        fs::remove_file(path).map_err(io)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists(path.to_owned())
            } else {
                io(e)
            }
        })?;
    // The umask may have narrowed the mode; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
