//! `list`: the caller's balance and who is online.

use super::{reply, Caller, Context};
use crate::core::limits::LIST_ENTRIES_MAX;
use crate::wire::{Listing, OnlinePeer, ResultJson, WireError};

/// The caller's balance, the receipt key's fingerprint and the first
/// [`LIST_ENTRIES_MAX`] people online.
pub async fn run(cx: &Context, caller: &Caller) -> Result<ResultJson, WireError> {
    let balance = cx.ledger.balance(&caller.identity.name).await?.unwrap_or(0);
    let held = cx.ledger.held(&caller.identity.name).await?;
    let roster = cx.presence.roster(LIST_ENTRIES_MAX).await?;
    let online = roster
        .people
        .into_iter()
        .map(|p| OnlinePeer {
            name: p.name.to_string(),
            address: p.address,
        })
        .collect();
    reply(Listing {
        balance,
        held,
        server_key_fingerprint: cx.fingerprint.clone(),
        online_count: roster.total,
        online,
    })
}
