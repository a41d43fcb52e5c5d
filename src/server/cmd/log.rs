//! `checkpoint` and `consistency`: the log's latest signed tree head and
//! the proof that an older tree is a prefix of a newer one, so that a
//! client that saw a checkpoint can check that history was not rewritten
//! since (docs/PROTOCOL.md, "The log").

use super::{reply, Context};
use crate::wire::{CheckpointJson, ConsistencyJson, ErrorCode, ResultJson, WireError};

fn no_log() -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        "this server's log has no checkpoint yet (no payment settled since it started keeping one)",
    )
}

/// The latest checkpoint.
pub fn checkpoint(cx: &Context) -> Result<ResultJson, WireError> {
    let latest = cx.ledger.log().latest().ok_or_else(no_log)?;
    reply(CheckpointJson {
        checkpoint: latest.note,
    })
}

/// The consistency proof from `from_size` to `to_size`.
pub fn consistency(cx: &Context, from_size: u64, to_size: u64) -> Result<ResultJson, WireError> {
    let latest = cx.ledger.log().latest().ok_or_else(no_log)?;
    if from_size > to_size || to_size > latest.size {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!(
                "need from_size <= to_size <= {} (the latest checkpoint's size)",
                latest.size
            ),
        ));
    }
    let proof = cx
        .ledger
        .log()
        .consistency(from_size, to_size)
        .map_err(|e| WireError::new(ErrorCode::BadRequest, e.to_string()))?;
    reply(ConsistencyJson {
        from_size,
        to_size,
        proof: proof.iter().map(hex::encode).collect(),
    })
}
