//! `offline`: withdraw the presence this connection announced.

use tracing::info;

use super::{reply, Caller, Context};
use crate::wire::{ResultJson, WireError};

/// Withdraws only the presence this connection announced: a newer
/// `online` of the same person from another connection stays.
pub async fn run(cx: &Context, caller: &Caller) -> Result<ResultJson, WireError> {
    let me = &caller.identity.name;
    let was = cx.presence.withdraw(me, caller.conn_id).await?;
    if was {
        info!(name = %me, "offline");
    }
    reply(serde_json::json!({ "was_online": was }))
}
