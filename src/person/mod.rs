//! Peer to peer: a payee's listener (`serve`) and a payer's `send`.
//!
//! The payee's listener presents the payee's own certificate and requires
//! the payer's; the payer dials with the payee's name as the TLS server
//! name, so the handshake itself proves each side is who it claims. The
//! payee checks the payment (addressed to me, signed by the payer on the
//! other end of this very connection), forwards it to the server over its
//! own connection and hands the server's signed receipt back.
//! [`statement`] streams one person's whole history as CSV or JSON lines
//! with a running balance.

pub mod channel_payee;
pub mod channel_payer;
pub mod channel_serve;
pub mod channel_writer;
pub mod log_state;
mod rotate;
mod send;
mod serve;
pub mod statement;

use std::path::Path;
use std::sync::Arc;

use crate::core::checkpoint::{Checkpoint, CheckpointCache};
use crate::core::keys::{SigningKey, VerifyingKey};
use crate::core::limits::{CHECKPOINT_CACHE_MAX, CONNECT_TIMEOUT_MS_DEFAULT};
use crate::core::log_proof::{verify_in_log, LogClaim, LogProofError};
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::core::payment::{Receipt, SignedPayment};
use crate::core::receipt_check::{check_receipt, Evidence, ReceiptError};
use crate::net::identity::Identity;
use crate::net::link::{host_of, CallError, Link};
use crate::net::revocation::{Crl, CrlError};
use crate::net::tls::{self, Material, TlsError};
use crate::wire::LogProofJson;

pub use rotate::{rotate, rotation_statement};
pub use send::{send, SendOptions, Sent};
pub use serve::{serve, serve_with_metrics, Reconnect, ServeEvent, ServeOptions};

/// Why a person's side could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Certificates or keys could not be loaded.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The certificate does not name a person.
    #[error("your certificate is not a person certificate: {0}")]
    Identity(#[from] crate::net::identity::IdentityError),
    /// The CRL could not be loaded.
    #[error("{0}")]
    Crl(#[from] CrlError),
    /// Talking to the server or a peer failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The payee's channel directory could not be read or written.
    #[error("{0}")]
    Channels(#[from] channel_payee::ChannelStoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// Where.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The payee holds the signed payment, no receipt came back, and the
    /// server has no outcome for it yet: it may still settle until it
    /// expires. Retrying with the same id and expiry is idempotent.
    #[error("{payee} took payment {payment_id} but the outcome is not known yet ({reason}); it can settle until it expires at {expires_at_s} (unix s): run `micropay-client status {payment_id}`, or retry the same payment with `--id {payment_id} --expires-at {expires_at_s}`")]
    OutcomeUnknown {
        /// The payee.
        payee: Name,
        /// The payment, for `status` and a retry.
        payment_id: PaymentId,
        /// Its expiry, for a retry of the identical payment.
        expires_at_s: u64,
        /// What happened.
        reason: String,
    },
    /// The payee's listener could not be reached (refused, unreachable,
    /// timed out, or its TLS handshake failed); nothing was handed over.
    #[error("cannot reach {payee} at {address}: {reason}; nothing was paid")]
    PayeeUnreachable {
        /// Who was dialled.
        payee: Name,
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// The listener at the payee's address is not the payee.
    #[error("the listener at {address} is not {payee}'s ({reason}); nothing was paid")]
    WrongListener {
        /// Who was expected.
        payee: Name,
        /// Where.
        address: String,
        /// The TLS error.
        reason: String,
    },
    /// A rotation statement could not be made.
    #[error("cannot make the rotation statement: {0}")]
    Statement(crate::core::rotation::StatementError),
    /// The receipt is not a genuine one for this payment: not for it, a
    /// signature that does not verify, or neither a log proof nor a
    /// signature (a failed log proof is [`PeerError::BadLogProof`]).
    #[error("the receipt for {0} is refused: {1}")]
    BadReceipt(PaymentId, ReceiptError),
    /// The receipt's log proof did not verify: the server's log does not
    /// hold the payment it signed a receipt for.
    #[error("the log proof for {0} does not verify: {1}")]
    BadLogProof(PaymentId, crate::core::log_proof::LogProofError),
    /// The payment settled, but the server's log no longer extends the
    /// checkpoint this client saw before.
    #[error("payment {0} settled, but {1}")]
    LogHistoryChanged(PaymentId, String),
    /// The server's log no longer extends the checkpoint `serve` saw
    /// before: it is not served.
    #[error("not serving: {0}")]
    ServerHistoryChanged(String),
}

/// One person: name, TLS configurations and signing key.
pub struct Person {
    /// The person's name, from their certificate.
    pub name: Name,
    /// The signing key (the certificate's key).
    pub key: SigningKey,
    /// The certificate's identity (name, key, notAfter, serial).
    pub identity: Identity,
    client: Arc<rustls::ClientConfig>,
    listener: Arc<rustls::ServerConfig>,
    /// The CRL my peer listener enforces (`serve --crl`), if any.
    crl: Option<Arc<Crl>>,
    /// Checkpoints whose signature I checked (bounded).
    checkpoints: std::sync::Mutex<CheckpointCache>,
}

impl Person {
    /// Loads a person from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Person, PeerError> {
        Person::from_material(Material::from_files(ca, cert, key)?)
    }

    /// Loads a person from PEM files, with the CRL at `crl` (checked
    /// against the CA, polled every `crl_poll_ms`) enforced by the peer
    /// listener.
    pub fn load_with_crl(
        ca: &Path,
        cert: &Path,
        key: &Path,
        crl: &Path,
        crl_poll_ms: u64,
    ) -> Result<Person, PeerError> {
        let material = Material::from_files(ca, cert, key)?;
        let crl = Crl::load(crl, &material.roots, crl_poll_ms)?;
        Person::from_material_with_crl(material, Some(crl))
    }

    /// Builds a person from loaded material.
    pub fn from_material(material: Material) -> Result<Person, PeerError> {
        Person::from_material_with_crl(material, None)
    }

    /// Builds a person whose peer listener enforces `crl` (at the
    /// handshake and at every payment), when given.
    pub fn from_material_with_crl(
        material: Material,
        crl: Option<Arc<Crl>>,
    ) -> Result<Person, PeerError> {
        let leaf = material
            .chain
            .first()
            .ok_or(crate::net::identity::IdentityError::Malformed)?;
        let identity = Identity::from_cert_der(leaf)?;
        Ok(Person {
            name: identity.name.clone(),
            identity,
            key: material.signing_key()?,
            client: tls::client_config(&material)?,
            listener: tls::peer_listener_config_with_crl(&material, crl.as_deref())?,
            crl,
            checkpoints: std::sync::Mutex::new(CheckpointCache::new(CHECKPOINT_CACHE_MAX)),
        })
    }

    /// Verifies a receipt's log proof for `payment` against a checkpoint
    /// signed by `server_key`, checking each distinct checkpoint's
    /// signature once.
    pub fn verify_in_log(
        &self,
        server_key: &VerifyingKey,
        payment: &SignedPayment,
        receipt: &Receipt,
        log: &LogProofJson,
    ) -> Result<Checkpoint, LogProofError> {
        let claim = LogClaim {
            seq: receipt.seq,
            settled_at_ms: receipt.settled_at_ms,
            leaf_index: log.leaf_index,
            proof: &log.inclusion_proof,
            checkpoint: &log.checkpoint,
        };
        let mut cache = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        verify_in_log(&mut cache, server_key, payment, &claim)
    }

    /// Checks a settle or status reply's receipt for `payment` from the
    /// server whose key is `server_key`: proven by its log proof, or,
    /// without one, by its signature; neither is
    /// [`ReceiptError::Unproven`] (docs/PROTOCOL.md §5). Each distinct
    /// checkpoint's signature is checked once.
    pub fn check_receipt(
        &self,
        server_key: &VerifyingKey,
        payment: &SignedPayment,
        receipt: &Receipt,
        signature: Option<&[u8]>,
        log: Option<&LogProofJson>,
    ) -> Result<Evidence, ReceiptError> {
        let mut cache = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        check_receipt(
            &mut cache,
            server_key,
            payment,
            receipt,
            signature,
            log.map(LogProofJson::place),
        )
    }

    /// The configuration for dialling a payee (see [`tls::payer_config`]).
    pub fn payer_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// Connects to the server at `addr` (`host:port`): the certificate
    /// must chain to the CA, name the dialled host and carry the
    /// server-role mark, or the link is dropped before anything is sent
    /// ([`CallError::NotTheServer`], naming the certificate's subject).
    pub async fn connect_server(&self, addr: &str) -> Result<Link, CallError> {
        self.connect_server_within(addr, CONNECT_TIMEOUT_MS_DEFAULT)
            .await
    }

    /// [`Person::connect_server`] allowing at most `timeout_ms` for the
    /// connection and the handshake. The certificate must carry the
    /// server-role mark: a person's certificate is never taken for the
    /// server.
    pub async fn connect_server_within(
        &self,
        addr: &str,
        timeout_ms: u64,
    ) -> Result<Link, CallError> {
        let link = Link::connect(addr, host_of(addr), self.client.clone(), timeout_ms).await?;
        link.server_key().map_err(|e| CallError::NotTheServer {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(link)
    }
}
