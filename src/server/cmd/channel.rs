//! `channel_open` and `channel_close`: payment channels (PayWord). The
//! open's signature is checked here, on the connection's task, with the
//! payer's registered key; the writer decides the hold, the close and
//! every replay in order with everything else.

use tracing::info;

use super::{reply, Caller, Context};
use crate::core::channel::{CloseRequest, OpenReceipt};
use crate::core::channel_rules::VerifiedCommitment;
use crate::wire::channel::{parse_channel_id, parse_link};
use crate::wire::{ChannelClosed, ChannelOpened, CommitmentJson, ErrorCode, ResultJson, WireError};

/// Opens a channel whose payer is the caller; answers the server-signed
/// open receipt.
pub async fn open(
    cx: &Context,
    caller: &Caller,
    commitment: &CommitmentJson,
) -> Result<ResultJson, WireError> {
    let signed = commitment.parse()?;
    let me = &caller.identity.name;
    if signed.commitment.payer != *me {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            "you may only open channels you pay from",
        ));
    }
    let verified = VerifiedCommitment::verify(signed, &caller.identity.key).map_err(|_| {
        WireError::new(
            ErrorCode::BadSignature,
            "the commitment's signature does not verify with your key",
        )
    })?;
    let commitment_hash = verified.content_hash();
    let (record, replay) = cx.ledger.open_channel(verified).await??;
    let c = &record.signed.commitment;
    if !replay {
        info!(id = %c.id, payer = %c.payer, payee = %c.payee, hold = record.hold_minor, "channel opened");
    }
    let receipt = OpenReceipt {
        id: c.id,
        commitment_hash,
        hold_minor: record.hold_minor,
        opened_at_ms: record.opened_at_ms,
    }
    .sign(&cx.signing_key);
    reply(ChannelOpened {
        channel_id: c.id.to_hex(),
        commitment_hash: hex::encode(commitment_hash),
        hold: record.hold_minor,
        opened_at_ms: record.opened_at_ms,
        replay,
        server_signature: hex::encode(&receipt.signature),
    })
}

/// Closes a channel whose payee is the caller.
pub async fn close(
    cx: &Context,
    caller: &Caller,
    (channel_id, index, link): (&str, u64, &str),
) -> Result<ResultJson, WireError> {
    let close = CloseRequest {
        id: parse_channel_id(channel_id)?,
        index,
        link: parse_link(link, "link")?,
    };
    let me = caller.identity.name.clone();
    let (outcome, replay) = cx.ledger.close_channel(close, me).await??;
    if !replay {
        info!(id = %close.id, paid = outcome.paid_minor, released = outcome.released_minor, "channel closed");
    }
    reply(ChannelClosed {
        channel_id: close.id.to_hex(),
        index: outcome.index,
        paid: outcome.paid_minor,
        released: outcome.released_minor,
        closed_at_ms: outcome.at_ms,
        replay,
    })
}
