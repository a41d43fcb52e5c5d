//! The PostgreSQL schema: the same tables and meaning as SQLite's, with
//! BIGINT money under CHECK constraints, plus `ledger_meta` (the one row
//! every commit locks) and `presence` (who is online, with leases).
//! Created on start under an advisory lock, so that servers starting
//! together do not race; a newer schema is refused.

use tokio_postgres::Client;

use crate::ledger::LedgerError;

use super::pg_error;

/// The schema version this program writes.
/// Version 3 adds the key history; version 4 the payment channels;
/// version 5 the log's checkpoints; version 6 the log's leaves.
pub const SCHEMA_VERSION: i32 = 6;

/// The log's leaves, added by version 6 (as in SQLite's schema): the
/// record of every change, per log (origin). Each server sharing the
/// database appends to its own log only.
const LOG_LEAVES: &str = "
CREATE TABLE IF NOT EXISTS log_leaves (
    origin     TEXT NOT NULL,
    leaf_index BIGINT NOT NULL CHECK (leaf_index >= 0),
    record     BYTEA NOT NULL,
    PRIMARY KEY (origin, leaf_index)
);
";

/// From version 5: an empty leaves table (the first server to open the
/// ledger logs the rows already stored).
const MIGRATE_5_TO_6: &str = "INSERT INTO micropay_schema (version) VALUES (6);";

/// The log's checkpoints, added by version 5 (as in SQLite's schema).
const CHECKPOINTS: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    origin        TEXT NOT NULL,
    tree_size     BIGINT NOT NULL CHECK (tree_size >= 0),
    root          BYTEA NOT NULL,
    note          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, tree_size)
);
";

/// From version 4: an empty checkpoints table.
const MIGRATE_4_TO_5: &str = "INSERT INTO micropay_schema (version) VALUES (5);";

/// The key history, added by version 3 (as in SQLite's schema).
const KEY_HISTORY: &str = "
CREATE TABLE IF NOT EXISTS key_history (
    hseq          BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL REFERENCES accounts(name),
    kind          TEXT NOT NULL,
    public_key    BYTEA NOT NULL,
    not_after_s   BIGINT NOT NULL,
    serial        BYTEA NOT NULL,
    proof         BYTEA NOT NULL,
    old_signature BYTEA NOT NULL,
    new_signature BYTEA NOT NULL,
    at_ms         BIGINT NOT NULL,
    after_seq     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS key_history_by_name ON key_history(name, hseq);
";

/// From version 2: the history starts with each account's registered key
/// (its serial was not recorded then, so it is empty).
const MIGRATE_2_TO_3: &str = "
INSERT INTO key_history (name, kind, public_key, not_after_s, serial, proof, old_signature, new_signature, at_ms, after_seq)
SELECT name, 'register', public_key, key_not_after_s, '', '', '', '', created_at_ms, 0
FROM accounts ORDER BY created_at_ms, name;
INSERT INTO micropay_schema (version) VALUES (3);
";

/// Held while the schema is checked or created (any fixed number).
const MIGRATION_LOCK: i64 = 0x6d69_6372_6f70_6179; // "micropay"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS micropay_schema (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    name          TEXT PRIMARY KEY,
    public_key    BYTEA NOT NULL,
    balance       BIGINT NOT NULL CHECK (balance >= 0),
    created_at_ms BIGINT NOT NULL,
    key_not_after_s BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS grants (
    seq           BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL REFERENCES accounts(name),
    amount        BIGINT NOT NULL CHECK (amount >= 0),
    granted_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    seq           BIGINT PRIMARY KEY CHECK (seq > 0),
    id            BYTEA NOT NULL,
    payer         TEXT NOT NULL REFERENCES accounts(name),
    payee         TEXT NOT NULL REFERENCES accounts(name),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    expires_at    BIGINT NOT NULL,
    memo          TEXT NOT NULL,
    signature     BYTEA NOT NULL,
    content_hash  BYTEA NOT NULL,
    settled_at_ms BIGINT NOT NULL,
    UNIQUE (payer, id)
);
CREATE INDEX IF NOT EXISTS payments_by_payer ON payments(payer, seq);
CREATE INDEX IF NOT EXISTS payments_by_payee ON payments(payee, seq);
CREATE INDEX IF NOT EXISTS payments_by_id ON payments(id);
CREATE TABLE IF NOT EXISTS rejections (
    id             BYTEA NOT NULL,
    payer          TEXT NOT NULL,
    payee          TEXT NOT NULL,
    content_hash   BYTEA NOT NULL,
    code           TEXT NOT NULL,
    message        TEXT NOT NULL,
    decided_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (payer, id)
);
CREATE INDEX IF NOT EXISTS rejections_by_id ON rejections(id);
CREATE TABLE IF NOT EXISTS ledger_meta (
    one       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last_seq  BIGINT NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO ledger_meta (one, last_seq) VALUES (TRUE, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS presence (
    name       TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    server_id  TEXT NOT NULL,
    conn_id    BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS presence_by_server ON presence(server_id);
";

/// Creates the schema if missing; refuses a newer one.
pub(super) async fn migrate(client: &mut Client, shown: &str) -> Result<(), LedgerError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    if let Some(version) = stored_version(&tx).await? {
        if (2..=5).contains(&version) {
            if version == 2 {
                tx.batch_execute(KEY_HISTORY).await.map_err(pg_error)?;
                tx.batch_execute(MIGRATE_2_TO_3).await.map_err(pg_error)?;
            }
            if version <= 3 {
                migrate_3_to_4(&tx).await?;
            }
            if version <= 4 {
                tx.batch_execute(CHECKPOINTS).await.map_err(pg_error)?;
                tx.batch_execute(MIGRATE_4_TO_5).await.map_err(pg_error)?;
            }
            tx.batch_execute(LOG_LEAVES).await.map_err(pg_error)?;
            tx.batch_execute(MIGRATE_5_TO_6).await.map_err(pg_error)?;
        } else {
            check_version(version, shown)?;
        }
        return tx.commit().await.map_err(pg_error);
    }
    tx.batch_execute(SCHEMA).await.map_err(pg_error)?;
    tx.batch_execute(KEY_HISTORY).await.map_err(pg_error)?;
    tx.batch_execute(super::channels::CHANNELS)
        .await
        .map_err(pg_error)?;
    tx.batch_execute(CHECKPOINTS).await.map_err(pg_error)?;
    tx.batch_execute(LOG_LEAVES).await.map_err(pg_error)?;
    tx.execute(
        "INSERT INTO micropay_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

/// Version 4, payment channels: a new table only (self-contained, so it
/// composes with other migrations).
async fn migrate_3_to_4(tx: &tokio_postgres::Transaction<'_>) -> Result<(), LedgerError> {
    tx.batch_execute(super::channels::CHANNELS)
        .await
        .map_err(pg_error)?;
    tx.execute("INSERT INTO micropay_schema (version) VALUES (4)", &[])
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Checks that the database holds a ledger this program can read.
pub(super) async fn check(client: &Client, shown: &str) -> Result<(), LedgerError> {
    match stored_version(client).await? {
        Some(version) => check_version(version, shown),
        None => Err(LedgerError::Corrupt(format!(
            "{shown} is not a micropay ledger"
        ))),
    }
}

async fn stored_version(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Option<i32>, LedgerError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('micropay_schema') IS NOT NULL", &[])
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT max(version) FROM micropay_schema", &[])
        .await
        .map_err(pg_error)?;
    Ok(row.and_then(|r| r.try_get::<_, Option<i32>>(0).ok().flatten()))
}

fn check_version(version: i32, shown: &str) -> Result<(), LedgerError> {
    if version > SCHEMA_VERSION {
        return Err(LedgerError::Corrupt(format!(
            "{shown} has schema version {version}; this program knows up to {SCHEMA_VERSION}: upgrade micropay"
        )));
    }
    if version < SCHEMA_VERSION {
        return Err(LedgerError::Corrupt(format!(
            "{shown} was written by an older micropay (schema version {version}); start a new ledger"
        )));
    }
    Ok(())
}
