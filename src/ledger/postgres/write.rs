//! The write side on PostgreSQL: one transaction per batch.
//!
//! 1. `SELECT last_seq FROM ledger_meta … FOR UPDATE`: the one row every
//!    batch of every server locks first, so batches are decided one at a
//!    time across servers, each on the state the previous one committed
//!    (READ COMMITTED gives each later statement a fresh snapshot), and
//!    payment sequence numbers stay gap-free;
//! 2. read the balances and key fingerprints of the accounts the batch
//!    names and the earlier decisions about its (payer, id) pairs;
//! 3. decide the batch with [`Batch`] over that base view, exactly as the
//!    SQLite writer does ([`decide_command`]);
//! 4. write the effects with set-based inserts (`unnest`), update the
//!    balances and `last_seq`, and COMMIT; only then are the answers
//!    returned.
//!
//! A serialization failure, a deadlock or a connection lost before COMMIT
//! is retried (on a new connection if needed) up to
//! [`PG_COMMIT_ATTEMPTS`] times. A connection lost *during* COMMIT is not:
//! whether the batch committed is unknown, so the batch is answered with
//! an error and a client that asks again by payment id gets the recorded
//! outcome.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::{Client, Transaction};

use crate::core::batch::{Batch, Effect};
use crate::core::channel_rules::ChannelRecord;
use crate::core::limits::{LOG_INSERT_CHUNK_RECORDS, PG_COMMIT_ATTEMPTS};
use crate::core::name::Name;
use crate::core::payment::{content_hash, PaymentId};
use crate::core::rules::{LedgerView, Prior, PriorOutcome, RegisteredKey};
use crate::ledger::decode::{hash32, name, payment_id, refusal, to_u64};
use crate::ledger::key_history::KeyRow;
use crate::ledger::log::ADOPTED_BY_ANOTHER;
use crate::ledger::{decide_command, Answer, Command, LedgerError, Sealed, Sealer};

use super::{connect, pg_error, retriable, PgStore};

/// What the batch reads, as of the moment `ledger_meta` was locked.
#[derive(Default)]
struct BaseView {
    balances: HashMap<Name, u64>,
    keys: HashMap<Name, RegisteredKey>,
    accounts: u64,
    priors: HashMap<(Name, PaymentId), Prior>,
    channels: Vec<ChannelRecord>,
}

impl LedgerView for BaseView {
    fn balance_minor(&self, name: &Name) -> Option<u64> {
        self.balances.get(name).copied()
    }

    fn registered_key(&self, name: &Name) -> Option<RegisteredKey> {
        self.keys.get(name).copied()
    }

    fn accounts(&self) -> u64 {
        self.accounts
    }

    fn prior(&self, payer: &Name, id: &PaymentId) -> Option<Prior> {
        self.priors.get(&(payer.clone(), *id)).cloned()
    }
}

/// Why one attempt failed.
enum Failure {
    /// The database failed; `at_commit` says whether COMMIT itself did.
    Pg {
        error: tokio_postgres::Error,
        at_commit: bool,
    },
    /// Something no retry can fix (e.g. a corrupt stored value).
    Ledger(LedgerError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Failure {
        Failure::Pg {
            error,
            at_commit: false,
        }
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        Failure::Ledger(e)
    }
}

/// Decides and commits `batch`, retrying transient failures.
pub(super) async fn commit(
    store: &PgStore,
    writer: &mut Option<Client>,
    batch: &[Command],
    now_ms: u64,
    sealer: &mut dyn Sealer,
) -> Result<Vec<Answer>, LedgerError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last_try = attempt >= PG_COMMIT_ATTEMPTS;
        let client = match writer {
            Some(client) if !client.is_closed() => client,
            _ => match connect(&store.config, &store.shown).await {
                Ok(client) => writer.insert(client),
                Err(e) if !last_try => {
                    tracing::warn!("ledger commit, attempt {attempt}: {e}; retrying");
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let attempted = attempt_once(client, batch, now_ms, store.initial_balance, sealer).await;
        if attempted.is_err() {
            // A retry decides the batch afresh: forget what was sealed.
            sealer.settle(false);
        }
        let error = match attempted {
            Ok(answers) => return Ok(answers),
            Err(Failure::Ledger(e)) => return Err(e),
            Err(Failure::Pg { error, at_commit }) => {
                let lost = error.is_closed() || client.is_closed();
                if at_commit && lost {
                    *writer = None;
                    return Err(LedgerError::Unavailable(format!(
                        "the connection was lost during COMMIT; the outcome is unknown: {error}"
                    )));
                }
                if !retriable(&error) || last_try {
                    return Err(pg_error(error));
                }
                error
            }
        };
        tracing::warn!("ledger commit, attempt {attempt}: {error}; retrying");
        if writer.as_ref().is_some_and(Client::is_closed) {
            *writer = None;
        }
        backoff(attempt).await;
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
}

/// One transaction: lock, read, decide, write, COMMIT.
async fn attempt_once(
    client: &mut Client,
    batch: &[Command],
    now_ms: u64,
    initial_balance: u64,
    sealer: &mut dyn Sealer,
) -> Result<Vec<Answer>, Failure> {
    let tx = client.transaction().await?;
    let last_seq: i64 = tx
        .query_one("SELECT last_seq FROM ledger_meta WHERE one FOR UPDATE", &[])
        .await?
        .try_get(0)?;
    if let Some(origin) = sealer.origin() {
        // Under the ledger_meta lock every writer takes: the log's size
        // as stored, which tells the sealer whether a commit whose
        // outcome was unknown happened.
        let row = tx
            .query_one(
                "SELECT l.size, c.root
                 FROM (SELECT COALESCE(max(leaf_index) + 1, 0) AS size
                       FROM log_leaves WHERE origin = $1) l
                 LEFT JOIN checkpoints c ON c.origin = $1 AND c.tree_size = l.size",
                &[&origin],
            )
            .await?;
        let root: Option<&[u8]> = row.try_get(1)?;
        let root = root.map(hash32).transpose()?;
        sealer.resync(to_u64(row.try_get(0)?, "log size")?, root)?;
    }
    let base = load_base(&tx, batch).await?;
    let mut decided = Batch::new(&base, to_u64(last_seq, "last_seq")?);
    decided.preload_channels(base.channels.iter().cloned());
    let answers: Vec<Answer> = batch
        .iter()
        .map(|command| decide_command(&mut decided, command, initial_balance, now_ms))
        .collect();
    let (effects, last_seq) = decided.finish();
    write_effects(&tx, &effects).await?;
    if let Some(sealed) = sealer.seal(&effects, now_ms) {
        write_log(&tx, &sealed).await?;
    }
    let last_seq = i64::try_from(last_seq)
        .map_err(|_| LedgerError::Corrupt(format!("payment seq {last_seq} out of range")))?;
    tx.execute(
        "UPDATE ledger_meta SET last_seq = $1 WHERE one",
        &[&last_seq],
    )
    .await?;
    tx.commit().await.map_err(|error| Failure::Pg {
        error,
        at_commit: true,
    })?;
    Ok(answers)
}

/// Reads the accounts the batch names and the earlier decisions about
/// its payment ids.
async fn load_base(tx: &Transaction<'_>, batch: &[Command]) -> Result<BaseView, Failure> {
    let mut names: Vec<&str> = Vec::new();
    let (mut payers, mut ids): (Vec<&str>, Vec<&[u8]>) = (Vec::new(), Vec::new());
    let mut registers = false;
    for command in batch {
        match command {
            Command::Register { name, .. } => {
                registers = true;
                names.push(name.as_str());
            }
            Command::ChangeKey(change) => names.push(change.name().as_str()),
            Command::ChannelOpen(v) => {
                let c = v.commitment();
                names.extend([c.payer.as_str(), c.payee.as_str()]);
            }
            Command::ChannelClose { .. } | Command::ChannelExpire(_) => {}
            Command::Settle(payment) => {
                let p = &payment.signed().payment;
                names.extend([p.payer.as_str(), p.payee.as_str()]);
                payers.push(p.payer.as_str());
                ids.push(&p.id.0[..]);
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    let mut base = BaseView::default();
    load_accounts(tx, &names, &mut base).await?;
    if registers {
        let count: i64 = tx
            .query_one("SELECT count(*) FROM accounts", &[])
            .await?
            .try_get(0)?;
        base.accounts = to_u64(count, "account count")?;
    }
    if !payers.is_empty() {
        load_priors(tx, &payers, &ids, &mut base).await?;
    }
    load_channels(tx, batch, &mut base).await?;
    Ok(base)
}

/// The channels the batch names, and the balances of their payers and
/// payees (a close or an expiry moves money to them).
async fn load_channels(
    tx: &Transaction<'_>,
    batch: &[Command],
    base: &mut BaseView,
) -> Result<(), Failure> {
    let mut names: Vec<String> = Vec::new();
    for id in batch.iter().filter_map(Command::channel_id) {
        if let Some(record) = super::channels::channel(tx, &id).await? {
            let c = &record.signed.commitment;
            names.extend([c.payer.as_str().to_owned(), c.payee.as_str().to_owned()]);
            base.channels.push(record);
        }
    }
    names.retain(|n| !base.balances.keys().any(|k| k.as_str() == n));
    if !names.is_empty() {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        load_accounts(tx, &names, base).await?;
    }
    Ok(())
}

async fn load_accounts(
    tx: &Transaction<'_>,
    names: &[&str],
    base: &mut BaseView,
) -> Result<(), Failure> {
    let rows = tx
        .query(
            "SELECT name, public_key, balance, key_not_after_s FROM accounts WHERE name = ANY($1)",
            &[&names],
        )
        .await?;
    for r in rows {
        let n = name(r.try_get(0)?)?;
        let spki: &[u8] = r.try_get(1)?;
        let balance = to_u64(r.try_get(2)?, "balance")?;
        let registered = RegisteredKey {
            fingerprint: content_hash(spki),
            not_after_s: to_u64(r.try_get(3)?, "key_not_after_s")?,
        };
        base.keys.insert(n.clone(), registered);
        base.balances.insert(n, balance);
    }
    Ok(())
}

async fn load_priors(
    tx: &Transaction<'_>,
    payers: &[&str],
    ids: &[&[u8]],
    base: &mut BaseView,
) -> Result<(), Failure> {
    let settled = tx
        .query(
            "SELECT p.payer, p.id, p.content_hash, p.seq, p.settled_at_ms
             FROM payments p JOIN unnest($1::text[], $2::bytea[]) AS k(payer, id)
               ON p.payer = k.payer AND p.id = k.id",
            &[&payers, &ids],
        )
        .await?;
    for r in settled {
        let outcome = PriorOutcome::Settled {
            seq: to_u64(r.try_get(3)?, "seq")?,
            settled_at_ms: to_u64(r.try_get(4)?, "settled_at_ms")?,
        };
        insert_prior(base, r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, outcome)?;
    }
    let refused = tx
        .query(
            "SELECT r.payer, r.id, r.content_hash, r.code, r.message
             FROM rejections r JOIN unnest($1::text[], $2::bytea[]) AS k(payer, id)
               ON r.payer = k.payer AND r.id = k.id",
            &[&payers, &ids],
        )
        .await?;
    for r in refused {
        let outcome = PriorOutcome::Refused(refusal(r.try_get(3)?, r.try_get(4)?)?);
        insert_prior(base, r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, outcome)?;
    }
    Ok(())
}

fn insert_prior(
    base: &mut BaseView,
    payer: &str,
    id: &[u8],
    hash: &[u8],
    outcome: PriorOutcome,
) -> Result<(), LedgerError> {
    let prior = Prior {
        content_hash: hash32(hash)?,
        outcome,
    };
    base.priors.insert((name(payer)?, payment_id(id)?), prior);
    Ok(())
}

/// The batch's effects as columns, one vector per column.
#[derive(Default)]
struct Columns<'a> {
    acct_name: Vec<&'a str>,
    acct_key: Vec<&'a [u8]>,
    acct_grant: Vec<i64>,
    acct_at: Vec<i64>,
    acct_not_after: Vec<i64>,
    pay_seq: Vec<i64>,
    pay_id: Vec<&'a [u8]>,
    pay_payer: Vec<&'a str>,
    pay_payee: Vec<&'a str>,
    pay_amount: Vec<i64>,
    pay_expires: Vec<i64>,
    pay_memo: Vec<&'a str>,
    pay_signature: Vec<&'a [u8]>,
    pay_hash: Vec<Vec<u8>>,
    pay_at: Vec<i64>,
    rej_id: Vec<&'a [u8]>,
    rej_payer: Vec<&'a str>,
    rej_payee: Vec<&'a str>,
    rej_hash: Vec<Vec<u8>>,
    rej_code: Vec<&'static str>,
    rej_message: Vec<&'a str>,
    rej_at: Vec<i64>,
    /// Key-history rows, in decision order.
    history: Vec<KeyRow<'a>>,
    /// Each changed account's key and notAfter after the batch.
    keys: HashMap<&'a str, (&'a [u8], i64)>,
    /// Each paying or paid account's balance after the batch.
    balances: HashMap<&'a str, i64>,
}

/// A value the rules bounded below `i64::MAX` (the total supply is).
fn big(v: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("{what} {v} out of range")))
}

impl<'a> Columns<'a> {
    fn of(effects: &'a [Effect]) -> Result<Columns<'a>, LedgerError> {
        let mut c = Columns::default();
        for effect in effects {
            match effect {
                Effect::Account {
                    name,
                    key,
                    key_not_after_s,
                    key_serial,
                    grant_minor,
                    at_ms,
                } => {
                    c.history.push(KeyRow::register(
                        name,
                        key,
                        *key_not_after_s,
                        key_serial,
                        *at_ms,
                    ));
                    c.acct_name.push(name.as_str());
                    c.acct_key.push(key.spki_der());
                    c.acct_grant.push(big(*grant_minor, "grant")?);
                    c.acct_at.push(big(*at_ms, "time")?);
                    // Certificates end long before i64 seconds run out.
                    c.acct_not_after
                        .push(i64::try_from(*key_not_after_s).unwrap_or(i64::MAX));
                }
                Effect::Payment {
                    seq,
                    payment,
                    transfer,
                    at_ms,
                } => c.payment(*seq, payment, transfer, *at_ms)?,
                Effect::KeyChange {
                    change,
                    after_seq,
                    at_ms,
                } => {
                    let row = KeyRow::change(change, *after_seq, *at_ms);
                    c.keys.insert(row.name, (row.key, row.not_after_s));
                    c.history.push(row);
                }
                Effect::Refusal {
                    payment,
                    refusal,
                    at_ms,
                } => {
                    let p = &payment.signed().payment;
                    c.rej_id.push(&p.id.0[..]);
                    c.rej_payer.push(p.payer.as_str());
                    c.rej_payee.push(p.payee.as_str());
                    c.rej_hash.push(payment.content_hash().to_vec());
                    c.rej_code.push(refusal.kind.as_str());
                    c.rej_message.push(&refusal.message);
                    c.rej_at.push(big(*at_ms, "time")?);
                }
                Effect::ChannelOpen { .. }
                | Effect::ChannelClose { .. }
                | Effect::ChannelExpire { .. } => c.channel_balances(effect)?,
            }
        }
        Ok(c)
    }

    /// The balances a channel effect leaves (a later effect on the same
    /// account overrides an earlier one).
    fn channel_balances(&mut self, effect: &'a Effect) -> Result<(), LedgerError> {
        let moved: Vec<(&'a Name, u64)> = match effect {
            Effect::ChannelOpen {
                record,
                payer_after_minor,
            } => vec![(&record.signed.commitment.payer, *payer_after_minor)],
            Effect::ChannelClose { payer, payee, .. } => {
                vec![(&payer.0, payer.1), (&payee.0, payee.1)]
            }
            Effect::ChannelExpire { payer, .. } => vec![(&payer.0, payer.1)],
            _ => Vec::new(),
        };
        for (name, minor) in moved {
            self.balances.insert(name.as_str(), big(minor, "balance")?);
        }
        Ok(())
    }

    fn payment(
        &mut self,
        seq: u64,
        payment: &'a crate::core::rules::VerifiedPayment,
        transfer: &crate::core::rules::Transfer,
        at_ms: u64,
    ) -> Result<(), LedgerError> {
        let signed = payment.signed();
        let p = &signed.payment;
        self.pay_seq.push(big(seq, "seq")?);
        self.pay_id.push(&p.id.0[..]);
        self.pay_payer.push(p.payer.as_str());
        self.pay_payee.push(p.payee.as_str());
        self.pay_amount.push(big(p.amount_minor, "amount")?);
        self.pay_expires.push(big(p.expires_at_s, "expiry")?);
        self.pay_memo.push(&p.memo);
        self.pay_signature.push(&signed.signature);
        self.pay_hash.push(payment.content_hash().to_vec());
        self.pay_at.push(big(at_ms, "time")?);
        let payer_after = big(transfer.payer_after_minor, "balance")?;
        let payee_after = big(transfer.payee_after_minor, "balance")?;
        self.balances.insert(p.payer.as_str(), payer_after);
        self.balances.insert(p.payee.as_str(), payee_after);
        Ok(())
    }
}

/// One byte column of the key-history rows.
fn col<'a>(rows: &[KeyRow<'a>], f: impl Fn(&KeyRow<'a>) -> &'a [u8]) -> Vec<&'a [u8]> {
    rows.iter().map(f).collect()
}

/// Writes the key-history rows and the accounts' new keys.
async fn write_key_history(tx: &Transaction<'_>, c: &Columns<'_>) -> Result<(), Failure> {
    if c.history.is_empty() {
        return Ok(());
    }
    let h = &c.history;
    let names: Vec<&str> = h.iter().map(|r| r.name).collect();
    let kinds: Vec<&str> = h.iter().map(|r| r.kind).collect();
    let not_after: Vec<i64> = h.iter().map(|r| r.not_after_s).collect();
    let at: Vec<i64> = h.iter().map(|r| r.at_ms).collect();
    let after: Vec<i64> = h.iter().map(|r| r.after_seq).collect();
    let (keys, serials, proofs) = (col(h, |r| r.key), col(h, |r| r.serial), col(h, |r| r.proof));
    let (old_sigs, new_sigs) = (col(h, |r| r.old_signature), col(h, |r| r.new_signature));
    // WITH ORDINALITY keeps the decision order in hseq.
    tx.execute(
        "INSERT INTO key_history (name, kind, public_key, not_after_s, serial, proof, old_signature, new_signature, at_ms, after_seq)
         SELECT name, kind, pk, na, se, pr, os, ns, at, af FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[],
             $5::bytea[], $6::bytea[], $7::bytea[], $8::bytea[], $9::int8[], $10::int8[])
             WITH ORDINALITY AS u(name, kind, pk, na, se, pr, os, ns, at, af, ord) ORDER BY ord",
        &[
            &names, &kinds, &keys, &not_after, &serials, &proofs, &old_sigs, &new_sigs, &at, &after,
        ],
    )
    .await?;
    if !c.keys.is_empty() {
        let names: Vec<&str> = c.keys.keys().copied().collect();
        let keys: Vec<&[u8]> = names.iter().map(|n| c.keys[n].0).collect();
        let not_after: Vec<i64> = names.iter().map(|n| c.keys[n].1).collect();
        tx.execute(
            "UPDATE accounts a SET public_key = u.pk, key_not_after_s = u.na
             FROM unnest($1::text[], $2::bytea[], $3::int8[]) AS u(name, pk, na) WHERE a.name = u.name",
            &[&names, &keys, &not_after],
        )
        .await?;
    }
    Ok(())
}

/// Writes every effect: new accounts and their grants, payments,
/// refusals, then the balances after the batch.
async fn write_effects(tx: &Transaction<'_>, effects: &[Effect]) -> Result<(), Failure> {
    let c = Columns::of(effects)?;
    if !c.acct_name.is_empty() {
        tx.execute(
            "INSERT INTO accounts (name, public_key, balance, created_at_ms, key_not_after_s)
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[], $4::int8[], $5::int8[])",
            &[
                &c.acct_name,
                &c.acct_key,
                &c.acct_grant,
                &c.acct_at,
                &c.acct_not_after,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO grants (name, amount, granted_at_ms)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[])",
            &[&c.acct_name, &c.acct_grant, &c.acct_at],
        )
        .await?;
    }
    if !c.pay_seq.is_empty() {
        tx.execute(
            "INSERT INTO payments (seq, id, payer, payee, amount, expires_at, memo, signature, content_hash, settled_at_ms)
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::text[], $4::text[], $5::int8[],
                                  $6::int8[], $7::text[], $8::bytea[], $9::bytea[], $10::int8[])",
            &[
                &c.pay_seq, &c.pay_id, &c.pay_payer, &c.pay_payee, &c.pay_amount,
                &c.pay_expires, &c.pay_memo, &c.pay_signature, &c.pay_hash, &c.pay_at,
            ],
        )
        .await?;
    }
    // Channels before balances: a channel row references its accounts,
    // and the balances below include what the channel effects left.
    super::channels::write_effects(tx, effects).await?;
    if !c.balances.is_empty() {
        let (names, balances): (Vec<&str>, Vec<i64>) =
            c.balances.iter().map(|(n, b)| (*n, *b)).unzip();
        tx.execute(
            "UPDATE accounts a SET balance = u.balance
             FROM unnest($1::text[], $2::int8[]) AS u(name, balance) WHERE a.name = u.name",
            &[&names, &balances],
        )
        .await?;
    }
    write_key_history(tx, &c).await?;
    if !c.rej_id.is_empty() {
        tx.execute(
            "INSERT INTO rejections (id, payer, payee, content_hash, code, message, decided_at_ms)
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::int8[])",
            &[
                &c.rej_id, &c.rej_payer, &c.rej_payee, &c.rej_hash, &c.rej_code, &c.rej_message,
                &c.rej_at,
            ],
        )
        .await?;
    }
    Ok(())
}

/// A leaf this server's log expected to be free is taken: another server
/// appends to the same log, which would fork it. Nothing of the batch is
/// applied, and every later batch fails the same way until the operator
/// gives each server its own log.
fn log_conflict(error: tokio_postgres::Error, origin: &str) -> Failure {
    let taken = error
        .as_db_error()
        .is_some_and(|d| d.constraint() == Some("log_leaves_pkey"));
    if taken {
        Failure::Ledger(LedgerError::Database(format!(
            "another server appends to the log {origin}: servers that share a database and a \
             key need their own --log-name (or --server-id)"
        )))
    } else {
        Failure::from(error)
    }
}

/// Stores the batch's log records and checkpoint in the batch's
/// transaction.
async fn write_log(tx: &Transaction<'_>, sealed: &Sealed) -> Result<(), Failure> {
    let c = &sealed.checkpoint;
    if sealed.adopting && super::read::has_log(tx).await? {
        return Err(LedgerError::Database(ADOPTED_BY_ANOTHER.into()).into());
    }
    // In chunks: one array per statement stays far below PostgreSQL's
    // limits even when a whole ledger is adopted at once.
    for (n, chunk) in sealed.records.chunks(LOG_INSERT_CHUNK_RECORDS).enumerate() {
        let first = sealed
            .first_index
            .checked_add((n * LOG_INSERT_CHUNK_RECORDS) as u64)
            .and_then(|i| i64::try_from(i).ok())
            .ok_or_else(|| LedgerError::Corrupt("leaf index out of range".into()))?;
        tx.execute(
            "INSERT INTO log_leaves (origin, leaf_index, record)
             SELECT $1, $2 + ord - 1, record FROM unnest($3::bytea[]) WITH ORDINALITY AS u(record, ord)",
            &[&c.origin, &first, &chunk],
        )
        .await
        .map_err(|e| log_conflict(e, &c.origin))?;
    }
    let size = i64::try_from(c.size)
        .map_err(|_| LedgerError::Corrupt(format!("tree size {} out of range", c.size)))?;
    let at_ms = i64::try_from(c.at_ms).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO checkpoints (origin, tree_size, root, note, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[&c.origin, &size, &&c.root[..], &c.note, &at_ms],
    )
    .await?;
    Ok(())
}
