//! Writing a migrated ledger into an empty PostgreSQL database, in one
//! transaction that nothing else can write beside (the ledger's tables
//! are locked), committed only when the caller says so.

use tokio_postgres::{Client, Statement};

use crate::core::channel_rules::expirable_from_ms;
use crate::core::limits::MIGRATE_PAYMENT_BATCH_ROWS;
use crate::ledger::channel_rows::{int, StoredChannel};
use crate::ledger::location::redact_url;
use crate::ledger::migrate::{StoredAccount, StoredGrant, StoredRefusal};
use crate::ledger::{LedgerError, StoredCheckpoint, StoredKeyChange, StoredPayment};

use super::{connect, pg_config, pg_error, schema};

/// An open import transaction.
pub(crate) struct PgImport {
    runtime: tokio::runtime::Runtime,
    client: Client,
    account: Statement,
    grant: Statement,
    payment: Statement,
    refusal: Statement,
    key_change: Statement,
    channel: Statement,
    /// Payments not yet written, sent [`MIGRATE_PAYMENT_BATCH_ROWS`] at a
    /// time: one round trip per row would make large ledgers slow.
    pending: Vec<StoredPayment>,
    /// Log leaves not yet written (origin, index, record), sent the same
    /// way.
    pending_leaves: (Vec<String>, Vec<i64>, Vec<Vec<u8>>),
}

const INSERT_ACCOUNT: &str =
    "INSERT INTO accounts (name, public_key, balance, created_at_ms, key_not_after_s)
     VALUES ($1, $2, $3, $4, $5)";
const INSERT_GRANT: &str =
    "INSERT INTO grants (seq, name, amount, granted_at_ms) VALUES ($1, $2, $3, $4)";
const INSERT_PAYMENTS: &str = "INSERT INTO payments (seq, id, payer, payee, amount, expires_at, memo, signature, content_hash, settled_at_ms)
     SELECT * FROM unnest($1::int8[], $2::bytea[], $3::text[], $4::text[], $5::int8[],
                          $6::int8[], $7::text[], $8::bytea[], $9::bytea[], $10::int8[])";
const INSERT_KEY_CHANGE: &str = "INSERT INTO key_history (hseq, name, kind, public_key, not_after_s, serial, proof, old_signature, new_signature, at_ms, after_seq)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const INSERT_CHANNEL: &str = "INSERT INTO channels (id, payer, payee, root, value, links, expires_at, signature, content_hash, hold, opened_at_ms, expirable_at_ms, state, close_index, close_link, paid, released, ended_at_ms, close_hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";
const INSERT_LEAVES: &str = "INSERT INTO log_leaves (origin, leaf_index, record)
     SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[])";
const INSERT_CHECKPOINT: &str =
    "INSERT INTO checkpoints (origin, tree_size, root, note, created_at_ms) VALUES ($1, $2, $3, $4, $5)";
const INSERT_REFUSAL: &str =
    "INSERT INTO rejections (id, payer, payee, content_hash, code, message, decided_at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

impl PgImport {
    /// Connects to `url`, creates or checks the schema, begins the
    /// transaction and locks the ledger's tables against every writer.
    pub(crate) fn begin(url: &str) -> Result<PgImport, LedgerError> {
        let config = pg_config(url)?;
        let shown = redact_url(url);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LedgerError::Database(format!("cannot start a runtime: {e}")))?;
        let (client, statements) = runtime.block_on(async {
            let mut client = connect(&config, &shown).await?;
            schema::migrate(&mut client, &shown).await?;
            client
                .batch_execute(
                    "BEGIN ISOLATION LEVEL SERIALIZABLE;
                     LOCK TABLE accounts, grants, key_history, payments, rejections, channels, log_leaves, checkpoints, ledger_meta IN EXCLUSIVE MODE",
                )
                .await
                .map_err(pg_error)?;
            let mut statements = Vec::new();
            for sql in [INSERT_ACCOUNT, INSERT_GRANT, INSERT_PAYMENTS, INSERT_REFUSAL, INSERT_KEY_CHANGE, INSERT_CHANNEL] {
                statements.push(client.prepare(sql).await.map_err(pg_error)?);
            }
            Ok::<_, LedgerError>((client, statements))
        })?;
        let [account, grant, payment, refusal, key_change, channel] =
            <[Statement; 6]>::try_from(statements)
                .map_err(|_| LedgerError::Database("preparing the import".into()))?;
        Ok(PgImport {
            runtime,
            client,
            account,
            grant,
            payment,
            refusal,
            key_change,
            channel,
            pending: Vec::new(),
            pending_leaves: Default::default(),
        })
    }

    /// Rows already in accounts, grants, payments and rejections.
    pub(crate) fn rows_present(&mut self) -> Result<u64, LedgerError> {
        let row = self
            .runtime
            .block_on(self.client.query_one(
                "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM grants)
                      + (SELECT count(*) FROM payments) + (SELECT count(*) FROM rejections)
                      + (SELECT count(*) FROM channels) + (SELECT count(*) FROM log_leaves)
                      + (SELECT count(*) FROM checkpoints)",
                &[],
            ))
            .map_err(pg_error)?;
        let n: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn execute(
        &mut self,
        which: fn(&PgImport) -> &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), LedgerError> {
        let statement = which(self);
        self.runtime
            .block_on(self.client.execute(statement, params))
            .map(|_| ())
            .map_err(pg_error)
    }

    /// Copies an account.
    pub(crate) fn account(&mut self, r: &StoredAccount) -> Result<(), LedgerError> {
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &r.name,
            &r.public_key,
            &r.balance,
            &r.created_at_ms,
            &r.key_not_after_s,
        ];
        self.execute(|s| &s.account, &p)
    }

    /// Copies a grant, keeping its number.
    pub(crate) fn grant(&mut self, r: &StoredGrant) -> Result<(), LedgerError> {
        self.execute(
            |s| &s.grant,
            &[&r.seq, &r.name, &r.amount, &r.granted_at_ms],
        )
    }

    /// Copies a settled payment, keeping its `seq` (written with the
    /// next batch).
    pub(crate) fn payment(&mut self, r: &StoredPayment) -> Result<(), LedgerError> {
        self.pending.push(r.clone());
        if self.pending.len() >= MIGRATE_PAYMENT_BATCH_ROWS {
            self.flush_payments()?;
        }
        Ok(())
    }

    /// Writes the pending payments in one statement.
    fn flush_payments(&mut self) -> Result<(), LedgerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let col = |f: fn(&StoredPayment) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let bytes = |f: fn(&StoredPayment) -> &[u8]| rows.iter().map(f).collect::<Vec<&[u8]>>();
        let text = |f: fn(&StoredPayment) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let (seq, amount, expires, at) = (
            col(|r| r.seq),
            col(|r| r.amount),
            col(|r| r.expires_at),
            col(|r| r.settled_at_ms),
        );
        let (id, signature, hash) = (
            bytes(|r| &r.id),
            bytes(|r| &r.signature),
            bytes(|r| &r.content_hash),
        );
        let (payer, payee, memo) = (text(|r| &r.payer), text(|r| &r.payee), text(|r| &r.memo));
        self.execute(
            |s| &s.payment,
            &[
                &seq, &id, &payer, &payee, &amount, &expires, &memo, &signature, &hash, &at,
            ],
        )
    }

    /// Copies a key-history row, keeping its number.
    pub(crate) fn key_change(&mut self, r: &StoredKeyChange) -> Result<(), LedgerError> {
        self.execute(
            |s| &s.key_change,
            &[
                &r.hseq,
                &r.name,
                &r.kind,
                &r.key_spki,
                &r.not_after_s,
                &r.serial,
                &r.proof,
                &r.old_signature,
                &r.new_signature,
                &r.at_ms,
                &r.after_seq,
            ],
        )
    }

    /// Copies a recorded refusal.
    pub(crate) fn refusal(&mut self, r: &StoredRefusal) -> Result<(), LedgerError> {
        self.flush_payments()?;
        self.execute(
            |s| &s.refusal,
            &[
                &r.id,
                &r.payer,
                &r.payee,
                &r.content_hash,
                &r.code,
                &r.message,
                &r.decided_at_ms,
            ],
        )
    }

    /// Copies a payment channel row as it is (its expiry instant is
    /// computed again from the commitment's expiry, as the server does).
    pub(crate) fn channel(&mut self, r: &StoredChannel) -> Result<(), LedgerError> {
        self.flush_payments()?;
        let expirable_at_ms = int(expirable_from_ms(&r.signed()?.commitment));
        self.execute(
            |s| &s.channel,
            &[
                &r.id,
                &r.payer,
                &r.payee,
                &r.root,
                &r.value,
                &r.links,
                &r.expires_at,
                &r.signature,
                &r.content_hash,
                &r.hold,
                &r.opened_at_ms,
                &expirable_at_ms,
                &r.state,
                &r.close_index,
                &r.close_link,
                &r.paid,
                &r.released,
                &r.ended_at_ms,
                &r.close_hash,
            ],
        )
    }

    /// Copies a log leaf as it is.
    pub(crate) fn log_leaf(
        &mut self,
        origin: &str,
        index: i64,
        record: &[u8],
    ) -> Result<(), LedgerError> {
        self.flush_payments()?;
        let (origins, indexes, records) = &mut self.pending_leaves;
        origins.push(origin.to_owned());
        indexes.push(index);
        records.push(record.to_vec());
        if records.len() >= MIGRATE_PAYMENT_BATCH_ROWS {
            self.flush_leaves()?;
        }
        Ok(())
    }

    fn flush_leaves(&mut self) -> Result<(), LedgerError> {
        if self.pending_leaves.0.is_empty() {
            return Ok(());
        }
        let (origins, indexes, records) = std::mem::take(&mut self.pending_leaves);
        self.runtime
            .block_on(
                self.client
                    .execute(INSERT_LEAVES, &[&origins, &indexes, &records]),
            )
            .map(|_| ())
            .map_err(pg_error)
    }

    /// Copies a checkpoint as it is.
    pub(crate) fn checkpoint(&mut self, c: &StoredCheckpoint) -> Result<(), LedgerError> {
        self.flush_leaves()?;
        let size = int(c.size);
        let at_ms = int(c.at_ms);
        self.runtime
            .block_on(self.client.execute(
                INSERT_CHECKPOINT,
                &[&c.origin, &size, &&c.root[..], &c.note, &at_ms],
            ))
            .map(|_| ())
            .map_err(pg_error)
    }

    /// Sets the ledger's last payment seq and the grants' sequence (so
    /// the next server continues both), and commits.
    pub(crate) fn commit(mut self, last_seq: i64) -> Result<(), LedgerError> {
        self.flush_payments()?;
        self.flush_leaves()?;
        let client = &mut self.client;
        self.runtime.block_on(async {
            client
                .execute(
                    "UPDATE ledger_meta SET last_seq = $1 WHERE one",
                    &[&last_seq],
                )
                .await
                .map_err(pg_error)?;
            client
                .execute(
                    "SELECT setval(pg_get_serial_sequence('grants', 'seq'),
                                   COALESCE((SELECT max(seq) FROM grants), 0) + 1, false)",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            client
                .execute(
                    "SELECT setval(pg_get_serial_sequence('key_history', 'hseq'),
                                   COALESCE((SELECT max(hseq) FROM key_history), 0) + 1, false)",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            client.batch_execute("COMMIT").await.map_err(pg_error)
        })
    }
}
