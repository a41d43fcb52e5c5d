//! The write side: decide a batch with the rules over the cached state
//! and the stored decisions about its payment ids, write the effects in
//! one transaction, commit, and only then update the cache.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::core::batch::{Batch, Effect};
use crate::core::channel_rules::ChannelRecord;
use crate::core::keys::VerifyingKey;
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::core::rules::{LedgerView, Prior, PriorOutcome, Refusal, RefusalKind, RegisteredKey};
use crate::ledger::key_history::KeyRow;
use crate::ledger::{decide_command, Answer, Command, LedgerError, Sealed, Sealer};

use super::read;
use super::schema::db;
use crate::ledger::log::ADOPTED_BY_ANOTHER;

/// The write connection and what it caches: always equal to the
/// committed database.
pub(super) struct Writer {
    conn: Connection,
    initial_balance: u64,
    balances: HashMap<Name, u64>,
    keys: HashMap<Name, RegisteredKey>,
    last_seq: u64,
}

/// The cache plus the stored decisions about one batch's payment ids.
struct BaseView<'a> {
    writer: &'a Writer,
    priors: HashMap<(Name, PaymentId), Prior>,
}

impl LedgerView for BaseView<'_> {
    fn balance_minor(&self, name: &Name) -> Option<u64> {
        self.writer.balances.get(name).copied()
    }

    fn registered_key(&self, name: &Name) -> Option<RegisteredKey> {
        self.writer.keys.get(name).copied()
    }

    fn accounts(&self) -> u64 {
        self.writer.balances.len() as u64
    }

    fn prior(&self, payer: &Name, id: &PaymentId) -> Option<Prior> {
        self.priors.get(&(payer.clone(), *id)).cloned()
    }
}

impl Writer {
    pub(super) fn load(conn: Connection, initial_balance: u64) -> Result<Writer, LedgerError> {
        let balances = read::balances(&conn).map_err(db)??;
        let keys = read::registered_keys(&conn).map_err(db)??;
        let last_seq: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM payments", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        let last_seq = u64::try_from(last_seq)
            .map_err(|_| LedgerError::Corrupt(format!("negative payment seq {last_seq}")))?;
        Ok(Writer {
            conn,
            initial_balance,
            balances,
            keys,
            last_seq,
        })
    }

    pub(super) fn commit(
        &mut self,
        batch: &[Command],
        now_ms: u64,
        sealer: &mut dyn Sealer,
    ) -> Result<Vec<Answer>, LedgerError> {
        let priors = self.priors(batch)?;
        let base = BaseView {
            writer: self,
            priors,
        };
        let mut decided = Batch::new(&base, self.last_seq);
        decided.preload_channels(self.channels(batch)?);
        let answers: Vec<Answer> = batch
            .iter()
            .map(|command| decide_command(&mut decided, command, self.initial_balance, now_ms))
            .collect();
        let (effects, last_seq) = decided.finish();
        let sealed = sealer.seal(&effects, now_ms);
        if let Err(e) = self.write(&effects, sealed.as_ref()) {
            // Nothing of the batch may stay: the cache never saw it.
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        self.apply(&effects, last_seq);
        Ok(answers)
    }

    /// The stored channels the batch's commands name.
    fn channels(&self, batch: &[Command]) -> Result<Vec<ChannelRecord>, LedgerError> {
        let mut out = Vec::new();
        for id in batch.iter().filter_map(Command::channel_id) {
            if let Some(record) = super::channels::channel(&self.conn, &id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The stored decisions about the batch's payment ids.
    fn priors(&self, batch: &[Command]) -> Result<HashMap<(Name, PaymentId), Prior>, LedgerError> {
        let mut priors = HashMap::new();
        for command in batch {
            let Command::Settle(payment) = command else {
                continue;
            };
            let p = &payment.signed().payment;
            if let Some(prior) = self.prior(&p.payer, &p.id)? {
                priors.insert((p.payer.clone(), p.id), prior);
            }
        }
        Ok(priors)
    }

    fn prior(&self, payer: &Name, id: &PaymentId) -> Result<Option<Prior>, LedgerError> {
        let settled = self
            .conn
            .prepare_cached(
                "SELECT content_hash, seq, settled_at_ms FROM payments WHERE payer = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![payer.as_str(), &id.0[..]], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .optional()
            })
            .map_err(db)?;
        if let Some((hash, seq, settled_at_ms)) = settled {
            let outcome = PriorOutcome::Settled {
                seq: read::to_u64(seq, "seq")?,
                settled_at_ms: read::to_u64(settled_at_ms, "settled_at_ms")?,
            };
            return Ok(Some(Prior {
                content_hash: read::hash32(&hash)?,
                outcome,
            }));
        }
        let refused = self
            .conn
            .prepare_cached(
                "SELECT content_hash, code, message FROM rejections WHERE payer = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![payer.as_str(), &id.0[..]], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .optional()
            })
            .map_err(db)?;
        let Some((hash, code, message)) = refused else {
            return Ok(None);
        };
        Ok(Some(Prior {
            content_hash: read::hash32(&hash)?,
            outcome: PriorOutcome::Refused(read::refusal(&code, message)?),
        }))
    }

    /// Writes every effect in one transaction and commits.
    fn write(&self, effects: &[Effect], sealed: Option<&Sealed>) -> Result<(), LedgerError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
        for effect in effects {
            self.write_effect(effect).map_err(db)?;
        }
        if let Some(sealed) = sealed {
            self.write_log(sealed)?;
        }
        self.conn.execute_batch("COMMIT").map_err(db)
    }

    /// The batch's log records and its checkpoint.
    fn write_log(&self, sealed: &Sealed) -> Result<(), LedgerError> {
        if sealed.adopting && read::has_log(&self.conn).map_err(db)? {
            return Err(LedgerError::Database(ADOPTED_BY_ANOTHER.into()));
        }
        self.insert_log(sealed).map_err(db)
    }

    fn insert_log(&self, sealed: &Sealed) -> Result<(), rusqlite::Error> {
        let c = &sealed.checkpoint;
        let mut leaf = self.conn.prepare_cached(
            "INSERT INTO log_leaves (origin, leaf_index, record) VALUES (?1, ?2, ?3)",
        )?;
        for (index, record) in (sealed.first_index..).zip(&sealed.records) {
            leaf.execute(params![c.origin, index as i64, record])?;
        }
        self.conn
            .prepare_cached(
                "INSERT INTO checkpoints (origin, tree_size, root, note, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                c.origin,
                c.size as i64,
                &c.root[..],
                c.note,
                c.at_ms as i64
            ])?;
        Ok(())
    }

    fn write_effect(&self, effect: &Effect) -> Result<(), rusqlite::Error> {
        match effect {
            Effect::Account {
                name,
                key,
                key_not_after_s,
                key_serial,
                grant_minor,
                at_ms,
            } => {
                self.write_account(name, (key, *key_not_after_s), *grant_minor, *at_ms)?;
                let row = KeyRow::register(name, key, *key_not_after_s, key_serial, *at_ms);
                self.write_history(&row)
            }
            Effect::KeyChange {
                change,
                after_seq,
                at_ms,
            } => {
                let row = KeyRow::change(change, *after_seq, *at_ms);
                self.write_history(&row)?;
                self.conn
                    .prepare_cached(
                        "UPDATE accounts SET public_key = ?2, key_not_after_s = ?3 WHERE name = ?1",
                    )?
                    .execute(params![row.name, row.key, row.not_after_s])?;
                Ok(())
            }
            Effect::Payment {
                seq,
                payment,
                transfer,
                at_ms,
            } => {
                let p = &payment.signed().payment;
                // amount <= payer's balance <= total supply < i64::MAX.
                assert!(p.amount_minor <= i64::MAX as u64);
                self.conn
                    .prepare_cached(
                        "INSERT INTO payments (seq, id, payer, payee, amount, expires_at, memo, signature, content_hash, settled_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?
                    .execute(params![
                        *seq as i64,
                        &p.id.0[..],
                        p.payer.as_str(),
                        p.payee.as_str(),
                        p.amount_minor as i64,
                        p.expires_at_s as i64,
                        p.memo,
                        payment.signed().signature,
                        &payment.content_hash()[..],
                        *at_ms as i64
                    ])?;
                let mut update = self
                    .conn
                    .prepare_cached("UPDATE accounts SET balance = ?2 WHERE name = ?1")?;
                update.execute(params![p.payer.as_str(), transfer.payer_after_minor as i64])?;
                update.execute(params![p.payee.as_str(), transfer.payee_after_minor as i64])?;
                Ok(())
            }
            Effect::Refusal {
                payment,
                refusal,
                at_ms,
            } => self.write_refusal(payment.signed(), payment.content_hash(), refusal, *at_ms),
            _ => super::channels::write_effect(&self.conn, effect),
        }
    }

    fn write_account(
        &self,
        name: &Name,
        (key, key_not_after_s): (&VerifyingKey, u64),
        grant_minor: u64,
        at_ms: u64,
    ) -> Result<(), rusqlite::Error> {
        let grant = grant_minor as i64;
        // Certificates end long before i64 seconds run out.
        let not_after = i64::try_from(key_not_after_s).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "INSERT INTO accounts (name, public_key, balance, created_at_ms, key_not_after_s)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                name.as_str(),
                key.spki_der(),
                grant,
                at_ms as i64,
                not_after
            ])?;
        self.conn
            .prepare_cached("INSERT INTO grants (name, amount, granted_at_ms) VALUES (?1, ?2, ?3)")?
            .execute(params![name.as_str(), grant, at_ms as i64])?;
        Ok(())
    }

    fn write_history(&self, row: &KeyRow<'_>) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO key_history (name, kind, public_key, not_after_s, serial, proof, old_signature, new_signature, at_ms, after_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                row.name,
                row.kind,
                row.key,
                row.not_after_s,
                row.serial,
                row.proof,
                row.old_signature,
                row.new_signature,
                row.at_ms,
                row.after_seq
            ])?;
        Ok(())
    }

    fn write_refusal(
        &self,
        signed: &crate::core::payment::SignedPayment,
        content_hash: [u8; 32],
        refusal: &Refusal,
        at_ms: u64,
    ) -> Result<(), rusqlite::Error> {
        let p = &signed.payment;
        debug_assert!(refusal.kind != RefusalKind::Conflict);
        self.conn
            .prepare_cached(
                "INSERT INTO rejections (id, payer, payee, content_hash, code, message, decided_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                &p.id.0[..],
                p.payer.as_str(),
                p.payee.as_str(),
                &content_hash[..],
                refusal.kind.as_str(),
                refusal.message,
                at_ms as i64
            ])?;
        Ok(())
    }

    /// Committed: the cache follows.
    fn apply(&mut self, effects: &[Effect], last_seq: u64) {
        for effect in effects {
            match effect {
                Effect::Account {
                    name,
                    key,
                    key_not_after_s,
                    grant_minor,
                    ..
                } => {
                    self.balances.insert(name.clone(), *grant_minor);
                    self.keys
                        .insert(name.clone(), RegisteredKey::of(key, *key_not_after_s));
                }
                Effect::Payment {
                    payment, transfer, ..
                } => {
                    let p = &payment.signed().payment;
                    self.balances
                        .insert(p.payer.clone(), transfer.payer_after_minor);
                    self.balances
                        .insert(p.payee.clone(), transfer.payee_after_minor);
                }
                Effect::KeyChange { change, .. } => {
                    self.keys
                        .insert(change.name().clone(), change.registered_key());
                }
                Effect::Refusal { .. } => {}
                Effect::ChannelOpen {
                    record,
                    payer_after_minor,
                } => {
                    let payer = record.signed.commitment.payer.clone();
                    self.balances.insert(payer, *payer_after_minor);
                }
                Effect::ChannelClose { payer, payee, .. } => {
                    self.balances.insert(payer.0.clone(), payer.1);
                    self.balances.insert(payee.0.clone(), payee.1);
                }
                Effect::ChannelExpire { payer, .. } => {
                    self.balances.insert(payer.0.clone(), payer.1);
                }
            }
        }
        self.last_seq = last_seq;
    }

    /// Folds the WAL into the main file.
    pub(super) fn checkpoint(&self) -> Result<(), LedgerError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(db)
    }
}
