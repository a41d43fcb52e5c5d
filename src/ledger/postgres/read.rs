//! The read side on PostgreSQL: keys, balances, history pages, payment
//! outcomes and the audit scan (in one repeatable-read snapshot, payments
//! in `seq` order, fetched in pages so memory stays bounded).

use tokio_postgres::{Client, IsolationLevel, Row};

use crate::core::keys::VerifyingKey;
use crate::core::limits::HISTORY_PAGE_MAX;
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::ledger::decode::{name, refused_outcome, StoredHistory, StoredSettlement};
use crate::ledger::{
    AuditVisitor, HistoryPage, HistoryRow, KeyEntry, LedgerError, Outcome, StoredKeyChange,
    StoredPayment,
};

use super::pg_error;
use crate::ledger::decode::{hash32, to_u64};
use crate::ledger::{StoredCheckpoint, StoredGrant, StoredRefusal};

/// Payment rows fetched at a time by the audit scan.
const SCAN_PAGE_ROWS: i32 = 1_000;

fn bad_key(who: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(format!("account {who:?} has a bad key: {e}"))
}

pub(super) async fn keys(c: &mut Client) -> Result<Vec<(Name, VerifyingKey)>, LedgerError> {
    let rows = c
        .query("SELECT name, public_key FROM accounts", &[])
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            let (n, spki): (String, Vec<u8>) = (
                r.try_get(0).map_err(pg_error)?,
                r.try_get(1).map_err(pg_error)?,
            );
            let key = VerifyingKey::from_spki_der(&spki).map_err(|e| bad_key(&n, e))?;
            Ok((name(&n)?, key))
        })
        .collect()
}

pub(super) async fn key(c: &mut Client, who: &Name) -> Result<Option<VerifyingKey>, LedgerError> {
    let row = c
        .query_opt(
            "SELECT public_key FROM accounts WHERE name = $1",
            &[&who.as_str()],
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let spki: Vec<u8> = row.try_get(0).map_err(pg_error)?;
    VerifyingKey::from_spki_der(&spki)
        .map(Some)
        .map_err(|e| bad_key(who.as_str(), e))
}

pub(super) async fn balance(c: &mut Client, who: &Name) -> Result<Option<u64>, LedgerError> {
    let row = c
        .query_opt(
            "SELECT balance FROM accounts WHERE name = $1",
            &[&who.as_str()],
        )
        .await
        .map_err(pg_error)?;
    row.map(|r| {
        let b: i64 = r.try_get(0).map_err(pg_error)?;
        crate::ledger::decode::to_u64(b, "balance")
    })
    .transpose()
}

/// A history page and the caller's balance, read in one repeatable-read
/// snapshot, so the balance is exactly the one after the newest row when
/// `before_seq` is absent.
pub(super) async fn history(
    c: &mut Client,
    who: &Name,
    limit: u32,
    before_seq: Option<u64>,
) -> Result<HistoryPage, LedgerError> {
    // One more than a page: the caller asks for it to learn whether more exist.
    let limit = i64::from(limit.clamp(1, HISTORY_PAGE_MAX + 1));
    let before = before_seq.map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX));
    let tx = snapshot(c).await?;
    let rows = tx
        .query(
            "SELECT seq, id, payer, payee, amount, memo, settled_at_ms FROM payments
             WHERE seq < $2 AND (payer = $1 OR payee = $1)
             ORDER BY seq DESC LIMIT $3",
            &[&who.as_str(), &before, &limit],
        )
        .await
        .map_err(pg_error)?;
    let rows = rows
        .iter()
        .map(history_row)
        .collect::<Result<Vec<_>, _>>()?;
    let balance = tx
        .query_opt(
            "SELECT balance FROM accounts WHERE name = $1",
            &[&who.as_str()],
        )
        .await
        .map_err(pg_error)?;
    let balance_minor = balance
        .map(|r| crate::ledger::decode::to_u64(r.try_get(0).map_err(pg_error)?, "balance"))
        .transpose()?;
    tx.commit().await.map_err(pg_error)?;
    Ok(HistoryPage {
        rows,
        balance_minor,
    })
}

fn history_row(r: &Row) -> Result<HistoryRow, LedgerError> {
    StoredHistory {
        seq: r.try_get(0).map_err(pg_error)?,
        id: r.try_get(1).map_err(pg_error)?,
        payer: r.try_get(2).map_err(pg_error)?,
        payee: r.try_get(3).map_err(pg_error)?,
        amount: r.try_get(4).map_err(pg_error)?,
        memo: r.try_get(5).map_err(pg_error)?,
        settled_at_ms: r.try_get(6).map_err(pg_error)?,
    }
    .into_row()
}

pub(super) async fn outcome(
    c: &mut Client,
    party: &Name,
    id: &PaymentId,
) -> Result<Option<Outcome>, LedgerError> {
    // Ids are unique per payer; the caller's own payment comes first.
    let (id_bytes, who) = (&id.0[..], party.as_str());
    let settled = c
        .query_opt(
            "SELECT payer, payee, amount, expires_at, memo, signature, seq, settled_at_ms
             FROM payments WHERE id = $1 AND (payer = $2 OR payee = $2)
             ORDER BY (payer = $2) DESC LIMIT 1",
            &[&id_bytes, &who],
        )
        .await
        .map_err(pg_error)?;
    if let Some(r) = settled {
        return stored_settlement(&r)?.into_outcome(*id).map(Some);
    }
    let refused = c
        .query_opt(
            "SELECT payer, payee, code, message FROM rejections
             WHERE id = $1 AND (payer = $2 OR payee = $2)
             ORDER BY (payer = $2) DESC LIMIT 1",
            &[&id_bytes, &who],
        )
        .await
        .map_err(pg_error)?;
    let Some(r) = refused else {
        return Ok(None);
    };
    let text = |i: usize| r.try_get::<_, String>(i).map_err(pg_error);
    refused_outcome(&text(0)?, &text(1)?, &text(2)?, text(3)?).map(Some)
}

fn stored_settlement(r: &Row) -> Result<StoredSettlement, LedgerError> {
    Ok(StoredSettlement {
        payer: r.try_get(0).map_err(pg_error)?,
        payee: r.try_get(1).map_err(pg_error)?,
        amount: r.try_get(2).map_err(pg_error)?,
        expires_at: r.try_get(3).map_err(pg_error)?,
        memo: r.try_get(4).map_err(pg_error)?,
        signature: r.try_get(5).map_err(pg_error)?,
        seq: r.try_get(6).map_err(pg_error)?,
        settled_at_ms: r.try_get(7).map_err(pg_error)?,
    })
}

/// A read-only transaction whose reads all see one consistent snapshot.
async fn snapshot(c: &mut Client) -> Result<tokio_postgres::Transaction<'_>, LedgerError> {
    c.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)
}

/// Feeds every row to the audit, payments in `seq` order, all from one
/// consistent snapshot.
pub(super) async fn scan(
    c: &mut Client,
    visitor: &mut dyn AuditVisitor,
) -> Result<(), LedgerError> {
    let tx = snapshot(c).await?;
    for r in tx
        .query(
            "SELECT name, public_key, balance, key_not_after_s FROM accounts",
            &[],
        )
        .await
        .map_err(pg_error)?
    {
        let (n, spki, balance): (String, Vec<u8>, i64) = (
            r.try_get(0).map_err(pg_error)?,
            r.try_get(1).map_err(pg_error)?,
            r.try_get(2).map_err(pg_error)?,
        );
        visitor.account(&n, &spki, balance, r.try_get(3).map_err(pg_error)?);
    }
    for_each_row(
        &tx,
        "SELECT seq, name, amount, granted_at_ms FROM grants ORDER BY seq",
        &[],
        |r| {
            visitor.grant(StoredGrant {
                seq: r.try_get(0).map_err(pg_error)?,
                name: r.try_get(1).map_err(pg_error)?,
                amount: r.try_get(2).map_err(pg_error)?,
                granted_at_ms: r.try_get(3).map_err(pg_error)?,
            });
            Ok(())
        },
    )
    .await?;
    scan_key_history(&tx, visitor).await?;
    for_each_row(
        &tx,
        "SELECT seq, id, payer, payee, amount, expires_at, memo, signature, content_hash, settled_at_ms
         FROM payments ORDER BY seq",
        &[],
        |r| {
            visitor.payment(stored_payment(r)?);
            Ok(())
        },
    )
    .await?;
    scan_refusals(&tx, visitor).await?;
    super::channels::scan(&tx, visitor).await?;
    scan_log(&tx, visitor).await?;
    for checkpoint in checkpoints(&tx).await? {
        visitor.checkpoint(checkpoint);
    }
    tx.commit().await.map_err(pg_error)
}

/// Feeds the recorded refusals to the audit.
async fn scan_refusals(
    tx: &tokio_postgres::Transaction<'_>,
    visitor: &mut dyn AuditVisitor,
) -> Result<(), LedgerError> {
    for_each_row(
        tx,
        "SELECT id, payer, payee, content_hash, code, message, decided_at_ms FROM rejections
         ORDER BY decided_at_ms, payer, id",
        &[],
        |r| {
            visitor.refusal(StoredRefusal {
                id: r.try_get(0).map_err(pg_error)?,
                payer: r.try_get(1).map_err(pg_error)?,
                payee: r.try_get(2).map_err(pg_error)?,
                content_hash: r.try_get(3).map_err(pg_error)?,
                code: r.try_get(4).map_err(pg_error)?,
                message: r.try_get(5).map_err(pg_error)?,
                decided_at_ms: r.try_get(6).map_err(pg_error)?,
            });
            Ok(())
        },
    )
    .await
}

/// Runs `f` on every row of `sql`, fetched [`SCAN_PAGE_ROWS`] at a time
/// (a large table never sits in memory at once).
async fn for_each_row(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    mut f: impl FnMut(&Row) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let stmt = tx.prepare(sql).await.map_err(pg_error)?;
    let portal = tx.bind(&stmt, params).await.map_err(pg_error)?;
    loop {
        let rows = tx
            .query_portal(&portal, SCAN_PAGE_ROWS)
            .await
            .map_err(pg_error)?;
        if rows.is_empty() {
            return Ok(());
        }
        for r in &rows {
            f(r)?;
        }
    }
}

/// Feeds every log's leaves to the audit.
async fn scan_log(
    tx: &tokio_postgres::Transaction<'_>,
    visitor: &mut dyn AuditVisitor,
) -> Result<(), LedgerError> {
    for_each_row(
        tx,
        "SELECT origin, leaf_index, record FROM log_leaves ORDER BY origin, leaf_index",
        &[],
        |r| {
            let origin: &str = r.try_get(0).map_err(pg_error)?;
            let record: &[u8] = r.try_get(2).map_err(pg_error)?;
            visitor.log_leaf(origin, r.try_get(1).map_err(pg_error)?, record);
            Ok(())
        },
    )
    .await
}

/// Whether any log has a leaf.
pub(super) async fn has_log(
    client: &impl tokio_postgres::GenericClient,
) -> Result<bool, LedgerError> {
    client
        .query_one("SELECT EXISTS (SELECT 1 FROM log_leaves)", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)
}

/// Feeds the key history to the audit, in decision order.
async fn scan_key_history(
    tx: &tokio_postgres::Transaction<'_>,
    visitor: &mut dyn AuditVisitor,
) -> Result<(), LedgerError> {
    let sql = format!("SELECT {KEY_HISTORY_COLUMNS} FROM key_history ORDER BY hseq");
    for r in tx.query(&sql, &[]).await.map_err(pg_error)? {
        visitor.key_change(stored_key_change(&r)?);
    }
    Ok(())
}

const KEY_HISTORY_COLUMNS: &str = "hseq, name, kind, public_key, not_after_s, serial, proof, old_signature, new_signature, at_ms, after_seq";

fn stored_key_change(r: &Row) -> Result<StoredKeyChange, LedgerError> {
    Ok(StoredKeyChange {
        hseq: r.try_get(0).map_err(pg_error)?,
        name: r.try_get(1).map_err(pg_error)?,
        kind: r.try_get(2).map_err(pg_error)?,
        key_spki: r.try_get(3).map_err(pg_error)?,
        not_after_s: r.try_get(4).map_err(pg_error)?,
        serial: r.try_get(5).map_err(pg_error)?,
        proof: r.try_get(6).map_err(pg_error)?,
        old_signature: r.try_get(7).map_err(pg_error)?,
        new_signature: r.try_get(8).map_err(pg_error)?,
        at_ms: r.try_get(9).map_err(pg_error)?,
        after_seq: r.try_get(10).map_err(pg_error)?,
    })
}

/// Every key `who` had, oldest first.
pub(super) async fn key_history(c: &mut Client, who: &Name) -> Result<Vec<KeyEntry>, LedgerError> {
    let rows = c
        .query(
            &format!("SELECT {KEY_HISTORY_COLUMNS} FROM key_history WHERE name = $1 ORDER BY hseq"),
            &[&who.as_str()],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| stored_key_change(r)?.into_entry())
        .collect()
}

fn stored_payment(r: &Row) -> Result<StoredPayment, LedgerError> {
    Ok(StoredPayment {
        seq: r.try_get(0).map_err(pg_error)?,
        id: r.try_get(1).map_err(pg_error)?,
        payer: r.try_get(2).map_err(pg_error)?,
        payee: r.try_get(3).map_err(pg_error)?,
        amount: r.try_get(4).map_err(pg_error)?,
        expires_at: r.try_get(5).map_err(pg_error)?,
        memo: r.try_get(6).map_err(pg_error)?,
        signature: r.try_get(7).map_err(pg_error)?,
        content_hash: r.try_get(8).map_err(pg_error)?,
        settled_at_ms: r.try_get(9).map_err(pg_error)?,
    })
}

/// Every stored checkpoint, by origin then tree size.
pub(super) async fn checkpoints(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<StoredCheckpoint>, LedgerError> {
    let rows = client
        .query(
            "SELECT origin, tree_size, root, note, created_at_ms FROM checkpoints
             ORDER BY origin, tree_size",
            &[],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            let get = |e: tokio_postgres::Error| pg_error(e);
            Ok(StoredCheckpoint {
                origin: r.try_get(0).map_err(get)?,
                size: to_u64(r.try_get(1).map_err(get)?, "tree_size")?,
                root: hash32(r.try_get::<_, &[u8]>(2).map_err(get)?)?,
                note: r.try_get(3).map_err(get)?,
                at_ms: to_u64(r.try_get(4).map_err(get)?, "created_at_ms")?,
            })
        })
        .collect()
}
