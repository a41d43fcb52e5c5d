//! `rotate`: move the caller's account to the key of the certificate this
//! connection presents, or renew it (same key, later notAfter).

use tracing::info;

use super::{reply, Caller, Context};
use crate::core::keys::SIGNATURE_BYTES_MAX;
use crate::core::rotation::{KeyChange, KeyStatement, SignedKeyStatement, StatementError};
use crate::wire::{ErrorCode, ResultJson, Rotated, WireError};

/// Rebuilds the statement from the registered key (read from the store,
/// so a rotation made through another server counts) and the caller's
/// certificate, checks both signatures here, on the connection's task,
/// and has the writer decide the change in order with everything else.
pub async fn run(
    cx: &Context,
    caller: &Caller,
    old_signature: &str,
    new_signature: &str,
) -> Result<ResultJson, WireError> {
    let identity = &caller.identity;
    let me = &identity.name;
    let old_key = cx.ledger.refresh_key(me).await?.ok_or_else(|| {
        WireError::new(
            ErrorCode::NotRegistered,
            format!("{me} has no account; register first"),
        )
    })?;
    let statement = KeyStatement {
        name: me.clone(),
        old_key: (*old_key).clone(),
        new_key: identity.key.clone(),
        new_not_after_s: u64::try_from(identity.not_after_s).unwrap_or(0),
        new_serial: identity.serial.clone(),
    };
    let signed = SignedKeyStatement {
        statement,
        old_signature: signature(old_signature, "old_signature")?,
        new_signature: signature(new_signature, "new_signature")?,
    };
    let change = KeyChange::from_statement(signed).map_err(|e| match e {
        StatementError::SerialTooLong => WireError::new(ErrorCode::BadRequest, e.to_string()),
        StatementError::BadOldSignature => WireError::new(
            ErrorCode::BadSignature,
            format!("old_signature does not verify with {me}'s registered key over the rotation statement"),
        ),
        StatementError::BadNewSignature => WireError::new(
            ErrorCode::BadSignature,
            "new_signature does not verify with this certificate's key over the rotation statement",
        ),
    })?;
    let kind = change.kind();
    let registered = cx.ledger.change_key(change).await??;
    info!(name = %me, kind = kind.as_str(), serial = %identity.serial_hex(), "key changed");
    reply(Rotated {
        name: me.to_string(),
        kind: kind.as_str().to_owned(),
        key_fingerprint: identity.key.fingerprint(),
        not_after: registered.not_after_s,
    })
}

fn signature(hex_text: &str, field: &str) -> Result<Vec<u8>, WireError> {
    if hex_text.len() > 2 * SIGNATURE_BYTES_MAX {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("{field} is longer than any signature"),
        ));
    }
    hex::decode(hex_text)
        .map_err(|_| WireError::new(ErrorCode::BadRequest, format!("{field} must be hex")))
}
