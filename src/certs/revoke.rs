//! Revoking people's certificates: `micropay-certs --revoke NAME` adds
//! the serial of `NAME.pem` to `crl.pem`, keeps the entries already
//! there, and signs a new CRL with the CA (rcgen), its number one higher.
//!
//! The CRL is written to a temporary file and renamed into place, so a
//! listener polling it never reads half a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::{read_to_string, Ca, CertError, Files};
use crate::core::limits::CRL_NEXT_UPDATE_DAYS_MAX;
use crate::core::name::Name;
use crate::net::revocation::normalize_serial;

/// What `micropay-certs --revoke` should do.
#[derive(Debug, Clone)]
pub struct RevokeOptions {
    /// The certificate directory (holds `ca.pem`, `ca.key`, `NAME.pem`).
    pub dir: PathBuf,
    /// The people whose current certificate (`NAME.pem`) is revoked.
    pub people: Vec<Name>,
    /// Days until the new CRL's next update.
    pub next_update_days: u32,
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeReport {
    /// The CRL written.
    pub crl: PathBuf,
    /// Each newly revoked person with the certificate's serial (hex).
    pub revoked: Vec<(Name, String)>,
    /// People whose certificate the CRL already listed.
    pub already: Vec<Name>,
    /// The new CRL's number.
    pub number: u64,
    /// How many certificates the new CRL revokes.
    pub entries: usize,
    /// The new CRL's next update.
    pub next_update: OffsetDateTime,
}

/// One entry of the CRL being built.
struct Entry {
    serial: Vec<u8>,
    revoked_at: OffsetDateTime,
}

/// Revokes the named people's certificates: reads each serial from
/// `NAME.pem` (which must be issued by this CA), adds it to `crl.pem`
/// (keeping what it lists) and signs the new CRL with the CA.
pub fn revoke(opts: &RevokeOptions) -> Result<RevokeReport, CertError> {
    if opts.next_update_days == 0 || opts.next_update_days > CRL_NEXT_UPDATE_DAYS_MAX {
        return Err(CertError::BadCrlDays);
    }
    let files = Files::in_dir(&opts.dir);
    let ca = load_ca(&files)?;
    let ca_der = der_of_pem(&files.ca_cert, ca.pem.cert_pem.as_bytes())?;
    let (_, ca_cert) = X509Certificate::from_der(&ca_der)
        .map_err(|_| CertError::CrlUnusable(files.ca_cert.clone(), "not X.509".into()))?;
    check_can_sign_crls(&ca_cert, &files.ca_cert)?;
    let crl_path = opts.dir.join("crl.pem");
    let (mut entries, number) = existing_entries(&crl_path, &ca_cert)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked = Vec::new();
    let mut already = Vec::new();
    for person in &opts.people {
        let serial = serial_of_person(&opts.dir.join(format!("{person}.pem")), &ca_cert)?;
        if entries.iter().any(|e| e.serial == serial) {
            already.push(person.clone());
            continue;
        }
        revoked.push((person.clone(), hex::encode(&serial)));
        entries.push(Entry {
            serial,
            revoked_at: now,
        });
    }
    let number = number.checked_add(1).ok_or_else(|| {
        CertError::CrlUnusable(crl_path.clone(), "its CRL number cannot grow".into())
    })?;
    let next_update = now + Duration::days(i64::from(opts.next_update_days));
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update,
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&e.serial),
                revocation_time: e.revoked_at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.issuer).map_err(|e| match e {
        rcgen::Error::IssuerNotCrlSigner => CertError::CaCannotSignCrls(files.ca_cert.clone()),
        other => CertError::Rcgen(other),
    })?;
    write_atomically(&crl_path, crl.pem()?.as_bytes())?;
    Ok(RevokeReport {
        crl: crl_path,
        revoked,
        already,
        number,
        entries: entries.len(),
        next_update,
    })
}

/// Loads the CA, which must exist whole and match its key.
fn load_ca(files: &Files) -> Result<Ca, CertError> {
    for path in [&files.ca_cert, &files.ca_key] {
        if !path.exists() {
            return Err(CertError::NoCa(path.clone()));
        }
    }
    let ca = Ca::from_pem(
        &read_to_string(&files.ca_cert)?,
        &read_to_string(&files.ca_key)?,
    )?;
    super::check_key_matches(&ca, &files.ca_key)?;
    Ok(ca)
}

/// A CA made without the cRLSign key usage cannot sign a CRL that
/// rustls accepts.
fn check_can_sign_crls(ca: &X509Certificate<'_>, path: &Path) -> Result<(), CertError> {
    match ca.key_usage() {
        Ok(Some(usage)) if !usage.value.crl_sign() => Err(CertError::CaCannotSignCrls(path.into())),
        _ => Ok(()),
    }
}

/// The entries and number of the existing CRL (none and 0 without one).
/// A CRL that this CA did not sign is refused rather than overwritten.
fn existing_entries(path: &Path, ca: &X509Certificate<'_>) -> Result<(Vec<Entry>, u64), CertError> {
    if !path.exists() {
        return Ok((Vec::new(), 0));
    }
    let bytes = fs::read(path).map_err(|error| CertError::Io {
        path: path.to_owned(),
        error,
    })?;
    let unusable = |what: String| CertError::CrlUnusable(path.to_owned(), what);
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
        .map_err(|e| unusable(format!("not a PEM CRL ({e})")))?;
    let (_, crl) = CertificateRevocationList::from_der(&pem.contents)
        .map_err(|e| unusable(format!("the CRL does not parse ({e})")))?;
    if crl.issuer() != ca.subject() || crl.verify_signature(ca.public_key()).is_err() {
        return Err(unusable(
            "this CRL is not signed by ca.pem; move it away to start a new one".into(),
        ));
    }
    let number = match crl.crl_number() {
        Some(n) => u64::try_from(n).map_err(|_| unusable("its CRL number is too large".into()))?,
        None => 0,
    };
    let entries = crl
        .iter_revoked_certificates()
        .map(|e| Entry {
            serial: normalize_serial(e.raw_serial()).to_vec(),
            revoked_at: e.revocation_date.to_datetime(),
        })
        .collect();
    Ok((entries, number))
}

/// The serial of the certificate in `path`, which this CA must have
/// signed (revoking someone else's certificate would mean nothing).
fn serial_of_person(path: &Path, ca: &X509Certificate<'_>) -> Result<Vec<u8>, CertError> {
    let bytes = fs::read(path).map_err(|error| CertError::Io {
        path: path.to_owned(),
        error,
    })?;
    let der = der_of_pem(path, &bytes)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|_| CertError::CrlUnusable(path.to_owned(), "not an X.509 certificate".into()))?;
    if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(CertError::NotIssuedByCa(path.to_owned()));
    }
    Ok(normalize_serial(cert.raw_serial()).to_vec())
}

fn der_of_pem(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, CertError> {
    x509_parser::pem::parse_x509_pem(bytes)
        .map(|(_, pem)| pem.contents)
        .map_err(|e| CertError::CrlUnusable(path.to_owned(), format!("not PEM ({e})")))
}

/// Writes `path` (mode 0644) through a temporary file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("pem.tmp");
    let io = |p: &Path| {
        let p = p.to_owned();
        move |error| CertError::Io { path: p, error }
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}
