//! Who is on the other end: a person's name, public key and validity, read
//! from a certificate that TLS has already verified.
//!
//! X.509 parsing is x509-parser's; this module only applies micropay's
//! rules: a person certificate names exactly one DNS subjectAltName, which
//! is the person's (not reserved) name, and never carries the server-role
//! mark; the server's certificate always carries it.
//!
//! The server-role mark ([`SERVER_ROLE_POLICY`]) is a certificate policy
//! in a non-critical certificatePolicies extension (RFC 5280 4.2.1.4).
//! `micropay-certs` puts it in the server's certificate only, so a person
//! certificate, even one whose name is the server's host, cannot pass for
//! the server, and a server certificate cannot pass for a person.

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::core::keys::{KeyError, VerifyingKey};
use crate::core::name::{is_reserved, Name, NameError};

/// The server-role certificate policy OID, dotted: `2.25.` followed by
/// the UUID `472f3b65-67f7-477e-b8ab-bbf08db2770c` as a decimal integer
/// (ITU-T X.667).
pub const SERVER_ROLE_POLICY: &str = "2.25.94620430349467091578624673126001309452";

/// [`SERVER_ROLE_POLICY`] as DER content octets (without the `06 14` tag
/// and length), as it appears in the certificate.
pub const SERVER_ROLE_POLICY_DER: [u8; 20] = [
    0x69, 0x81, 0x8e, 0xaf, 0x9d, 0xd9, 0xac, 0xff, 0xba, 0x9d, 0xfd, 0xb8, 0xd5, 0xee, 0xfe, 0x88,
    0xed, 0xc9, 0xee, 0x0c,
];

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
    /// The name is reserved for the deployment (`ca`, `server`, `localhost`...).
    #[error("the certificate's name {0:?} is reserved for the deployment, not a person's")]
    ReservedName(String),
    /// A server certificate (it carries the server-role mark) used as a
    /// person's.
    #[error("the certificate {subject:?} is the server's (it carries the server-role policy {SERVER_ROLE_POLICY}), not a person's")]
    ServerCertificate {
        /// The certificate's subject.
        subject: String,
    },
    /// A certificate without the server-role mark where the server's is
    /// expected.
    #[error("the certificate {subject:?} is not a micropay server certificate (it lacks the server-role policy {SERVER_ROLE_POLICY})")]
    NotAServer {
        /// The certificate's subject.
        subject: String,
    },
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
    /// The certificate's serial number, big-endian bytes as encoded in the
    /// certificate: what a CRL names when it revokes the certificate.
    pub serial: Vec<u8>,
}

impl Identity {
    /// Reads the identity from a DER certificate. The caller must already
    /// have verified the certificate's chain (rustls did, in the handshake).
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
        if has_server_role(&cert) {
            return Err(IdentityError::ServerCertificate {
                subject: cert.subject().to_string(),
            });
        }
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
        if is_reserved(name.as_str()) {
            return Err(IdentityError::ReservedName(name.to_string()));
        }
        let key = VerifyingKey::from_spki_der(cert.public_key().raw)?;
        // A person's key signs their payments: a small-order or
        // non-canonical Ed25519 key is refused here, at the certificate,
        // so no account is ever registered with one.
        key.check_strong()?;
        Ok(Identity {
            name,
            key,
            not_after_s: cert.validity().not_after.timestamp(),
            serial: cert.raw_serial().to_vec(),
        })
    }

    /// The serial number in lowercase hex, as logs and the ledger show it.
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// Whether the certificate is still valid at `now_s` (unix seconds).
    /// TLS 1.3 resumption restores a certificate without checking it again,
    /// so anything that moves money checks this at the time it happens.
    pub fn valid_at(&self, now_s: u64) -> bool {
        i64::try_from(now_s).is_ok_and(|now| now <= self.not_after_s)
    }
}

/// Whether the certificate carries the server-role mark: a
/// certificatePolicies extension listing [`SERVER_ROLE_POLICY`].
pub fn has_server_role(cert: &X509Certificate<'_>) -> bool {
    cert.extensions()
        .iter()
        .any(|ext| match ext.parsed_extension() {
            ParsedExtension::CertificatePolicies(policies) => policies
                .iter()
                .any(|p| p.policy_id.as_bytes() == SERVER_ROLE_POLICY_DER),
            _ => false,
        })
}

/// The server's receipt key: the public key of a certificate that
/// carries the server-role mark. A certificate without it (a person's,
/// whatever its name) is [`IdentityError::NotAServer`]. The caller must
/// already have verified the certificate's chain and host name.
pub fn server_key_of_cert(der: &[u8]) -> Result<VerifyingKey, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
    if !has_server_role(&cert) {
        return Err(IdentityError::NotAServer {
            subject: cert.subject().to_string(),
        });
    }
    let key = VerifyingKey::from_spki_der(cert.public_key().raw)?;
    // The receipt key is held to the same rule as a person's.
    key.check_strong()?;
    Ok(key)
}

/// The public key of any certificate, without the person-name or the
/// server-role rule.
pub fn public_key_of_cert(der: &[u8]) -> Result<VerifyingKey, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
    Ok(VerifyingKey::from_spki_der(cert.public_key().raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_der_is_the_documented_oid() {
        // First octet 0x69 = 2 * 40 + 25 (arcs 2.25), then one base-128 arc.
        let (first, rest) = SERVER_ROLE_POLICY_DER.split_first().expect("octets");
        assert_eq!(*first, 2 * 40 + 25);
        let mut arc: u128 = 0;
        for (i, b) in rest.iter().enumerate() {
            assert_eq!(b & 0x80 == 0, i + 1 == rest.len(), "continuation bits");
            arc = (arc << 7) | u128::from(b & 0x7f);
        }
        assert_eq!(SERVER_ROLE_POLICY, format!("2.25.{arc}"));
        let uuid = u128::from_str_radix("472f3b6567f7477eb8abbbf08db2770c", 16).expect("hex");
        assert_eq!(arc, uuid);
    }

    /// A raw Ed25519 public key for rcgen to certify, as a CA would for
    /// any key a request carried.
    struct RawEd25519([u8; 32]);

    impl rcgen::PublicKeyData for RawEd25519 {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }

        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ED25519
        }
    }

    fn person_cert(key: [u8; 32]) -> Vec<u8> {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("CA key");
        let ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let params = rcgen::CertificateParams::new(vec!["alice".to_string()]).expect("params");
        let cert = params.signed_by(&RawEd25519(key), &issuer).expect("cert");
        cert.der().to_vec()
    }

    #[test]
    fn a_certificate_with_a_small_order_or_non_canonical_key_is_no_identity() {
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        // y = p + 1: a non-canonical name of the same point.
        let mut non_canonical = [0xff; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for key in [identity_point, non_canonical] {
            let refused = Identity::from_cert_der(&person_cert(key));
            assert!(
                matches!(refused, Err(IdentityError::Key(KeyError::WeakKey))),
                "{refused:?}"
            );
        }
        let honest = crate::core::keys::SigningKey::ed25519_from_seed(&[9; 32]);
        let raw: [u8; 32] = honest.verifying_key().spki_der()[12..]
            .try_into()
            .expect("32 bytes");
        let identity = Identity::from_cert_der(&person_cert(raw)).expect("an honest key");
        assert_eq!(identity.key.spki_der(), honest.verifying_key().spki_der());
    }
}
