//! The server's own task that returns expired channels' holds to their
//! payers: every [`CHANNEL_EXPIRY_POLL_MS`] it asks the ledger for open
//! channels past expiry plus grace and submits an expiry for each. The
//! state it works from is the ledger's, so a restart loses nothing: the
//! next pass finds the same channels.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::limits::{CHANNEL_EXPIRY_BATCH_MAX, CHANNEL_EXPIRY_POLL_MS};
use crate::system::clock::now_ms;

/// Runs expiry passes until `shutdown` turns true.
pub(super) async fn run(shared: Arc<super::Shared>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(CHANNEL_EXPIRY_POLL_MS);
    loop {
        match shared
            .cx
            .ledger
            .expire_due(now_ms(), CHANNEL_EXPIRY_BATCH_MAX)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                channels = n,
                "returned expired channels' holds to their payers"
            ),
            Err(e) => tracing::warn!("channel expiry pass failed: {e}; retrying later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
