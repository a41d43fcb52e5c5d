//! `locate`: where a person accepts payments.

use super::{reply, Context};
use crate::core::name::Name;
use crate::wire::{ErrorCode, OnlinePeer, ResultJson, WireError};

/// The address of `name`'s peer listener, or why there is none.
pub async fn run(cx: &Context, name: &str) -> Result<ResultJson, WireError> {
    let name = Name::parse(name)
        .map_err(|e| WireError::new(ErrorCode::BadRequest, format!("name: {e}")))?;
    if let Some(address) = cx.presence.locate(&name).await? {
        return reply(OnlinePeer {
            name: name.to_string(),
            address,
        });
    }
    if cx.ledger.is_registered(&name).await? {
        Err(WireError::new(
            ErrorCode::PayeeOffline,
            format!("{name} is not online"),
        ))
    } else {
        Err(WireError::new(
            ErrorCode::UnknownPayee,
            format!("{name} has no account"),
        ))
    }
}
