//! `balance`: the caller's committed balance.

use super::{reply, Caller, Context};
use crate::wire::{Balance, ResultJson, WireError};

/// The caller's balance.
pub async fn run(cx: &Context, caller: &Caller) -> Result<ResultJson, WireError> {
    let me = &caller.identity.name;
    let balance = cx.ledger.balance(me).await?.unwrap_or(0);
    reply(Balance {
        name: me.to_string(),
        balance,
    })
}
