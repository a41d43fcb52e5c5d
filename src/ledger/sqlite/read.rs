//! The read side: balances, history pages, payment outcomes, the audit
//! scan, and turning stored values back into domain values (a stored
//! value that does not fit is reported as corruption, never a panic).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::core::keys::VerifyingKey;
use crate::core::limits::{HISTORY_PAGE_MAX, MEMO_BYTES_MAX};
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId, SignedPayment};
use crate::core::rules::{Refusal, RefusalKind};
use crate::ledger::{AuditVisitor, HistoryRow, LedgerError, Outcome, Settlement, StoredPayment};

type Read<T> = Result<Result<T, LedgerError>, rusqlite::Error>;

/// A stored integer that must be non-negative.
pub(super) fn to_u64(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("negative {what} {v}")))
}

/// A stored SHA-256.
pub(super) fn hash32(bytes: &[u8]) -> Result<[u8; 32], LedgerError> {
    bytes
        .try_into()
        .map_err(|_| LedgerError::Corrupt(format!("a hash of {} bytes", bytes.len())))
}

/// A stored refusal.
pub(super) fn refusal(code: &str, message: String) -> Result<Refusal, LedgerError> {
    let kind = RefusalKind::parse(code)
        .ok_or_else(|| LedgerError::Corrupt(format!("unknown refusal {code:?}")))?;
    Ok(Refusal::new(kind, message))
}

fn name(s: &str) -> Result<Name, LedgerError> {
    Name::parse(s).map_err(|e| LedgerError::Corrupt(format!("name {s:?}: {e}")))
}

pub(super) fn keys(c: &Connection) -> Read<Vec<(Name, VerifyingKey)>> {
    let mut stmt = c.prepare("SELECT name, public_key FROM accounts")?;
    let mut rows = stmt.query([])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        let n: String = row.get(0)?;
        let spki: Vec<u8> = row.get(1)?;
        let parsed = Name::parse(&n)
            .ok()
            .zip(VerifyingKey::from_spki_der(&spki).ok());
        let Some(pair) = parsed else {
            return Ok(Err(LedgerError::Corrupt(format!(
                "account {n:?} has a bad key"
            ))));
        };
        keys.push(pair);
    }
    Ok(Ok(keys))
}

pub(super) fn key(c: &Connection, who: &Name) -> Read<Option<VerifyingKey>> {
    let spki = c
        .prepare_cached("SELECT public_key FROM accounts WHERE name = ?1")?
        .query_row([who.as_str()], |r| r.get::<_, Vec<u8>>(0))
        .optional()?;
    Ok(spki
        .map(|spki| {
            VerifyingKey::from_spki_der(&spki)
                .map_err(|e| LedgerError::Corrupt(format!("account {who} has a bad key: {e}")))
        })
        .transpose())
}

pub(super) fn balances(c: &Connection) -> Read<HashMap<Name, u64>> {
    let mut stmt = c.prepare("SELECT name, balance FROM accounts")?;
    let mut rows = stmt.query([])?;
    let mut balances = HashMap::new();
    while let Some(row) = rows.next()? {
        let n: String = row.get(0)?;
        let b: i64 = row.get(1)?;
        let parsed = name(&n).and_then(|n| Ok((n, to_u64(b, "balance")?)));
        match parsed {
            Ok((n, b)) => balances.insert(n, b),
            Err(e) => return Ok(Err(e)),
        };
    }
    Ok(Ok(balances))
}

pub(super) fn balance(c: &Connection, who: &Name) -> Read<Option<u64>> {
    let b = c
        .prepare_cached("SELECT balance FROM accounts WHERE name = ?1")?
        .query_row([who.as_str()], |r| r.get::<_, i64>(0))
        .optional()?;
    Ok(b.map(|b| to_u64(b, "balance")).transpose())
}

pub(super) fn history(
    c: &Connection,
    who: &Name,
    limit: u32,
    before_seq: Option<u64>,
) -> Read<Vec<HistoryRow>> {
    // One more than a page: the caller asks for it to learn whether more exist.
    let limit = limit.clamp(1, HISTORY_PAGE_MAX + 1);
    let before = before_seq.map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX));
    let mut stmt = c.prepare_cached(
        "SELECT seq, id, payer, payee, amount, memo, settled_at_ms FROM payments
         WHERE seq < ?2 AND (payer = ?1 OR payee = ?1)
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![who.as_str(), before, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        match history_row(r)? {
            Ok(row) => out.push(row),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(out))
}

fn history_row(r: &Row<'_>) -> Read<HistoryRow> {
    let id: Vec<u8> = r.get(1)?;
    let (seq, amount, at): (i64, i64, i64) = (r.get(0)?, r.get(4)?, r.get(6)?);
    let (payer, payee, memo) = (r.get(2)?, r.get(3)?, r.get(5)?);
    Ok((|| {
        let id: [u8; 16] = id
            .as_slice()
            .try_into()
            .map_err(|_| LedgerError::Corrupt(format!("payment seq {seq} has a bad id")))?;
        Ok(HistoryRow {
            seq: to_u64(seq, "seq")?,
            payment_id: PaymentId(id),
            payer,
            payee,
            amount_minor: to_u64(amount, "amount")?,
            memo,
            settled_at_ms: to_u64(at, "settled_at_ms")?,
        })
    })())
}

pub(super) fn outcome(c: &Connection, party: &Name, id: &PaymentId) -> Read<Option<Outcome>> {
    // Ids are unique per payer; the caller's own payment comes first.
    let settled = c
        .prepare_cached(
            "SELECT payer, payee, amount, expires_at, memo, signature, seq, settled_at_ms
             FROM payments WHERE id = ?1 AND (payer = ?2 OR payee = ?2)
             ORDER BY payer = ?2 DESC LIMIT 1",
        )?
        .query_row(params![&id.0[..], party.as_str()], stored_settlement)
        .optional()?;
    if let Some(settled) = settled {
        return Ok(settled.and_then(|s| s.into_outcome(*id)).map(Some));
    }
    let refused = c
        .prepare_cached(
            "SELECT payer, payee, code, message FROM rejections
             WHERE id = ?1 AND (payer = ?2 OR payee = ?2)
             ORDER BY payer = ?2 DESC LIMIT 1",
        )?
        .query_row(params![&id.0[..], party.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .optional()?;
    let Some((payer, payee, code, message)) = refused else {
        return Ok(Ok(None));
    };
    Ok((|| {
        Ok(Some(Outcome::Refused {
            payer: name(&payer)?,
            payee: name(&payee)?,
            refusal: refusal(&code, message)?,
        }))
    })())
}

/// A settled row as read, before it is checked.
struct StoredSettlement {
    payer: String,
    payee: String,
    amount: i64,
    expires_at: i64,
    memo: String,
    signature: Vec<u8>,
    seq: i64,
    settled_at_ms: i64,
}

fn stored_settlement(
    r: &Row<'_>,
) -> Result<Result<StoredSettlement, LedgerError>, rusqlite::Error> {
    Ok(Ok(StoredSettlement {
        payer: r.get(0)?,
        payee: r.get(1)?,
        amount: r.get(2)?,
        expires_at: r.get(3)?,
        memo: r.get(4)?,
        signature: r.get(5)?,
        seq: r.get(6)?,
        settled_at_ms: r.get(7)?,
    }))
}

impl StoredSettlement {
    fn into_outcome(self, id: PaymentId) -> Result<Outcome, LedgerError> {
        if self.memo.len() > MEMO_BYTES_MAX {
            return Err(LedgerError::Corrupt(format!(
                "payment seq {} has a memo of {} bytes",
                self.seq,
                self.memo.len()
            )));
        }
        let payment = SignedPayment {
            payment: Payment {
                id,
                payer: name(&self.payer)?,
                payee: name(&self.payee)?,
                amount_minor: to_u64(self.amount, "amount")?,
                expires_at_s: to_u64(self.expires_at, "expires_at")?,
                memo: self.memo,
            },
            signature: self.signature,
        };
        let payment_hash = payment.content_hash();
        Ok(Outcome::Settled(
            Box::new(payment),
            Settlement {
                seq: to_u64(self.seq, "seq")?,
                settled_at_ms: to_u64(self.settled_at_ms, "settled_at_ms")?,
                replay: true,
                payment_hash,
            },
        ))
    }
}

/// Feeds every row to the audit, payments in `seq` order.
pub(super) fn scan(c: &Connection, visitor: &mut dyn AuditVisitor) -> Result<(), rusqlite::Error> {
    let mut stmt = c.prepare("SELECT name, public_key, balance FROM accounts")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (n, spki, balance): (String, Vec<u8>, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        visitor.account(&n, &spki, balance);
    }
    let mut stmt = c.prepare("SELECT name, amount FROM grants ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        visitor.grant(&r.get::<_, String>(0)?, r.get(1)?);
    }
    let mut stmt = c.prepare(
        "SELECT seq, id, payer, payee, amount, expires_at, memo, signature, content_hash, settled_at_ms
         FROM payments ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        visitor.payment(StoredPayment {
            seq: r.get(0)?,
            id: r.get(1)?,
            payer: r.get(2)?,
            payee: r.get(3)?,
            amount: r.get(4)?,
            expires_at: r.get(5)?,
            memo: r.get(6)?,
            signature: r.get(7)?,
            content_hash: r.get(8)?,
            settled_at_ms: r.get(9)?,
        });
    }
    let mut stmt = c.prepare("SELECT 1 FROM rejections")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {
        visitor.refusal();
    }
    Ok(())
}
