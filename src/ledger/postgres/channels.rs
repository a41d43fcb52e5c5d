//! The `channels` table in PostgreSQL (schema version 4 there): reading
//! channels for the writer, `balance`/`list` and the expiry task, writing
//! the channel effects inside the batch's transaction, and the audit scan.

use tokio_postgres::{GenericClient, Row};

use crate::core::batch::Effect;
use crate::core::channel::ChannelId;
use crate::core::channel_rules::{expirable_from_ms, ChannelRecord};
use crate::core::name::Name;
use crate::ledger::channel_rows::{int, StoredChannel, STATE_CLOSED, STATE_EXPIRED, STATE_OPEN};
use crate::ledger::{AuditVisitor, LedgerError};

use super::pg_error;

/// The table, added by schema version 4 (see the SQLite twin for the
/// meaning of each column).
pub(super) const CHANNELS: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id              BYTEA PRIMARY KEY,
    payer           TEXT NOT NULL REFERENCES accounts(name),
    payee           TEXT NOT NULL REFERENCES accounts(name),
    root            BYTEA NOT NULL,
    value           BIGINT NOT NULL CHECK (value > 0),
    links           BIGINT NOT NULL CHECK (links > 0),
    expires_at      BIGINT NOT NULL,
    signature       BYTEA NOT NULL,
    content_hash    BYTEA NOT NULL,
    hold            BIGINT NOT NULL CHECK (hold >= 0),
    opened_at_ms    BIGINT NOT NULL,
    expirable_at_ms BIGINT NOT NULL,
    state           TEXT NOT NULL,
    close_index     BIGINT,
    close_link      BYTEA,
    paid            BIGINT,
    released        BIGINT,
    ended_at_ms     BIGINT,
    close_hash      BYTEA
);
CREATE INDEX IF NOT EXISTS channels_by_payer ON channels(payer, opened_at_ms);
CREATE INDEX IF NOT EXISTS channels_by_payee ON channels(payee, opened_at_ms);
CREATE INDEX IF NOT EXISTS channels_open_by_expiry ON channels(state, expirable_at_ms);
";

const COLUMNS: &str = "id, payer, payee, root, value, links, expires_at, signature, content_hash, \
hold, opened_at_ms, state, close_index, close_link, paid, released, ended_at_ms, close_hash, \
expirable_at_ms";

fn stored(r: &Row) -> Result<StoredChannel, LedgerError> {
    let g = |e| pg_error(e);
    Ok(StoredChannel {
        id: r.try_get(0).map_err(g)?,
        payer: r.try_get(1).map_err(g)?,
        payee: r.try_get(2).map_err(g)?,
        root: r.try_get(3).map_err(g)?,
        value: r.try_get(4).map_err(g)?,
        links: r.try_get(5).map_err(g)?,
        expires_at: r.try_get(6).map_err(g)?,
        signature: r.try_get(7).map_err(g)?,
        content_hash: r.try_get(8).map_err(g)?,
        hold: r.try_get(9).map_err(g)?,
        opened_at_ms: r.try_get(10).map_err(g)?,
        state: r.try_get(11).map_err(g)?,
        close_index: r.try_get(12).map_err(g)?,
        close_link: r.try_get(13).map_err(g)?,
        paid: r.try_get(14).map_err(g)?,
        released: r.try_get(15).map_err(g)?,
        ended_at_ms: r.try_get(16).map_err(g)?,
        close_hash: r.try_get(17).map_err(g)?,
        expirable_at_ms: Some(r.try_get(18).map_err(g)?),
    })
}

/// The channel `id`, if any.
pub(super) async fn channel(
    c: &impl GenericClient,
    id: &ChannelId,
) -> Result<Option<ChannelRecord>, LedgerError> {
    let sql = format!("SELECT {COLUMNS} FROM channels WHERE id = $1");
    let row = c.query_opt(&sql, &[&&id.0[..]]).await.map_err(pg_error)?;
    row.map(|r| stored(&r)?.decode()).transpose()
}

/// `name`'s channels as payer or payee, newest first.
pub(super) async fn channels_of(
    c: &impl GenericClient,
    name: &Name,
    limit: u32,
) -> Result<Vec<ChannelRecord>, LedgerError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM channels WHERE payer = $1 OR payee = $1
         ORDER BY opened_at_ms DESC, id LIMIT $2"
    );
    let rows = c
        .query(&sql, &[&name.as_str(), &i64::from(limit)])
        .await
        .map_err(pg_error)?;
    rows.iter().map(|r| stored(r)?.decode()).collect()
}

/// The sum of `name`'s open holds as payer.
pub(super) async fn held(c: &impl GenericClient, name: &Name) -> Result<u64, LedgerError> {
    let sum: i64 = c
        .query_one(
            "SELECT COALESCE(SUM(hold), 0)::int8 FROM channels WHERE payer = $1 AND state = $2",
            &[&name.as_str(), &STATE_OPEN],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    u64::try_from(sum).map_err(|_| LedgerError::Corrupt(format!("negative holds {sum}")))
}

/// Open channels past expiry plus grace at `now_ms`.
pub(super) async fn expirable(
    c: &impl GenericClient,
    now_ms: u64,
    limit: u32,
) -> Result<Vec<ChannelId>, LedgerError> {
    let rows = c
        .query(
            "SELECT id FROM channels WHERE state = $1 AND expirable_at_ms <= $2
             ORDER BY expirable_at_ms LIMIT $3",
            &[&STATE_OPEN, &int(now_ms), &i64::from(limit)],
        )
        .await
        .map_err(pg_error)?;
    let mut out = Vec::new();
    for r in rows {
        let bytes: &[u8] = r.try_get(0).map_err(pg_error)?;
        let id: [u8; 16] = bytes
            .try_into()
            .map_err(|_| LedgerError::Corrupt("channel id of the wrong length".into()))?;
        out.push(ChannelId(id));
    }
    Ok(out)
}

/// Feeds every channel row to `visitor`.
pub(super) async fn scan(
    c: &impl GenericClient,
    visitor: &mut dyn AuditVisitor,
) -> Result<(), LedgerError> {
    let sql = format!("SELECT {COLUMNS} FROM channels ORDER BY opened_at_ms, id");
    for r in c.query(&sql, &[]).await.map_err(pg_error)? {
        visitor.channel(stored(&r)?);
    }
    Ok(())
}

/// Writes the channel rows of a batch's effects, in order. The balances
/// they leave are written with the payments' (see `Columns` in
/// `write.rs`), each account's last one winning.
pub(super) async fn write_effects(
    c: &impl GenericClient,
    effects: &[Effect],
) -> Result<(), tokio_postgres::Error> {
    for effect in effects {
        write_effect(c, effect).await?;
    }
    Ok(())
}

async fn write_effect(
    c: &impl GenericClient,
    effect: &Effect,
) -> Result<(), tokio_postgres::Error> {
    match effect {
        Effect::ChannelOpen { record, .. } => {
            let s = &record.signed;
            let k = &s.commitment;
            c.execute(
                "INSERT INTO channels (id, payer, payee, root, value, links, expires_at, signature,
                 content_hash, hold, opened_at_ms, expirable_at_ms, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &&k.id.0[..],
                    &k.payer.as_str(),
                    &k.payee.as_str(),
                    &&k.root.0[..],
                    &int(k.value_minor),
                    &int(k.links),
                    &int(k.expires_at_s),
                    &s.signature,
                    &&s.content_hash()[..],
                    &int(record.hold_minor),
                    &int(record.opened_at_ms),
                    &int(expirable_from_ms(k)),
                    &STATE_OPEN,
                ],
            )
            .await?;
        }
        Effect::ChannelClose {
            id, close, outcome, ..
        } => {
            c.execute(
                "UPDATE channels SET state = $2, close_index = $3, close_link = $4, paid = $5,
                 released = $6, ended_at_ms = $7, close_hash = $8 WHERE id = $1",
                &[
                    &&id.0[..],
                    &STATE_CLOSED,
                    &int(outcome.index),
                    &&close.link.0[..],
                    &int(outcome.paid_minor),
                    &int(outcome.released_minor),
                    &int(outcome.at_ms),
                    &&outcome.close_hash[..],
                ],
            )
            .await?;
        }
        Effect::ChannelExpire {
            id,
            released_minor,
            at_ms,
            ..
        } => {
            c.execute(
                "UPDATE channels SET state = $2, released = $3, ended_at_ms = $4 WHERE id = $1",
                &[
                    &&id.0[..],
                    &STATE_EXPIRED,
                    &int(*released_minor),
                    &int(*at_ms),
                ],
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}
