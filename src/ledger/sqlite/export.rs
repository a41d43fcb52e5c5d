//! Reading every row of a ledger for a migration, in one read transaction,
//! under the same exclusive lock a server holds.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use crate::ledger::migrate::{RowSink, StoredAccount, StoredGrant, StoredRefusal};
use crate::ledger::LedgerError;

use super::channels::{stored as stored_channel, COLUMNS as CHANNEL_COLUMNS};
use super::read::{
    stored_key_change, stored_payment, KEY_HISTORY_COLUMNS, STORED_PAYMENTS_IN_ORDER,
};
use super::schema::open_read;
use super::{lock_exclusive, SqliteStore};

type Read<T> = Result<Result<T, LedgerError>, rusqlite::Error>;

impl SqliteStore {
    /// Opens an existing ledger to export it, holding the lock a server
    /// holds, so that no server writes it meanwhile (and a running one
    /// makes this fail with [`LedgerError::InUse`]).
    pub fn open_for_export(path: &Path) -> Result<SqliteStore, LedgerError> {
        let conn = open_read(path)?;
        let lock = lock_exclusive(path)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: None,
            readers: Mutex::new(vec![conn]),
            _lock: Some(lock),
        })
    }

    /// Sends every stored row to `sink` (accounts, grants, the key history,
    /// payments in `seq` order, refusals, payment channels, the logs'
    /// leaves), all read in one transaction.
    pub fn export(&self, sink: &mut dyn RowSink) -> Result<(), LedgerError> {
        export_in_snapshot(self, sink)
    }
}

/// Sends every row to `sink` from one read transaction (one snapshot, even
/// while a server writes the ledger).
pub(super) fn export_in_snapshot(
    store: &SqliteStore,
    sink: &mut dyn RowSink,
) -> Result<(), LedgerError> {
    store.with_reader(|c| {
        let tx = c.unchecked_transaction()?;
        let result = export_all(&tx, sink)?;
        tx.finish()?;
        Ok(result)
    })?
}

/// Runs `sink` on each row of `sql`, made by `row`; stops at the first
/// error of either kind.
fn each<T>(
    c: &Connection,
    sql: &str,
    row: impl Fn(&rusqlite::Row<'_>) -> Result<T, rusqlite::Error>,
    mut sink: impl FnMut(T) -> Result<(), LedgerError>,
) -> Read<()> {
    let mut stmt = c.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Err(e) = sink(row(r)?) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

fn export_all(c: &Connection, sink: &mut dyn RowSink) -> Read<()> {
    let accounts = each(
        c,
        "SELECT name, public_key, balance, created_at_ms, key_not_after_s FROM accounts ORDER BY name",
        |r| {
            Ok(StoredAccount {
                name: r.get(0)?,
                public_key: r.get(1)?,
                balance: r.get(2)?,
                created_at_ms: r.get(3)?,
                key_not_after_s: r.get(4)?,
            })
        },
        |row| sink.account(row),
    )?;
    if accounts.is_err() {
        return Ok(accounts);
    }
    let grants = each(
        c,
        "SELECT seq, name, amount, granted_at_ms FROM grants ORDER BY seq",
        |r| {
            Ok(StoredGrant {
                seq: r.get(0)?,
                name: r.get(1)?,
                amount: r.get(2)?,
                granted_at_ms: r.get(3)?,
            })
        },
        |row| sink.grant(row),
    )?;
    if grants.is_err() {
        return Ok(grants);
    }
    let keys = export_key_history(c, sink)?;
    if keys.is_err() {
        return Ok(keys);
    }
    let payments = each(c, STORED_PAYMENTS_IN_ORDER, stored_payment, |row| {
        sink.payment(row)
    })?;
    if payments.is_err() {
        return Ok(payments);
    }
    let refusals = export_refusals(c, sink)?;
    if refusals.is_err() {
        return Ok(refusals);
    }
    let channels = each(
        c,
        &format!("SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY opened_at_ms, id"),
        stored_channel,
        |row| sink.channel(row),
    )?;
    if channels.is_err() {
        return Ok(channels);
    }
    each(
        c,
        "SELECT origin, leaf_index, record FROM log_leaves ORDER BY origin, leaf_index",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        |(origin, index, record): (String, i64, Vec<u8>)| sink.log_leaf(&origin, index, record),
    )
}

fn export_refusals(c: &Connection, sink: &mut dyn RowSink) -> Read<()> {
    each(
        c,
        "SELECT id, payer, payee, content_hash, code, message, decided_at_ms FROM rejections
         ORDER BY decided_at_ms, payer, id",
        |r| {
            Ok(StoredRefusal {
                id: r.get(0)?,
                payer: r.get(1)?,
                payee: r.get(2)?,
                content_hash: r.get(3)?,
                code: r.get(4)?,
                message: r.get(5)?,
                decided_at_ms: r.get(6)?,
            })
        },
        |row| sink.refusal(row),
    )
}

fn export_key_history(c: &Connection, sink: &mut dyn RowSink) -> Read<()> {
    each(
        c,
        &format!("SELECT {KEY_HISTORY_COLUMNS} FROM key_history ORDER BY hseq"),
        stored_key_change,
        |row| sink.key_change(row),
    )
}
