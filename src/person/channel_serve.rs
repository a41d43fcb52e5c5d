//! What `serve` does with payment channels: answers `channel_offer` and
//! `channel_pay` from payers (checked and stored by [`PayeeChannels`]
//! before the acknowledgement), and closes the channels it holds links of
//! before they expire, without being asked.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::core::channel::{CloseRequest, OpenReceipt, SignedOpenReceipt};
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
        PayeeRefusal::Unknown(_) | PayeeRefusal::Closing(_) => ErrorCode::NotFound,
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
    writer: Arc<ChannelWriter>,
    server: impl Fn() -> Option<Arc<Link>>,
    mut stop: watch::Receiver<bool>,
) {
    let period = Duration::from_millis(CHANNEL_AUTOCLOSE_POLL_MS);
    loop {
        if let Some(link) = server() {
            let before_s = now_s() + CHANNEL_AUTOCLOSE_MARGIN_S;
            let _ = close_with(writer.channels(), Some(&writer), &link, before_s).await;
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

/// Closes every held channel expiring before `before_s` whose links no
/// writer is writing (`micropay-client channel close`, the bench);
/// answers how many closed.
pub async fn close_due(
    channels: &SharedChannels,
    link: &Link,
    before_s: u64,
) -> Result<u32, CallError> {
    close_with(channels, None, link, before_s).await
}

/// Closes every held channel expiring before `before_s`. The channels stop
/// taking links first; with a `writer`, the close waits until every link
/// already accepted is written, so that no acknowledgement goes past the
/// index claimed, and claims only what is on disk if the writer stopped.
async fn close_with(
    channels: &SharedChannels,
    writer: Option<&ChannelWriter>,
    link: &Link,
    before_s: u64,
) -> Result<u32, CallError> {
    let lock = || channels.lock().unwrap_or_else(|p| p.into_inner());
    let (ticket, mut due) = lock().begin_closing(before_s);
    if due.is_empty() {
        return Ok(0);
    }
    if let Some(writer) = writer {
        if writer.written(ticket).await.is_err() {
            let ids: Vec<_> = due.iter().map(|c| c.id).collect();
            due = lock().durable_requests(&ids);
            let claimed: std::collections::HashSet<_> = due.iter().map(|c| c.id).collect();
            for id in ids.iter().filter(|id| !claimed.contains(id)) {
                lock().end_closing(id);
            }
        }
    }
    let mut closed = 0;
    let mut left = due.into_iter();
    while let Some(close) = left.next() {
        match submit(link, &close).await {
            Ok(done) => {
                info!(id = %close.id, paid = done.paid, replay = done.replay, "channel closed");
                if let Err(e) = lock().forget(&close.id) {
                    warn!("forgetting closed channel {}: {e}", close.id);
                }
                closed += 1;
            }
            Err(CallError::Refused(e)) => {
                warn!(id = %close.id, code = e.code.as_str(), "the server refused the close: {}", crate::system::terminal::escape(&e.message));
                lock().end_closing(&close.id);
            }
            Err(e) => {
                // Not closed: these channels take links again.
                for not_closed in std::iter::once(close).chain(left) {
                    lock().end_closing(&not_closed.id);
                }
                return Err(e);
            }
        }
    }
    Ok(closed)
}

async fn submit(link: &Link, close: &CloseRequest) -> Result<ChannelClosed, CallError> {
    link.call(&ServerRequest::ChannelClose {
        channel_id: close.id.to_hex(),
        index: close.index,
        link: close.link.to_hex(),
    })
    .await
}
