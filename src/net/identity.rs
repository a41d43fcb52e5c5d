//! Who is on the other end: a person's name, public key and validity, read
//! from a certificate that TLS has already verified.
//!
//! X.509 parsing is x509-parser's; this module only applies micropay's rule
//! that a person certificate names exactly one DNS subjectAltName, which is
//! the person's name.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::core::keys::{KeyError, VerifyingKey};
use crate::core::name::{Name, NameError};

/// Why a certificate cannot serve as a person's identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate is not valid DER X.509.
    #[error("the certificate is not valid X.509")]
    Malformed,
    /// No DNS subjectAltName, or more than one.
    #[error("a person certificate carries exactly one DNS subjectAltName, this one has {0}")]
    DnsNameCount(usize),
    /// The DNS name is not a valid person name.
    #[error("the certificate's name is not a valid person name: {0}")]
    BadName(#[from] NameError),
    /// The key is not one micropay can use.
    #[error("the certificate's key cannot be used: {0}")]
    Key(#[from] KeyError),
}

/// A verified person: name, key and the end of the certificate's validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The person's name, from the certificate's DNS subjectAltName.
    pub name: Name,
    /// The certificate's public key; it also verifies payment signatures.
    pub key: VerifyingKey,
    /// The certificate's notAfter, unix seconds.
    pub not_after_s: i64,
}

impl Identity {
    /// Reads the identity from a DER certificate. The caller must already
    /// have verified the certificate's chain (rustls did, in the handshake).
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for general_name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = general_name {
                    dns_names.push(*dns);
                }
            }
        }
        let [dns] = dns_names.as_slice() else {
            return Err(IdentityError::DnsNameCount(dns_names.len()));
        };
        let name = Name::parse(dns)?;
        let key = VerifyingKey::from_spki_der(cert.public_key().raw)?;
        Ok(Identity {
            name,
            key,
            not_after_s: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether the certificate is still valid at `now_s` (unix seconds).
    /// TLS 1.3 resumption restores a certificate without checking it again,
    /// so anything that moves money checks this at the time it happens.
    pub fn valid_at(&self, now_s: u64) -> bool {
        i64::try_from(now_s).is_ok_and(|now| now <= self.not_after_s)
    }
}

/// The public key of any certificate (the server's, say), without the
/// person-name rule.
pub fn public_key_of_cert(der: &[u8]) -> Result<VerifyingKey, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
    Ok(VerifyingKey::from_spki_der(cert.public_key().raw)?)
}
