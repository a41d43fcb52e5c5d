//! The `presence` table: who is online, shared by every server on one
//! database. Each row is held by one server (`server_id`) under a lease
//! (`expires_at`, in the database's clock, so servers' clocks do not
//! matter): the server renews its rows every few seconds; rows whose
//! lease ran out are ignored by [`PresenceTable::locate`] and
//! [`PresenceTable::roster`] and deleted by the next renewal of any
//! server. These calls run on the caller's async runtime (the server's),
//! unlike the ledger's blocking ones.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use crate::ledger::location::redact_url;
use crate::ledger::LedgerError;

use super::{connect, pg_config, pg_error, PgConfig};

/// Who is online, in the database, as seen by one server.
pub struct PresenceTable {
    config: PgConfig,
    shown: String,
    server_id: String,
    lease_ms: i64,
    client: Mutex<Option<Arc<Client>>>,
}

impl PresenceTable {
    /// The table in the database at `url` (whose schema the ledger
    /// created), for the server `server_id`, with leases of `lease_ms`.
    pub fn new(url: &str, server_id: &str, lease_ms: u64) -> Result<PresenceTable, LedgerError> {
        Ok(PresenceTable {
            config: pg_config(url)?,
            shown: redact_url(url),
            server_id: server_id.to_owned(),
            lease_ms: i64::try_from(lease_ms).unwrap_or(i64::MAX),
            client: Mutex::new(None),
        })
    }

    /// The shared connection, reconnecting if it was lost.
    async fn client(&self) -> Result<Arc<Client>, LedgerError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(connect(&self.config, &self.shown).await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// `name` is online at `address`, announced by connection `conn_id`
    /// of this server; replaces any earlier row of `name`, and says
    /// whether that row was live and held by another connection (of this
    /// or another server).
    pub async fn announce(
        &self,
        name: &str,
        address: &str,
        conn_id: u64,
    ) -> Result<bool, LedgerError> {
        let conn_id = i64::try_from(conn_id).unwrap_or(i64::MAX);
        // Both parts see the table as it was before the statement, so
        // `earlier` is the row this insert replaces.
        let row = self
            .client()
            .await?
            .query_one(
                "WITH earlier AS (
                   SELECT 1 FROM presence WHERE name = $1 AND expires_at > now()
                     AND NOT (server_id = $3 AND conn_id = $4)
                 ), upsert AS (
                   INSERT INTO presence (name, address, server_id, conn_id, expires_at)
                   VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond')
                   ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address,
                     server_id = EXCLUDED.server_id, conn_id = EXCLUDED.conn_id,
                     expires_at = EXCLUDED.expires_at
                   RETURNING 1
                 )
                 SELECT EXISTS (SELECT 1 FROM earlier), (SELECT count(*) FROM upsert)",
                &[
                    &name,
                    &address,
                    &self.server_id,
                    &conn_id,
                    &(self.lease_ms as f64),
                ],
            )
            .await
            .map_err(pg_error)?;
        row.try_get(0).map_err(pg_error)
    }

    /// Removes `name`'s row if this server's connection `conn_id` holds
    /// it; says whether it did.
    pub async fn withdraw(&self, name: &str, conn_id: u64) -> Result<bool, LedgerError> {
        let conn_id = i64::try_from(conn_id).unwrap_or(i64::MAX);
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM presence WHERE name = $1 AND server_id = $2 AND conn_id = $3",
                &[&name, &self.server_id, &conn_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    /// Where `name` is online, if its lease holds.
    pub async fn locate(&self, name: &str) -> Result<Option<String>, LedgerError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT address FROM presence WHERE name = $1 AND expires_at > now()",
                &[&name],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| r.try_get(0).map_err(pg_error)).transpose()
    }

    /// The first `max` people online by name (name, address), and how
    /// many are online in all.
    pub async fn roster(&self, max: usize) -> Result<(Vec<(String, String)>, u64), LedgerError> {
        let client = self.client().await?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT name, address FROM presence WHERE expires_at > now()
                 ORDER BY name LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(pg_error)?;
        let people = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(pg_error)?,
                    r.try_get(1).map_err(pg_error)?,
                ))
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        let total: i64 = client
            .query_one(
                "SELECT count(*) FROM presence WHERE expires_at > now()",
                &[],
            )
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        Ok((people, u64::try_from(total).unwrap_or(0)))
    }

    /// Extends the lease of every row this server holds, and deletes
    /// every row (of any server) whose lease ran out.
    pub async fn renew(&self) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE presence SET expires_at = now() + $2 * interval '1 millisecond'
                 WHERE server_id = $1",
                &[&self.server_id, &(self.lease_ms as f64)],
            )
            .await
            .map_err(pg_error)?;
        client
            .execute("DELETE FROM presence WHERE expires_at <= now()", &[])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Deletes every row this server holds (on a clean stop).
    pub async fn clear(&self) -> Result<(), LedgerError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM presence WHERE server_id = $1",
                &[&self.server_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}
