//! Making certificates with rcgen: a CA, the server's certificate and one
//! certificate per person, plus writing them to a directory the way
//! `micropay-certs` (and `scripts/gen-certs.sh`) promise: keys with mode
//! 0600, the CA reused, a person's files replaced only with `force`, the
//! server's only with `renew_server`, the CA's never, and no person named
//! after the CA's or the server's files or the server's host names.
//!
//! Server certificates, and only they, carry the server-role mark
//! ([`crate::net::identity::SERVER_ROLE_POLICY`]); clients check it.
//!
//! Tests build their in-memory PKIs with the same functions.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod revoke;

pub use revoke::{revoke, RevokeOptions, RevokeReport};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::core::name::{is_reserved, Name, RESERVED_NAMES};
use crate::net::identity::SERVER_ROLE_POLICY_DER;

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
    /// A person's file exists and `force` was not given.
    #[error("{0} already exists; pass --force to replace it (a registered person re-keyed this way gets key_mismatch)")]
    Exists(PathBuf),
    /// A server file exists and `renew_server` was not given.
    #[error("{0} already exists; pass --renew-server to replace the server's certificate and key")]
    ServerExists(PathBuf),
    /// A person name the deployment uses for itself.
    #[error(
        "{name:?} is reserved ({reserved}); a person cannot have this name, nothing was written"
    )]
    ReservedName {
        /// The name asked for.
        name: String,
        /// Every reserved name, for the message.
        reserved: String,
    },
    /// A server name that is already a person's (`NAME.pem` exists).
    #[error("server name {0:?} is a person's name in this directory; nothing was written")]
    ServerNameIsAPerson(String),
    /// The existing server certificate cannot be read, so its names
    /// cannot be reserved.
    #[error(
        "{0}: cannot read the server's names from this certificate; fix it or pass --renew-server"
    )]
    ServerCertUnreadable(PathBuf),
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
    /// A CRL's next update out of range.
    #[error(
        "--crl-days must be between 1 and {}",
        crate::core::limits::CRL_NEXT_UPDATE_DAYS_MAX
    )]
    BadCrlDays,
    /// Revoking needs the CA, and there is none.
    #[error("{0} does not exist: there is no CA here to sign a revocation list")]
    NoCa(PathBuf),
    /// The CA lacks the cRLSign key usage.
    #[error("{0}: this CA certificate lacks the cRLSign key usage (it was made before micropay-certs added it), so a CRL it signs would be refused; make a new CA in a new directory and re-issue every certificate from it")]
    CaCannotSignCrls(PathBuf),
    /// A certificate to revoke is not one this CA issued.
    #[error("{0}: this certificate was not issued by ca.pem; nothing was revoked")]
    NotIssuedByCa(PathBuf),
    /// A file that revocation reads cannot be used.
    #[error("{0}: {1}")]
    CrlUnusable(PathBuf, String),
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
    /// (ServerAuth only: a server certificate cannot log in as a person),
    /// with the server-role mark that clients require of the server.
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
        params.custom_extensions.push(server_role_extension());
        self.issue_leaf(params, key_type, validity)
    }

    /// Issues a person's certificate: CN and the only DNS subjectAltName
    /// are the name; ClientAuth for talking to the server and paying,
    /// ServerAuth for their own peer listener. Never the server-role mark;
    /// a [reserved](RESERVED_NAMES) name is refused.
    pub fn issue_person(
        &self,
        name: &Name,
        key_type: KeyType,
        validity: Validity,
    ) -> Result<CertifiedPem, CertError> {
        let params = person_params(name)?;
        self.issue_leaf(params, key_type, validity)
    }

    /// Issues a person's certificate, as [`Ca::issue_person`], for an
    /// existing key (PKCS#8 PEM): a renewal keeps the key and extends the
    /// validity.
    pub fn issue_person_for_key(
        &self,
        name: &Name,
        key_pem: &str,
        validity: Validity,
    ) -> Result<CertifiedPem, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let mut params = person_params(name)?;
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

/// A person certificate's name, CN and usages; a [reserved](RESERVED_NAMES)
/// name is refused.
fn person_params(name: &Name) -> Result<CertificateParams, CertError> {
    if is_reserved(name.as_str()) {
        return Err(reserved(name.as_str(), &[]));
    }
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, name.as_str());
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    Ok(params)
}

/// The server-role mark: a non-critical certificatePolicies extension
/// (OID 2.5.29.32) holding one PolicyInformation whose policyIdentifier is
/// [`crate::net::identity::SERVER_ROLE_POLICY`], without qualifiers.
fn server_role_extension() -> CustomExtension {
    const OID_LEN: u8 = SERVER_ROLE_POLICY_DER.len() as u8;
    // SEQUENCE { SEQUENCE { OBJECT IDENTIFIER } }
    let mut content = vec![0x30, OID_LEN + 4, 0x30, OID_LEN + 2, 0x06, OID_LEN];
    content.extend_from_slice(&SERVER_ROLE_POLICY_DER);
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 32], content);
    ext.set_criticality(false);
    ext
}

/// The refusal for a reserved person name.
fn reserved(name: &str, server_names: &[String]) -> CertError {
    let mut all: Vec<String> = RESERVED_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for extra in server_names {
        if !all.contains(extra) {
            all.push(extra.clone());
        }
    }
    CertError::ReservedName {
        name: name.to_owned(),
        reserved: format!(
            "the CA's and server's files and the server's names: {}",
            all.join(", ")
        ),
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
    /// The server's DNS names (none and no IPs: `localhost`). Used when
    /// the server's certificate is made: the first time, or with
    /// `renew_server`.
    pub server_names: Vec<String>,
    /// The server's IP addresses (none: 127.0.0.1 and ::1).
    pub server_ips: Vec<IpAddr>,
    /// Replace the existing files of the people named in `people`, and
    /// only theirs (never the CA's or the server's).
    pub force: bool,
    /// Replace the server's certificate and key (the CA is kept).
    pub renew_server: bool,
    /// People to issue certificates for.
    pub people: Vec<Name>,
    /// Issue each person's NEXT certificate (`NAME.next.pem`), for a key
    /// rotation or renewal, leaving `NAME.pem`/`NAME.key` untouched.
    pub next: Option<NextKey>,
}

/// Which key a next certificate (`NAME.next.pem`) certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextKey {
    /// A new key, written to `NAME.next.key` (a rotation).
    New,
    /// The key already in `NAME.key` (a renewal); no key file is written.
    Same,
}

/// The files of a person's certificate and key: `NAME.pem`/`NAME.key`,
/// or `NAME.next.pem`/`NAME.next.key` for a next certificate.
pub fn person_files(dir: &Path, name: &Name, next: bool) -> (PathBuf, PathBuf) {
    let stem = if next {
        format!("{name}.next")
    } else {
        name.to_string()
    };
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// What happened to each file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GenerateReport {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files found and reused.
    pub reused: Vec<PathBuf>,
    /// Things the caller asked for that were not done, for the user.
    pub notes: Vec<String>,
}

/// Validity of the CA: longer than any leaf it signs.
const CA_VALIDITY_DAYS: u32 = VALIDITY_DAYS_MAX + 365;

/// The files of one certificate directory.
struct Files {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Files {
        Files {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// The server's DNS names and IPs, with the defaults filled in.
fn server_sans(opts: &GenerateOptions) -> (Vec<String>, Vec<IpAddr>) {
    let names = if opts.server_names.is_empty() && opts.server_ips.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        opts.server_names.clone()
    };
    let ips = if opts.server_ips.is_empty() {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
        ]
    } else {
        opts.server_ips.clone()
    };
    (names, ips)
}

/// Makes the CA (unless present), the server certificate (unless
/// present, or when `renew_server`) and every person's certificate, into
/// `out_dir`. `force` replaces the named people's files only.
///
/// Everything is checked before anything is written, so a refusal leaves
/// the directory as it was.
pub fn generate(opts: &GenerateOptions) -> Result<GenerateReport, CertError> {
    if opts.days == 0 || opts.days > VALIDITY_DAYS_MAX {
        return Err(CertError::BadDays);
    }
    let dir = &opts.out_dir;
    let files = Files::in_dir(dir);
    let make_server = opts.renew_server || !files.server_cert.exists();
    let (server_names, server_ips) = server_sans(opts);
    check_before_writing(opts, &files, make_server, &server_names)?;
    fs::create_dir_all(dir).map_err(|error| CertError::Io {
        path: dir.clone(),
        error,
    })?;
    let mut report = GenerateReport::default();
    let ca = load_or_make_ca(opts.key_type, &files, &mut report)?;
    let validity = Validity::days_from_now(opts.days);
    if make_server {
        let server = ca.issue_server(&server_names, &server_ips, opts.key_type, validity)?;
        write_pair(&server, &files.server_cert, &files.server_key, true)?;
        report.written.push(files.server_cert.clone());
        report.written.push(files.server_key.clone());
    } else {
        report.reused.push(files.server_cert.clone());
        if !opts.server_names.is_empty() || !opts.server_ips.is_empty() {
            report.notes.push(format!(
                "{} kept: --server-name/--server-ip not applied (pass --renew-server to re-issue the server's certificate with them)",
                files.server_cert.display()
            ));
        }
    }
    for person in &opts.people {
        let (cert_path, key_path) = person_files(dir, person, opts.next.is_some());
        if opts.next == Some(NextKey::Same) {
            let (_, current_key) = person_files(dir, person, false);
            let key_pem = read_to_string(&current_key)?;
            let pem = ca.issue_person_for_key(person, &key_pem, validity)?;
            write_file(&cert_path, pem.cert_pem.as_bytes(), 0o644, opts.force)?;
            report.written.push(cert_path);
            report.notes.push(format!(
                "{person}'s next certificate certifies the key in {}: renew with `micropay-client --as {person} rotate --new-cert {} --new-key {}`",
                current_key.display(),
                dir.join(format!("{person}.next.pem")).display(),
                current_key.display()
            ));
            continue;
        }
        let pem = ca.issue_person(person, opts.key_type, validity)?;
        write_pair(&pem, &cert_path, &key_path, opts.force)?;
        report.written.push(cert_path);
        report.written.push(key_path);
    }
    Ok(report)
}

/// Every refusal `generate` can make, before anything is written:
/// reserved person names, existing person files without `force`, half a
/// CA, a server key without its certificate, a server name that is a
/// person's.
fn check_before_writing(
    opts: &GenerateOptions,
    files: &Files,
    make_server: bool,
    server_names: &[String],
) -> Result<(), CertError> {
    let dir = &opts.out_dir;
    let mut taken: Vec<String> = server_names
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if files.server_cert.exists() {
        match dns_names_of_pem_file(&files.server_cert) {
            Some(names) => taken.extend(names.iter().map(|n| n.to_ascii_lowercase())),
            None if make_server => {}
            None => return Err(CertError::ServerCertUnreadable(files.server_cert.clone())),
        }
    }
    for person in &opts.people {
        if is_reserved(person.as_str()) || taken.iter().any(|t| t == person.as_str()) {
            return Err(reserved(person.as_str(), &taken));
        }
        if opts.next == Some(NextKey::Same) {
            let (_, current_key) = person_files(dir, person, false);
            if !current_key.exists() {
                return Err(CertError::Io {
                    path: current_key,
                    error: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
        }
        if opts.force {
            continue;
        }
        let (cert, key) = person_files(dir, person, opts.next.is_some());
        for path in [cert, key] {
            if path.exists() {
                return Err(CertError::Exists(path));
            }
        }
    }
    match (files.ca_cert.exists(), files.ca_key.exists()) {
        (true, false) => return Err(CertError::HalfCa(files.ca_cert.clone())),
        (false, true) => return Err(CertError::HalfCa(files.ca_key.clone())),
        _ => {}
    }
    if !make_server {
        return Ok(());
    }
    if !opts.renew_server && files.server_key.exists() {
        return Err(CertError::ServerExists(files.server_key.clone()));
    }
    for name in server_names {
        if dir
            .join(format!("{}.pem", name.to_ascii_lowercase()))
            .exists()
        {
            return Err(CertError::ServerNameIsAPerson(name.clone()));
        }
    }
    Ok(())
}

/// The DNS subjectAltNames of the certificate in a PEM file, or `None`
/// when it cannot be read.
fn dns_names_of_pem_file(path: &Path) -> Option<Vec<String>> {
    let bytes = fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).ok()?;
    let (_, cert) = X509Certificate::from_der(&pem.contents).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general_name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = general_name {
                names.push((*dns).to_owned());
            }
        }
    }
    Some(names)
}

/// Loads the CA from `ca.pem`/`ca.key`, or makes and writes a new one
/// when neither exists. Never replaces it.
fn load_or_make_ca(
    key_type: KeyType,
    files: &Files,
    report: &mut GenerateReport,
) -> Result<Ca, CertError> {
    if files.ca_cert.exists() {
        let cert_pem = read_to_string(&files.ca_cert)?;
        let key_pem = read_to_string(&files.ca_key)?;
        let ca = Ca::from_pem(&cert_pem, &key_pem)?;
        check_key_matches(&ca, &files.ca_key)?;
        report.reused.push(files.ca_cert.clone());
        return Ok(ca);
    }
    let ca = Ca::new(
        "micropay CA",
        key_type,
        Validity::days_from_now(CA_VALIDITY_DAYS),
    )?;
    write_pair(&ca.pem, &files.ca_cert, &files.ca_key, false)?;
    report.written.push(files.ca_cert.clone());
    report.written.push(files.ca_key.clone());
    Ok(ca)
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
