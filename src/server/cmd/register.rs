//! `register`: open an account bound to the caller's certificate key.

use tracing::info;

use super::{reply, Caller, Context};
use crate::wire::{Registered, ResultJson, WireError};

/// Opens the caller's account; answers once it is durable.
pub async fn run(cx: &Context, caller: &Caller) -> Result<ResultJson, WireError> {
    let me = &caller.identity.name;
    let account = cx
        .ledger
        .register(
            me.clone(),
            caller.identity.key.clone(),
            (
                u64::try_from(caller.identity.not_after_s).unwrap_or(0),
                caller.identity.serial.clone(),
            ),
        )
        .await??;
    info!(name = %me, balance = account.balance, "registered");
    reply(Registered {
        name: me.to_string(),
        balance: account.balance,
        key_fingerprint: caller.identity.key.fingerprint(),
    })
}
