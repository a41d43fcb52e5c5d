//! The ledger of a bench run: a fresh SQLite file in the run's directory,
//! or a fresh PostgreSQL database made for the run on the server that
//! `--db` names and dropped afterwards, so that the audit at the end sees
//! exactly the payments of this run.

use std::path::Path;

use micropay::core::payment::PaymentId;
use micropay::ledger::postgres::{connect, pg_config};
use micropay::ledger::DbLocation;

use crate::error::{setup, BenchError};

/// The ledger a run settles into.
pub struct BenchDb {
    /// Where the servers find it.
    pub location: DbLocation,
    /// The database made for the run, dropped on drop (PostgreSQL only).
    made: Option<MadeDatabase>,
}

/// A PostgreSQL database made for one run.
struct MadeDatabase {
    /// The URL `--db` gave, used to drop the database afterwards.
    admin_url: String,
    name: String,
}

impl BenchDb {
    /// `ledger.db` in `dir` when `requested` is `None` or an SQLite path
    /// (the path is ignored: a run always starts on an empty file), or a
    /// new database `micropay_bench_<random>` on the PostgreSQL server of
    /// `requested`, whose role must be allowed to create databases.
    pub fn create(dir: &Path, requested: Option<&DbLocation>) -> Result<BenchDb, BenchError> {
        let Some(DbLocation::Postgres(admin_url)) = requested else {
            return Ok(BenchDb {
                location: DbLocation::Sqlite(dir.join("ledger.db")),
                made: None,
            });
        };
        let id = PaymentId::random();
        let name = format!("micropay_bench_{}", hex::encode(&id.0[..6]));
        run_admin(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(BenchDb {
            location: DbLocation::Postgres(with_database(admin_url, &name)),
            made: Some(MadeDatabase {
                admin_url: admin_url.clone(),
                name,
            }),
        })
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Some(made) = &self.made {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", made.name);
            if let Err(e) = run_admin(&made.admin_url, &sql) {
                eprintln!("micropay-bench: could not drop {}: {e}", made.name);
            }
        }
    }
}

/// `url` naming the database `name` instead: a `dbname` parameter, which
/// PostgreSQL's URL syntax applies after (so over) the path.
fn with_database(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}dbname={name}")
}

/// Runs one statement on the database `url` names, on a runtime of its own
/// (this runs before and after the bench's own runtime).
fn run_admin(url: &str, sql: &str) -> Result<(), BenchError> {
    let shown = micropay::ledger::location::redact_url(url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(setup("starting a runtime"))?;
    runtime.block_on(async {
        let config = pg_config(url).map_err(setup("the --db URL"))?;
        let client = connect(&config, &shown)
            .await
            .map_err(setup("connecting to PostgreSQL"))?;
        client
            .batch_execute(sql)
            .await
            .map_err(setup(&format!("{sql} on {shown}")))
    })
}
