//! The read side: balances, history pages, payment outcomes and the audit
//! scan (stored values become domain values in [`crate::ledger::decode`]).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::core::keys::VerifyingKey;
use crate::core::limits::HISTORY_PAGE_MAX;
use crate::core::name::Name;
use crate::core::payment::{content_hash, PaymentId};
use crate::core::rules::RegisteredKey;
use crate::ledger::{
    HistoryPage, HistoryRow, KeyEntry, LedgerError, Outcome, StoredCheckpoint, StoredKeyChange,
    StoredPayment,
};

type Read<T> = Result<Result<T, LedgerError>, rusqlite::Error>;

pub(super) use crate::ledger::decode::{hash32, refusal, to_u64};
use crate::ledger::decode::{name, refused_outcome, StoredHistory, StoredSettlement};

/// Every registered key with its certificate's notAfter, for the writer.
pub(super) fn registered_keys(c: &Connection) -> Read<HashMap<Name, RegisteredKey>> {
    let mut stmt = c.prepare("SELECT name, public_key, key_not_after_s FROM accounts")?;
    let mut rows = stmt.query([])?;
    let mut keys = HashMap::new();
    while let Some(row) = rows.next()? {
        let (n, spki, not_after): (String, Vec<u8>, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let parsed = name(&n).and_then(|n| Ok((n, to_u64(not_after, "key_not_after_s")?)));
        match parsed {
            Ok((n, not_after_s)) => keys.insert(
                n,
                RegisteredKey {
                    fingerprint: content_hash(&spki),
                    not_after_s,
                },
            ),
            Err(e) => return Ok(Err(e)),
        };
    }
    Ok(Ok(keys))
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

/// Every settled payment as stored, in `seq` order (audit and export).
pub(super) const STORED_PAYMENTS_IN_ORDER: &str =
    "SELECT seq, id, payer, payee, amount, expires_at, memo, signature, content_hash, settled_at_ms
     FROM payments ORDER BY seq";

/// A row of [`STORED_PAYMENTS_IN_ORDER`], uninterpreted.
pub(super) fn stored_payment(r: &Row<'_>) -> Result<StoredPayment, rusqlite::Error> {
    Ok(StoredPayment {
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
    })
}

pub(super) const KEY_HISTORY_COLUMNS: &str = "hseq, name, kind, public_key, not_after_s, serial, proof, old_signature, new_signature, at_ms, after_seq";

pub(super) fn stored_key_change(r: &Row<'_>) -> Result<StoredKeyChange, rusqlite::Error> {
    Ok(StoredKeyChange {
        hseq: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        key_spki: r.get(3)?,
        not_after_s: r.get(4)?,
        serial: r.get(5)?,
        proof: r.get(6)?,
        old_signature: r.get(7)?,
        new_signature: r.get(8)?,
        at_ms: r.get(9)?,
        after_seq: r.get(10)?,
    })
}

pub(super) fn key_history(c: &Connection, who: &Name) -> Read<Vec<KeyEntry>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {KEY_HISTORY_COLUMNS} FROM key_history WHERE name = ?1 ORDER BY hseq"
    ))?;
    let rows = stmt.query_map([who.as_str()], stored_key_change)?;
    let mut out = Vec::new();
    for row in rows {
        match row?.into_entry() {
            Ok(entry) => out.push(entry),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(out))
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

/// A history page and the caller's balance, read in one transaction (one
/// WAL snapshot), so the balance is exactly the one after the newest row
/// when `before_seq` is absent.
pub(super) fn history(
    c: &Connection,
    who: &Name,
    limit: u32,
    before_seq: Option<u64>,
) -> Read<HistoryPage> {
    let tx = c.unchecked_transaction()?;
    let rows = match history_rows(&tx, who, limit, before_seq)? {
        Ok(rows) => rows,
        Err(e) => return Ok(Err(e)),
    };
    let balance_minor = match balance(&tx, who)? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    tx.finish()?;
    Ok(Ok(HistoryPage {
        rows,
        balance_minor,
    }))
}

fn history_rows(
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
    Ok(StoredHistory {
        seq: r.get(0)?,
        id: r.get(1)?,
        payer: r.get(2)?,
        payee: r.get(3)?,
        amount: r.get(4)?,
        memo: r.get(5)?,
        settled_at_ms: r.get(6)?,
    }
    .into_row())
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
    Ok(refused_outcome(&payer, &payee, &code, message).map(Some))
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

/// Whether any log has a leaf.
pub(super) fn has_log(c: &Connection) -> Result<bool, rusqlite::Error> {
    c.query_row("SELECT EXISTS (SELECT 1 FROM log_leaves)", [], |r| r.get(0))
}

/// Every stored checkpoint, by origin then tree size.
pub(super) fn checkpoints(conn: &Connection) -> Read<Vec<StoredCheckpoint>> {
    let mut stmt = conn.prepare_cached(
        "SELECT origin, tree_size, root, note, created_at_ms FROM checkpoints
         ORDER BY origin, tree_size",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(origin, size, root, note, at_ms)| {
            Ok(StoredCheckpoint {
                origin,
                size: to_u64(size, "tree_size")?,
                root: hash32(&root)?,
                note,
                at_ms: to_u64(at_ms, "created_at_ms")?,
            })
        })
        .collect())
}
