//! The `channels` table in SQLite (schema version 5): reading channels for
//! the writer, `balance`/`list` and the expiry task, writing the channel
//! effects, and the audit scan of channels.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::core::batch::Effect;
use crate::core::channel::ChannelId;
use crate::core::channel_rules::{expirable_from_ms, ChannelRecord};
use crate::core::name::Name;
use crate::ledger::channel_rows::{int, StoredChannel, STATE_CLOSED, STATE_EXPIRED, STATE_OPEN};
use crate::ledger::LedgerError;

/// The table, added by schema version 5. `expirable_at_ms` is the first
/// millisecond the hold may return to the payer, indexed for the expiry
/// task.
pub(super) const CHANNELS: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id              BLOB PRIMARY KEY,
    payer           TEXT NOT NULL REFERENCES accounts(name),
    payee           TEXT NOT NULL REFERENCES accounts(name),
    root            BLOB NOT NULL,
    value           INTEGER NOT NULL CHECK (value > 0),
    links           INTEGER NOT NULL CHECK (links > 0),
    expires_at      INTEGER NOT NULL,
    signature       BLOB NOT NULL,
    content_hash    BLOB NOT NULL,
    hold            INTEGER NOT NULL CHECK (hold >= 0),
    opened_at_ms    INTEGER NOT NULL,
    expirable_at_ms INTEGER NOT NULL,
    state           TEXT NOT NULL,
    close_index     INTEGER,
    close_link      BLOB,
    paid            INTEGER,
    released        INTEGER,
    ended_at_ms     INTEGER,
    close_hash      BLOB
) STRICT;
CREATE INDEX IF NOT EXISTS channels_by_payer ON channels(payer, opened_at_ms);
CREATE INDEX IF NOT EXISTS channels_by_payee ON channels(payee, opened_at_ms);
CREATE INDEX IF NOT EXISTS channels_open_by_expiry ON channels(state, expirable_at_ms);
";

pub(super) const COLUMNS: &str =
    "id, payer, payee, root, value, links, expires_at, signature, content_hash, \
hold, opened_at_ms, state, close_index, close_link, paid, released, ended_at_ms, close_hash, \
expirable_at_ms";

pub(super) fn stored(r: &Row<'_>) -> Result<StoredChannel, rusqlite::Error> {
    Ok(StoredChannel {
        id: r.get(0)?,
        payer: r.get(1)?,
        payee: r.get(2)?,
        root: r.get(3)?,
        value: r.get(4)?,
        links: r.get(5)?,
        expires_at: r.get(6)?,
        signature: r.get(7)?,
        content_hash: r.get(8)?,
        hold: r.get(9)?,
        opened_at_ms: r.get(10)?,
        state: r.get(11)?,
        close_index: r.get(12)?,
        close_link: r.get(13)?,
        paid: r.get(14)?,
        released: r.get(15)?,
        ended_at_ms: r.get(16)?,
        close_hash: r.get(17)?,
        expirable_at_ms: Some(r.get(18)?),
    })
}

fn db(e: rusqlite::Error) -> LedgerError {
    LedgerError::Database(e.to_string())
}

/// The channel `id`, if any.
pub(super) fn channel(
    c: &Connection,
    id: &ChannelId,
) -> Result<Option<ChannelRecord>, LedgerError> {
    let row = c
        .prepare_cached(&format!("SELECT {COLUMNS} FROM channels WHERE id = ?1"))
        .and_then(|mut s| s.query_row(params![&id.0[..]], stored).optional())
        .map_err(db)?;
    row.map(|r| r.decode()).transpose()
}

/// `name`'s channels as payer or payee, newest first.
pub(super) fn channels_of(
    c: &Connection,
    name: &Name,
    limit: u32,
) -> Result<Vec<ChannelRecord>, LedgerError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM channels WHERE payer = ?1 OR payee = ?1
             ORDER BY opened_at_ms DESC, id LIMIT ?2"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![name.as_str(), limit], stored)
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(db)?.decode()?);
    }
    Ok(out)
}

/// The sum of `name`'s open holds as payer.
pub(super) fn held(c: &Connection, name: &Name) -> Result<u64, LedgerError> {
    let sum: i64 = c
        .query_row(
            "SELECT COALESCE(SUM(hold), 0) FROM channels WHERE payer = ?1 AND state = ?2",
            params![name.as_str(), STATE_OPEN],
            |r| r.get(0),
        )
        .map_err(db)?;
    u64::try_from(sum).map_err(|_| LedgerError::Corrupt(format!("negative holds {sum}")))
}

/// Open channels past expiry plus grace at `now_ms`.
pub(super) fn expirable(
    c: &Connection,
    now_ms: u64,
    limit: u32,
) -> Result<Vec<ChannelId>, LedgerError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT id FROM channels WHERE state = ?1 AND expirable_at_ms <= ?2
             ORDER BY expirable_at_ms LIMIT ?3",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![STATE_OPEN, int(now_ms), limit], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let bytes = row.map_err(db)?;
        let id: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| LedgerError::Corrupt("channel id of the wrong length".into()))?;
        out.push(ChannelId(id));
    }
    Ok(out)
}

fn set_balance(c: &Connection, (name, minor): &(Name, u64)) -> Result<(), rusqlite::Error> {
    c.prepare_cached("UPDATE accounts SET balance = ?2 WHERE name = ?1")?
        .execute(params![name.as_str(), int(*minor)])?;
    Ok(())
}

fn insert_open(c: &Connection, record: &ChannelRecord) -> Result<(), rusqlite::Error> {
    let s = &record.signed;
    let k = &s.commitment;
    c.prepare_cached(
        "INSERT INTO channels (id, payer, payee, root, value, links, expires_at, signature,
         content_hash, hold, opened_at_ms, expirable_at_ms, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        &k.id.0[..],
        k.payer.as_str(),
        k.payee.as_str(),
        &k.root.0[..],
        int(k.value_minor),
        int(k.links),
        int(k.expires_at_s),
        s.signature,
        &s.content_hash()[..],
        int(record.hold_minor),
        int(record.opened_at_ms),
        int(expirable_from_ms(k)),
        STATE_OPEN
    ])?;
    Ok(())
}

/// Writes one channel effect; other effects are not channel effects and
/// are ignored here.
pub(super) fn write_effect(c: &Connection, effect: &Effect) -> Result<(), rusqlite::Error> {
    match effect {
        Effect::ChannelOpen {
            record,
            payer_after_minor,
        } => {
            insert_open(c, record)?;
            set_balance(
                c,
                &(record.signed.commitment.payer.clone(), *payer_after_minor),
            )
        }
        Effect::ChannelClose {
            id,
            close,
            outcome,
            payer,
            payee,
        } => {
            c.prepare_cached(
                "UPDATE channels SET state = ?2, close_index = ?3, close_link = ?4, paid = ?5,
                 released = ?6, ended_at_ms = ?7, close_hash = ?8 WHERE id = ?1",
            )?
            .execute(params![
                &id.0[..],
                STATE_CLOSED,
                int(outcome.index),
                &close.link.0[..],
                int(outcome.paid_minor),
                int(outcome.released_minor),
                int(outcome.at_ms),
                &outcome.close_hash[..]
            ])?;
            set_balance(c, payer)?;
            set_balance(c, payee)
        }
        Effect::ChannelExpire {
            id,
            released_minor,
            payer,
            at_ms,
        } => {
            c.prepare_cached(
                "UPDATE channels SET state = ?2, released = ?3, ended_at_ms = ?4 WHERE id = ?1",
            )?
            .execute(params![
                &id.0[..],
                STATE_EXPIRED,
                int(*released_minor),
                int(*at_ms)
            ])?;
            set_balance(c, payer)
        }
        _ => Ok(()),
    }
}
