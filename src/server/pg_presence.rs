//! [`PgPresence`]: presence shared by every server on one PostgreSQL
//! database, with leases. A background task renews this server's rows
//! every third of the lease; if the server dies, its people disappear
//! from everyone's view once the lease runs out. A clean stop deletes
//! this server's rows at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::core::name::Name;
use crate::ledger::postgres::presence::PresenceTable;
use crate::ledger::LedgerError;
use crate::server::presence::{Presence, PresenceError, PresenceFuture, Present, Roster};

/// Presence in a PostgreSQL database, held by this server under leases.
pub struct PgPresence {
    table: Arc<PresenceTable>,
    renewer: Mutex<Option<JoinHandle<()>>>,
}

fn unavailable(e: LedgerError) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

impl PgPresence {
    /// Presence in the database at `url` for the server `server_id`, with
    /// leases of `lease_ms`; starts renewing on the current runtime.
    pub fn start(url: &str, server_id: &str, lease_ms: u64) -> Result<PgPresence, PresenceError> {
        let table = Arc::new(PresenceTable::new(url, server_id, lease_ms).map_err(unavailable)?);
        let renewing = table.clone();
        let every = Duration::from_millis((lease_ms / 3).max(1));
        let renewer = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = renewing.renew().await {
                    tracing::warn!("renewing presence leases failed: {e}");
                }
            }
        });
        Ok(PgPresence {
            table,
            renewer: Mutex::new(Some(renewer)),
        })
    }

    /// Deletes the rows held under this server's id before it serves:
    /// a server restarted after a crash with the same `--server-id` must
    /// not renew the leases of its predecessor's people, whose
    /// connections died with it.
    pub async fn forget_predecessor(&self) -> Result<(), PresenceError> {
        self.table.clear().await.map_err(unavailable)
    }

    fn stop_renewing(&self) {
        let renewer = self
            .renewer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(renewer) = renewer {
            renewer.abort();
        }
    }
}

impl Drop for PgPresence {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

impl Presence for PgPresence {
    fn announce(&self, name: &Name, address: &str, conn_id: u64) -> PresenceFuture<'_, bool> {
        let (name, address) = (name.clone(), address.to_owned());
        Box::pin(async move {
            self.table
                .announce(name.as_str(), &address, conn_id)
                .await
                .map_err(unavailable)
        })
    }

    fn withdraw(&self, name: &Name, conn_id: u64) -> PresenceFuture<'_, bool> {
        let name = name.clone();
        Box::pin(async move {
            self.table
                .withdraw(name.as_str(), conn_id)
                .await
                .map_err(unavailable)
        })
    }

    fn locate(&self, name: &Name) -> PresenceFuture<'_, Option<String>> {
        let name = name.clone();
        Box::pin(async move { self.table.locate(name.as_str()).await.map_err(unavailable) })
    }

    fn roster(&self, max: usize) -> PresenceFuture<'_, Roster> {
        Box::pin(async move {
            let (rows, total) = self.table.roster(max).await.map_err(unavailable)?;
            let mut people = Vec::with_capacity(rows.len());
            for (name, address) in rows {
                // A row another program wrote with a bad name is skipped.
                if let Ok(name) = Name::parse(&name) {
                    people.push(Present { name, address });
                }
            }
            let total = usize::try_from(total).unwrap_or(usize::MAX);
            Ok(Roster { people, total })
        })
    }

    fn close(&self) -> PresenceFuture<'_, ()> {
        self.stop_renewing();
        Box::pin(async move { self.table.clear().await.map_err(unavailable) })
    }
}
