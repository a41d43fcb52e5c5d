//! `balance`: the caller's committed (available) balance and what its
//! open payment channels hold.

use super::{reply, Caller, Context};
use crate::wire::{Balance, ResultJson, WireError};

/// The caller's balance.
pub async fn run(cx: &Context, caller: &Caller) -> Result<ResultJson, WireError> {
    let me = &caller.identity.name;
    let balance = cx.ledger.balance(me).await?.unwrap_or(0);
    let held = cx.ledger.held(me).await?;
    reply(Balance {
        name: me.to_string(),
        balance,
        held,
    })
}
