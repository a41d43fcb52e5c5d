//! `history`: a page of the caller's settled payments, newest first.

use super::{reply, Caller, Context};
use crate::core::limits::HISTORY_PAGE_DEFAULT;
use crate::wire::{History, HistoryEntry, ResultJson, WireError};

/// Up to `limit` payments below `before_seq`, and where the next page
/// starts when this one is full.
pub async fn run(
    cx: &Context,
    caller: &Caller,
    limit: Option<u32>,
    before_seq: Option<u64>,
) -> Result<ResultJson, WireError> {
    let limit = limit.unwrap_or(HISTORY_PAGE_DEFAULT);
    let rows = cx
        .ledger
        .history(&caller.identity.name, limit, before_seq)
        .await?;
    let entries: Vec<HistoryEntry> = rows
        .into_iter()
        .map(|r| HistoryEntry {
            seq: r.seq,
            payment_id: r.payment_id.to_hex(),
            payer: r.payer,
            payee: r.payee,
            amount: r.amount_minor,
            memo: r.memo,
            settled_at_ms: r.settled_at_ms,
        })
        .collect();
    let next_before_seq = if entries.len() as u32 >= limit.max(1) {
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    reply(History {
        entries,
        next_before_seq,
    })
}
