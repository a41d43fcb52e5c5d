//! The SQLite schema and opening connections with the right settings.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::core::limits::{
    LEDGER_BUSY_TIMEOUT_MS, LEDGER_FILE_MODE, SQLITE_WAL_CHECKPOINT_PAGES, SQLITE_WRITER_CACHE_KIB,
};
use crate::ledger::LedgerError;

/// The schema version this program writes (`PRAGMA user_version`).
/// Version 2 scopes payment ids to their payer; version 3 records the
/// notAfter of the certificate behind each registered key; version 4 adds
/// the key history (every key an account had, with its proof); version 5
/// adds the payment channels (`channels`, see `channels.rs`); version 6
/// adds the log's signed checkpoints; version 7 adds the log's leaves
/// (every change of state is a record; see `ledger::log_records`).
pub const SCHEMA_VERSION: i64 = 7;

/// The log's leaves, added by version 7: the record of every change, per
/// log (origin), written with its batch. Created empty by the migration
/// from an older version; the first server to open the ledger then logs
/// the rows already stored (`Log::load`).
const LOG_LEAVES: &str = "
CREATE TABLE IF NOT EXISTS log_leaves (
    origin     TEXT NOT NULL,
    leaf_index INTEGER NOT NULL CHECK (leaf_index >= 0),
    record     BLOB NOT NULL,
    PRIMARY KEY (origin, leaf_index)
) STRICT, WITHOUT ROWID;
";

/// The log's checkpoints, added by version 6: one signed tree head per
/// commit batch that settled payments (docs/PROTOCOL.md, "The log").
/// Created empty by the migration from an older version: a ledger's first
/// checkpoint then covers every payment settled before it.
const CHECKPOINTS: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    origin        TEXT NOT NULL,
    tree_size     INTEGER NOT NULL CHECK (tree_size >= 0),
    root          BLOB NOT NULL,
    note          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (origin, tree_size)
) STRICT;
";

/// The key history, added by version 4: one row per key an account ever
/// had, in the order the writer decided them.
const KEY_HISTORY: &str = "
CREATE TABLE IF NOT EXISTS key_history (
    hseq          INTEGER PRIMARY KEY,
    name          TEXT NOT NULL REFERENCES accounts(name),
    kind          TEXT NOT NULL,
    public_key    BLOB NOT NULL,
    not_after_s   INTEGER NOT NULL,
    serial        BLOB NOT NULL,
    proof         BLOB NOT NULL,
    old_signature BLOB NOT NULL,
    new_signature BLOB NOT NULL,
    at_ms         INTEGER NOT NULL,
    after_seq     INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS key_history_by_name ON key_history(name, hseq);
";

/// From version 3: the history starts with each account's registered key
/// (its serial was not recorded then, so it is empty).
const MIGRATE_3_TO_4: &str = "
INSERT INTO key_history (name, kind, public_key, not_after_s, serial, proof, old_signature, new_signature, at_ms, after_seq)
SELECT name, 'register', public_key, key_not_after_s, X'', X'', X'', X'', created_at_ms, 0
FROM accounts ORDER BY created_at_ms, name;
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    name          TEXT PRIMARY KEY,
    public_key    BLOB NOT NULL,
    balance       INTEGER NOT NULL CHECK (balance >= 0),
    created_at_ms INTEGER NOT NULL,
    key_not_after_s INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS grants (
    seq           INTEGER PRIMARY KEY,
    name          TEXT NOT NULL REFERENCES accounts(name),
    amount        INTEGER NOT NULL CHECK (amount >= 0),
    granted_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS payments (
    seq           INTEGER PRIMARY KEY,
    id            BLOB NOT NULL,
    payer         TEXT NOT NULL REFERENCES accounts(name),
    payee         TEXT NOT NULL REFERENCES accounts(name),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    expires_at    INTEGER NOT NULL,
    memo          TEXT NOT NULL,
    signature     BLOB NOT NULL,
    content_hash  BLOB NOT NULL,
    settled_at_ms INTEGER NOT NULL,
    UNIQUE (payer, id)
) STRICT;
CREATE INDEX IF NOT EXISTS payments_by_payer ON payments(payer, seq);
CREATE INDEX IF NOT EXISTS payments_by_payee ON payments(payee, seq);
CREATE INDEX IF NOT EXISTS payments_by_id ON payments(id);
CREATE TABLE IF NOT EXISTS rejections (
    id             BLOB NOT NULL,
    payer          TEXT NOT NULL,
    payee          TEXT NOT NULL,
    content_hash   BLOB NOT NULL,
    code           TEXT NOT NULL,
    message        TEXT NOT NULL,
    decided_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (payer, id)
) STRICT;
CREATE INDEX IF NOT EXISTS rejections_by_id ON rejections(id);
";

pub(super) fn db(e: rusqlite::Error) -> LedgerError {
    LedgerError::Database(e.to_string())
}

/// Creates the file (owner-only: it holds every payment and memo) when
/// missing, then opens the write connection and creates or checks the
/// schema.
pub(super) fn open_write(path: &Path) -> Result<Connection, LedgerError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LEDGER_FILE_MODE)
        .open(path)
        .map_err(|e| LedgerError::Database(format!("cannot open {}: {e}", path.display())))?;
    let conn = Connection::open(path).map_err(db)?;
    // WAL lets readers run beside the writer; FULL makes every commit
    // durable before it returns, which is what an acknowledgement promises.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
    // The writer's working set (the hot index pages) stays in memory, and
    // the WAL is folded into the main file every 64 MiB rather than every
    // 4 MiB: both cut the pages written per settlement several-fold.
    conn.pragma_update(None, "cache_size", -SQLITE_WRITER_CACHE_KIB)
        .map_err(db)?;
    conn.pragma_update(None, "wal_autocheckpoint", SQLITE_WAL_CHECKPOINT_PAGES)
        .map_err(db)?;
    busy_timeout(&conn)?;
    migrate(&conn, path)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::Corrupt(format!(
            "{} has schema version {version}; this program knows up to {SCHEMA_VERSION}: upgrade micropay",
            path.display()
        )));
    }
    let existing = tables(conn)? > 0;
    if version < 3 && existing {
        return Err(LedgerError::Corrupt(format!(
            "{} was written by an older micropay (schema version {version}); start a new ledger",
            path.display()
        )));
    }
    // One transaction: a crash mid-migration leaves version 3 intact.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
    let migrated = (|| {
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(KEY_HISTORY)?;
        conn.execute_batch(CHECKPOINTS)?;
        conn.execute_batch(LOG_LEAVES)?;
        if version == 3 && existing {
            conn.execute_batch(MIGRATE_3_TO_4)?;
        }
        // Version 5, payment channels: a new table only, so every older
        // ledger gains it empty.
        conn.execute_batch(super::channels::CHANNELS)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        conn.execute_batch("COMMIT")
    })();
    if let Err(e) = migrated {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(db(e));
    }
    Ok(())
}

fn tables(conn: &Connection) -> Result<i64, LedgerError> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name IN ('accounts','grants','payments','rejections')",
        [],
        |r| r.get(0),
    )
    .map_err(db)
}

fn busy_timeout(conn: &Connection) -> Result<(), LedgerError> {
    conn.busy_timeout(std::time::Duration::from_millis(LEDGER_BUSY_TIMEOUT_MS))
        .map_err(db)
}

/// A read-only connection to an existing ledger.
pub(super) fn open_read(path: &Path) -> Result<Connection, LedgerError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| LedgerError::Database(format!("cannot open {}: {e}", path.display())))?;
    busy_timeout(&conn)?;
    // A missing schema means this is not a ledger at all.
    if tables(&conn)? != 4 {
        return Err(LedgerError::Corrupt(format!(
            "{} is not a micropay ledger",
            path.display()
        )));
    }
    Ok(conn)
}
