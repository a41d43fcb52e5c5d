//! An owner's key change: sign the rotation statement with the old key
//! and the new one, and send it over a connection made with the NEW
//! certificate (so an owner whose old certificate has expired, and who can
//! no longer connect with it, still reaches their account).

use crate::core::keys::SigningKey;
use crate::core::rotation::{KeyStatement, SignedKeyStatement, StatementError};
use crate::person::{PeerError, Person};
use crate::wire::{Rotated, ServerRequest};

/// The statement moving `new`'s account from `old_key` to the key of
/// `new`'s certificate (the same key makes it a renewal).
pub fn rotation_statement(
    old_key: &SigningKey,
    new: &Person,
) -> Result<SignedKeyStatement, StatementError> {
    KeyStatement {
        name: new.name.clone(),
        old_key: old_key.verifying_key().clone(),
        new_key: new.identity.key.clone(),
        new_not_after_s: u64::try_from(new.identity.not_after_s).unwrap_or(0),
        new_serial: new.identity.serial.clone(),
    }
    .sign(old_key, &new.key)
}

/// Rotates (or renews) `new`'s account from `old_key` at the server
/// `server` (`host:port`); answers once the change is durable.
pub async fn rotate(
    old_key: &SigningKey,
    new: &Person,
    server: &str,
) -> Result<Rotated, PeerError> {
    let signed = rotation_statement(old_key, new).map_err(PeerError::Statement)?;
    let link = new.connect_server(server).await?;
    let request = ServerRequest::Rotate {
        old_signature: hex::encode(&signed.old_signature),
        new_signature: hex::encode(&signed.new_signature),
    };
    Ok(link.call(&request).await?)
}
