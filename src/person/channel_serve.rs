//! What `serve` does with payment channels: answers `channel_offer` and
//! `channel_pay` from payers (checked and stored by [`PayeeChannels`]
//! before the acknowledgement), and closes the channels it holds links of
//! before they expire, without being asked.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::core::channel::{OpenReceipt, SignedOpenReceipt};
use crate::core::limits::{CHANNEL_AUTOCLOSE_MARGIN_S, CHANNEL_AUTOCLOSE_POLL_MS};
use crate::net::identity::Identity;
use crate::net::link::{CallError, Link};
use crate::person::channel_payee::PayeeRefusal;
use crate::person::channel_writer::ChannelWriter;
use crate::system::clock::now_s;
use crate::wire::channel::{parse_channel_id, parse_link};
use crate::wire::{
    ChannelAck, ChannelClosed, ChannelOpened, CommitmentJson, ErrorCode, PeerRequest,
    ServerRequest, WireError,
};

pub use crate::person::channel_writer::SharedChannels;

fn refusal(e: PayeeRefusal) -> WireError {
    let code = match &e {
        PayeeRefusal::BadOffer(_) => ErrorCode::Forbidden,
        PayeeRefusal::Unknown(_) => ErrorCode::NotFound,
        PayeeRefusal::Link(_) => ErrorCode::BadSignature,
        PayeeRefusal::Store(_) | PayeeRefusal::NotStored(_) => ErrorCode::Internal,
        PayeeRefusal::Stopping => ErrorCode::Unavailable,
    };
    WireError::new(code, e.to_string())
}

/// A `channel_pay` accepted in memory: what its acknowledgement waits for.
pub struct AcceptedLink {
    channel_id: String,
    index: u64,
    ticket: u64,
}

/// The first half of a `channel_pay`: checks the link and accepts it in
/// memory. `serve` calls this as soon as the request is read, before any
/// await, so the links of a pipelining payer are taken in the order sent.
pub fn accept_link(
    writer: &ChannelWriter,
    (channel_id, index, link): (&str, u64, &str),
) -> Result<AcceptedLink, WireError> {
    let id = parse_channel_id(channel_id)?;
    let link = parse_link(link, "link")?;
    let (ticket, index) = writer.accept(&id, index, link).map_err(refusal)?;
    Ok(AcceptedLink {
        channel_id: channel_id.to_owned(),
        index,
        ticket,
    })
}

/// The second half: the acknowledgement, once the link is on disk.
pub async fn acknowledge(
    writer: &ChannelWriter,
    accepted: AcceptedLink,
) -> Result<ChannelAck, WireError> {
    writer.written(accepted.ticket).await.map_err(refusal)?;
    Ok(ChannelAck {
        channel_id: accepted.channel_id,
        index: accepted.index,
    })
}

/// Answers one channel request from `payer`; `server` is my connection to
/// the server (its certificate key checks open receipts).
pub async fn handle(
    writer: &ChannelWriter,
    me: &crate::core::name::Name,
    payer: &Identity,
    server: Option<Arc<Link>>,
    request: PeerRequest,
) -> Result<ChannelAck, WireError> {
    match request {
        PeerRequest::ChannelOffer {
            commitment,
            open_receipt,
        } => {
            let server = server.ok_or_else(|| {
                WireError::new(ErrorCode::Unavailable, "the payee cannot reach the server")
            })?;
            let server_key = server
                .server_key()
                .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
            offer(
                writer.channels(),
                (me, payer),
                &server_key,
                &commitment,
                &open_receipt,
            )
            .await
        }
        PeerRequest::ChannelPay {
            channel_id,
            index,
            link,
        } => {
            let accepted = accept_link(writer, (&channel_id, index, &link))?;
            acknowledge(writer, accepted).await
        }
        PeerRequest::Pay { .. } => Err(WireError::new(
            ErrorCode::BadRequest,
            "not a channel request",
        )),
    }
}

async fn offer(
    channels: &SharedChannels,
    (me, payer): (&crate::core::name::Name, &Identity),
    server_key: &crate::core::keys::VerifyingKey,
    commitment: &CommitmentJson,
    opened: &ChannelOpened,
) -> Result<ChannelAck, WireError> {
    let signed = commitment.parse()?;
    let receipt = SignedOpenReceipt {
        receipt: OpenReceipt {
            id: signed.commitment.id,
            commitment_hash: signed.content_hash(),
            hold_minor: opened.hold,
            opened_at_ms: opened.opened_at_ms,
        },
        signature: hex::decode(&opened.server_signature)
            .map_err(|_| WireError::new(ErrorCode::BadRequest, "server_signature must be hex"))?,
    };
    let (channels, me, payer_name, payer_key, server_key) = (
        channels.clone(),
        me.clone(),
        payer.name.clone(),
        payer.key.clone(),
        server_key.clone(),
    );
    let id = signed.commitment.id;
    tokio::task::spawn_blocking(move || {
        let mut guard = channels.lock().unwrap_or_else(|p| p.into_inner());
        guard.offer((&me, &payer_name, &payer_key), &server_key, signed, receipt)?;
        Ok(guard.get(&id).map(|h| h.index).unwrap_or(0))
    })
    .await
    .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(refusal)
    .map(|index| ChannelAck {
        channel_id: id.to_hex(),
        index,
    })
}

/// Closes, every [`CHANNEL_AUTOCLOSE_POLL_MS`], each channel that holds
/// paid links and expires within [`CHANNEL_AUTOCLOSE_MARGIN_S`], over the
/// current server connection (`server()`), and forgets it once the server
/// answers (a replay counts: the channel was closed before). Runs until
/// `stop` turns true.
pub async fn close_before_expiry(
    channels: SharedChannels,
    server: impl Fn() -> Option<Arc<Link>>,
    mut stop: watch::Receiver<bool>,
) {
    let period = Duration::from_millis(CHANNEL_AUTOCLOSE_POLL_MS);
    loop {
        if let Some(link) = server() {
            let _ = close_due(&channels, &link, now_s() + CHANNEL_AUTOCLOSE_MARGIN_S).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Closes every held channel expiring before `before_s`; answers how many
/// closed. Used by the close task and by `micropay-client channel close`.
pub async fn close_due(
    channels: &SharedChannels,
    link: &Link,
    before_s: u64,
) -> Result<u32, CallError> {
    let due = channels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .due(before_s);
    let mut closed = 0;
    for close in due {
        let answer: Result<ChannelClosed, CallError> = link
            .call(&ServerRequest::ChannelClose {
                channel_id: close.id.to_hex(),
                index: close.index,
                link: close.link.to_hex(),
            })
            .await;
        match answer {
            Ok(done) => {
                info!(id = %close.id, paid = done.paid, replay = done.replay, "channel closed");
                let mut guard = channels.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = guard.forget(&close.id) {
                    warn!("forgetting closed channel {}: {e}", close.id);
                }
                closed += 1;
            }
            Err(CallError::Refused(e)) => {
                warn!(id = %close.id, code = e.code.as_str(), "the server refused the close: {}", crate::system::terminal::escape(&e.message));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(closed)
}
