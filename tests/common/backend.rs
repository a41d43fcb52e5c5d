//! The ledger backends a test runs on: SQLite always, PostgreSQL when
//! `MICROPAY_TEST_PG` names a database whose role may create databases
//! (`scripts/with-postgres.sh` sets it up). Each test gets a fresh
//! database of its own, dropped afterwards.

use std::fmt;
use std::path::Path;
use std::sync::Once;

use micropay::ledger::DbLocation;

/// One ledger backend.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An SQLite file in the test's temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server at this admin URL.
    Postgres {
        /// `MICROPAY_TEST_PG`.
        admin_url: String,
    },
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite => f.write_str("SQLite"),
            Backend::Postgres { .. } => f.write_str("PostgreSQL"),
        }
    }
}

static NOT_RUN: Once = Once::new();

/// The backends to run on; says loudly (once) when PostgreSQL is left out.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    match postgres_admin_url() {
        Some(admin_url) => all.push(Backend::Postgres { admin_url }),
        None => NOT_RUN.call_once(|| {
            // Straight to stderr: the test harness captures eprintln!,
            // and this must be seen even when every test passes.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** MICROPAY_TEST_PG is not set: the PostgreSQL tests were NOT run.\n\
                 *** Run them with: scripts/with-postgres.sh cargo test --release\n"
            );
        }),
    }
    all
}

/// `MICROPAY_TEST_PG`, if set.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("MICROPAY_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())
}

impl Backend {
    /// A fresh, empty ledger location: a file in `dir`, or a new
    /// database (dropped when the returned [`TestDb`] is).
    pub async fn fresh_db(&self, dir: &Path) -> (DbLocation, Option<TestDb>) {
        match self {
            Backend::Sqlite => (DbLocation::Sqlite(dir.join("ledger.db")), None),
            Backend::Postgres { admin_url } => {
                let db = TestDb::create(admin_url).await;
                (DbLocation::Postgres(db.url.clone()), Some(db))
            }
        }
    }
}

/// A PostgreSQL database made for one test; dropped on drop.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates `micropay_t_<random>` on the server at `admin_url`.
    pub async fn create(admin_url: &str) -> TestDb {
        let id = micropay::core::payment::PaymentId::random();
        let name = format!("micropay_t_{}", hex::encode(&id.0[..8]));
        admin(admin_url, &format!("CREATE DATABASE {name}")).await;
        TestDb {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run on an async runtime: do the work on a thread of
        // its own with a runtime of its own.
        let (admin_url, sql) = (
            self.admin_url.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(admin(&admin_url, &sql));
        })
        .join();
        if dropped.is_err() {
            eprintln!("dropping test database {} failed", self.name);
        }
    }
}

/// Runs one statement on the admin database.
async fn admin(admin_url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("connects to MICROPAY_TEST_PG");
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
    drop(client);
    let _ = driver.await;
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let query = url[path_start..]
        .find('?')
        .map_or("", |i| &url[path_start + i..]);
    format!("{}/{name}{query}", &url[..path_start])
}
