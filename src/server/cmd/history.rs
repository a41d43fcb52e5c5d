//! `history`: a page of the caller's settled payments, newest first, and
//! on the first page the caller's newest payment channels.

use super::{reply, Caller, Context};
use crate::core::limits::{CHANNEL_HISTORY_MAX, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX};
use crate::wire::channel::ChannelEntry;
use crate::wire::{ErrorCode, History, HistoryEntry, ResultJson, WireError};

/// Up to `limit` (1 to [`HISTORY_PAGE_MAX`], default
/// [`HISTORY_PAGE_DEFAULT`]) payments with a sequence number below
/// `before_seq` (exclusive; at least 1), and `next_before_seq` exactly
/// when older payments remain, with the caller's balance read in the same
/// snapshot (the running-balance anchor of a statement).
pub async fn run(
    cx: &Context,
    caller: &Caller,
    limit: Option<u32>,
    before_seq: Option<u64>,
) -> Result<ResultJson, WireError> {
    let limit = limit.unwrap_or(HISTORY_PAGE_DEFAULT);
    if !(1..=HISTORY_PAGE_MAX).contains(&limit) {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("limit must be 1..={HISTORY_PAGE_MAX}"),
        ));
    }
    if before_seq == Some(0) {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "before_seq must be at least 1 (it is exclusive)",
        ));
    }
    // One row more than asked says whether another page exists.
    let page = cx
        .ledger
        .history(&caller.identity.name, limit + 1, before_seq)
        .await?;
    let mut rows = page.rows;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
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
    let next_before_seq = if more {
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    let channels = match before_seq {
        Some(_) => Vec::new(),
        None => cx
            .ledger
            .channels_of(&caller.identity.name, CHANNEL_HISTORY_MAX)
            .await?
            .iter()
            .map(ChannelEntry::from)
            .collect(),
    };
    reply(History {
        entries,
        next_before_seq,
        balance: page.balance_minor,
        channels,
    })
}
