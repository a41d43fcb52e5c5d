//! Shared helpers for integration tests: in-memory PKIs made by the same
//! code as `micropay-certs`, a real server on 127.0.0.1:0, people and links.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use micropay::certs::{Ca, CertError, CertifiedPem, KeyType, Validity};
use micropay::core::name::Name;
use micropay::ledger::{DbLocation, LedgerConfig};
use micropay::net::link::Link;
use micropay::net::tls::{self, Material};
use micropay::person::Person;
use micropay::server::{self, PresenceOptions, RunningServer, ServerLimits, ServerOptions};

pub mod backend;
#[allow(unused_imports)]
pub use backend::{backends, Backend, TestDb};

/// Runs a test body once per ledger backend ([`backends`]): SQLite
/// always, PostgreSQL when `MICROPAY_TEST_PG` is set. The body sees the
/// backend as `$backend`.
#[macro_export]
macro_rules! backend_test {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for $backend in common::backends() {
                eprintln!("{} on {}", stringify!($name), $backend);
                $body
            }
        }
    };
}

/// What every new account gets (the server's default grant).
pub const GRANT: u64 = micropay::core::limits::INITIAL_BALANCE_DEFAULT;

/// An in-memory PKI for tests: a CA, a server certificate for
/// `localhost`/`127.0.0.1`, and people on demand, all made with the
/// library's certificate API (the code `micropay-certs` runs).
pub struct TestPki {
    /// The CA.
    pub ca: Ca,
    /// The server's certificate and key.
    pub server: CertifiedPem,
}

impl TestPki {
    /// A fresh PKI with Ed25519 keys valid for a day.
    pub fn new() -> Result<TestPki, CertError> {
        let validity = Validity::days_from_now(1);
        let ca = Ca::new("micropay test CA", KeyType::Ed25519, validity)?;
        let server = ca.issue_server(
            &["localhost".to_owned()],
            &[IpAddr::from([127, 0, 0, 1])],
            KeyType::Ed25519,
            validity,
        )?;
        Ok(TestPki { ca, server })
    }

    /// A person's certificate valid for a day.
    pub fn person(&self, name: &str) -> Result<CertifiedPem, CertError> {
        let name = Name::parse(name).map_err(|_| CertError::BadServerName(name.to_owned()))?;
        self.ca
            .issue_person(&name, KeyType::Ed25519, Validity::days_from_now(1))
    }

    /// Writes the CA certificate, the server pair and each person's pair
    /// into `dir` (replacing what is there), as `micropay-certs` would:
    /// certificates mode 0644, keys mode 0600.
    pub fn write_to(&self, dir: &Path, people: &[(&str, &CertifiedPem)]) -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        write_pair(&self.ca.pem, dir, "ca")?;
        write_pair(&self.server, dir, "server")?;
        for (name, pem) in people {
            write_pair(pem, dir, name)?;
        }
        Ok(())
    }
}

impl TestPki {
    /// Writes this PKI and `people` into `dir`, then signs `dir/crl.pem`
    /// revoking the certificates of `revoked` (names among `people`) on
    /// top of what it already lists, with the library call `micropay-certs
    /// --revoke` makes. An empty `revoked` signs a CRL that revokes
    /// nothing new. Returns the CRL's path.
    pub fn revoke(
        &self,
        dir: &Path,
        people: &[(&str, &CertifiedPem)],
        revoked: &[&str],
    ) -> std::path::PathBuf {
        self.write_to(dir, people).expect("write the PKI");
        let report = micropay::certs::revoke(&micropay::certs::RevokeOptions {
            dir: dir.to_owned(),
            people: revoked
                .iter()
                .map(|n| Name::parse(n).expect("valid name"))
                .collect(),
            next_update_days: 1,
        })
        .expect("sign the CRL");
        report.crl
    }

    /// The CA certificate, DER, as a listener's roots.
    pub fn ca_der(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        Material::from_pem(
            &self.ca.pem.cert_pem,
            &self.server.cert_pem,
            &self.server.key_pem,
        )
        .expect("server material")
        .roots
    }
}

/// Writes `dir/STEM.key` (0600, never readable by others, not even for a
/// moment) and `dir/STEM.pem` (0644).
fn write_pair(pem: &CertifiedPem, dir: &Path, stem: &str) -> std::io::Result<()> {
    write_file(&dir.join(format!("{stem}.key")), &pem.key_pem, 0o600)?;
    write_file(&dir.join(format!("{stem}.pem")), &pem.cert_pem, 0o644)
}

fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.exists() {
        fs::remove_file(path)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have narrowed the mode; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(text.as_bytes())
}

/// A server running in this process on a temporary ledger.
pub struct TestServer {
    pub running: RunningServer,
    pub pki: Arc<TestPki>,
    /// The ledger's location.
    pub db: DbLocation,
    /// Holds the temporary directory (and an SQLite ledger in it).
    pub dir: tempfile::TempDir,
    /// A PostgreSQL test database, dropped with the server's handle.
    pub pg: Option<Arc<TestDb>>,
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// `127.0.0.1:PORT` as a string, for `Person::connect_server`.
    pub fn addr_string(&self) -> String {
        self.running.addr.to_string()
    }
}

pub fn pki() -> Arc<TestPki> {
    Arc::new(TestPki::new().expect("test PKI"))
}

pub fn server_options(
    pki: &TestPki,
    db: impl Into<DbLocation>,
    limits: ServerLimits,
) -> ServerOptions {
    let material = Material::from_pem(
        &pki.ca.pem.cert_pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
    )
    .expect("server material");
    ServerOptions {
        tls: tls::server_config(&material).expect("server config"),
        signing_key: material.signing_key().expect("server key"),
        ledger: LedgerConfig {
            location: db.into(),
            initial_balance: GRANT,
        },
        limits,
        presence: PresenceOptions::default(),
        // The budget is its own test's subject (settlement.rs); elsewhere
        // refusals must stay exactly as the rules decide them.
        refusals_per_minute: u32::MAX,
        verify_batch_max: micropay::core::limits::VERIFY_BATCH_MAX_DEFAULT,
        crl: None,
    }
}

/// Starts a server (SQLite) that enforces `crl` at the handshake and at
/// every request.
pub async fn start_server_with_crl(
    pki: Arc<TestPki>,
    crl: Arc<micropay::net::revocation::Crl>,
) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _) = Backend::Sqlite.fresh_db(dir.path()).await;
    let material = Material::from_pem(
        &pki.ca.pem.cert_pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
    )
    .expect("server material");
    let mut options = server_options(&pki, db.clone(), ServerLimits::default());
    options.tls = tls::server_config_with_crl(&material, Some(&crl)).expect("server config");
    options.crl = Some(crl);
    start_server_at(pki, db, dir, None, options).await
}

/// Starts a server with default limits on a fresh temporary ledger.
pub async fn start_server() -> TestServer {
    start_server_with(pki(), ServerLimits::default()).await
}

pub async fn start_server_with(pki: Arc<TestPki>, limits: ServerLimits) -> TestServer {
    start_server_on_with(&Backend::Sqlite, pki, limits).await
}

/// Starts a server with default limits on a fresh ledger of `backend`.
pub async fn start_server_on(backend: &Backend) -> TestServer {
    start_server_on_with(backend, pki(), ServerLimits::default()).await
}

/// Starts a server on a fresh ledger of `backend`.
pub async fn start_server_on_with(
    backend: &Backend,
    pki: Arc<TestPki>,
    limits: ServerLimits,
) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, pg) = match backend.fresh_db(dir.path()).await {
        (db, Some(pg)) => (db, Some(Arc::new(pg))),
        (db, None) => (db, None),
    };
    let options = server_options(&pki, db.clone(), limits);
    start_server_at(pki, db, dir, pg, options).await
}

/// The log a server started with [`server_options`] keeps: for tools
/// that write its ledger directly (as `micropay-server rebind` does).
pub fn server_log(pki: &TestPki) -> micropay::ledger::LogConfig {
    let key = server_options(
        pki,
        DbLocation::Sqlite("unused".into()),
        ServerLimits::default(),
    )
    .signing_key;
    micropay::ledger::LogConfig {
        origin: micropay::server::log_origin(key.verifying_key(), None),
        key: Arc::new(key),
        peers: Vec::new(),
    }
}

/// Starts a server on `db` with `options` (whose ledger must be `db`).
pub async fn start_server_at(
    pki: Arc<TestPki>,
    db: DbLocation,
    dir: tempfile::TempDir,
    pg: Option<Arc<TestDb>>,
    options: ServerOptions,
) -> TestServer {
    let running = server::spawn("127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("server starts");
    TestServer {
        running,
        pki,
        db,
        dir,
        pg,
    }
}

/// Audits the ledger at `db` off the async runtime (the PostgreSQL store
/// blocks on a runtime of its own).
pub async fn audit(db: &DbLocation) -> micropay::ledger::AuditReport {
    let db = db.clone();
    tokio::task::spawn_blocking(move || micropay::ledger::audit_at(&db))
        .await
        .expect("audit task")
        .expect("audit runs")
}

/// A person with a certificate from `pki`'s CA.
pub fn person(pki: &TestPki, name: &str) -> Person {
    let pem = pki.person(name).expect("person certificate");
    person_from(pki, &pem)
}

pub fn person_from(pki: &TestPki, pem: &CertifiedPem) -> Person {
    let material = Material::from_pem(&pki.ca.pem.cert_pem, &pem.cert_pem, &pem.key_pem)
        .expect("person material");
    Person::from_material(material).expect("person")
}

/// Connects `person` to the server.
pub async fn link(person: &Person, server: &TestServer) -> Link {
    person
        .connect_server(&server.addr_string())
        .await
        .expect("connects to the server")
}

/// The caller's balance on `link`.
pub async fn balance(link: &Link) -> u64 {
    link.call::<micropay::wire::Balance>(&micropay::wire::ServerRequest::Balance {})
        .await
        .expect("balance")
        .balance
}

/// What a stopped server leaves: its ledger, the temporary directory
/// holding it, and the PostgreSQL database (dropped with it).
pub type LeftLedger = (DbLocation, tempfile::TempDir, Option<Arc<TestDb>>);

/// Stops the server cleanly, leaving its ledger in place for the caller
/// (to audit, tamper with, or start a server on again).
pub async fn stop_keeping_ledger(server: TestServer) -> LeftLedger {
    let TestServer {
        running,
        db,
        dir,
        pg,
        ..
    } = server;
    running.shutdown().await.expect("clean shutdown");
    (db, dir, pg)
}

/// Runs `sql` on a stopped server's ledger, behind the server's back: how
/// the tests play an attacker with write access to the database.
pub async fn tamper(db: &DbLocation, sql: &str) {
    match db {
        DbLocation::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).expect("open the ledger");
            conn.execute_batch(sql).expect("tamper");
        }
        DbLocation::Postgres(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let task = tokio::spawn(connection);
            client.batch_execute(sql).await.expect("tamper");
            drop(client);
            let _ = task.await;
        }
    }
}

/// Stops the server cleanly and audits its ledger, which must be sound:
/// no violation, balances summing to the grants. Returns the report.
pub async fn shutdown_and_audit(server: TestServer) -> micropay::ledger::AuditReport {
    let (db, dir, pg) = stop_keeping_ledger(server).await;
    let report = audit(&db).await;
    assert!(
        report.violations.is_empty(),
        "audit: {:?}",
        report.violations
    );
    assert_eq!(report.total_balances, report.total_granted);
    assert_eq!(
        report.unlogged_records, 0,
        "a server logs every change it makes"
    );
    drop((dir, pg));
    report
}

/// splitmix64: a small, seedable, good-enough generator for test traffic.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (bias is irrelevant here); `lo..=hi` must not
    /// be the whole u64 range.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A payment from `payer` to `payee` (a valid name), valid for two
/// minutes, signed with the payer's key.
pub fn signed_payment(
    payer: &Person,
    payee: &str,
    amount: u64,
    memo: &str,
) -> micropay::core::payment::SignedPayment {
    micropay::core::payment::Payment {
        id: micropay::core::payment::PaymentId::random(),
        payer: payer.name.clone(),
        payee: micropay::core::name::Name::parse(payee).expect("valid test name"),
        amount_minor: amount,
        expires_at_s: micropay::system::clock::now_s() + 120,
        memo: memo.to_owned(),
    }
    .sign(&payer.key)
}

/// Checks a settle or status reply's receipt for `signed` from the server
/// whose key is `key` as every client does
/// ([`micropay::core::receipt_check`]): by its log proof, or without one
/// by its signature. Returns the receipt and what proved it.
pub fn check_reply(
    key: &micropay::core::keys::VerifyingKey,
    receipt: &micropay::wire::ReceiptJson,
    log: Option<&micropay::wire::LogProofJson>,
    signed: &micropay::core::payment::SignedPayment,
) -> (
    micropay::core::payment::Receipt,
    micropay::core::receipt_check::Evidence,
) {
    use micropay::core::checkpoint::CheckpointCache;
    use micropay::core::receipt_check::check_receipt;
    let parsed = micropay::core::payment::Receipt::try_from(receipt).expect("receipt parses");
    let signature = receipt.signature_bytes().expect("signature decodes");
    let mut cache = CheckpointCache::new(4);
    let evidence = check_receipt(
        &mut cache,
        key,
        signed,
        &parsed,
        signature.as_deref(),
        log.map(|l| l.place()),
    )
    .expect("the receipt is proven");
    (parsed, evidence)
}

/// Like [`check_reply`] with the key of the server `link` reached, and
/// requiring what a server keeping a log sends: a log proof and no
/// receipt signature. Returns the receipt.
pub fn check_proven(
    link: &Link,
    receipt: &micropay::wire::ReceiptJson,
    log: Option<&micropay::wire::LogProofJson>,
    signed: &micropay::core::payment::SignedPayment,
) -> micropay::core::payment::Receipt {
    assert_eq!(
        receipt.signature, None,
        "a reply with a log proof carries no receipt signature"
    );
    assert!(log.is_some(), "a server with a log proves every receipt");
    let key = link.peer_key().expect("server key");
    let (parsed, evidence) = check_reply(&key, receipt, log, signed);
    assert!(
        matches!(evidence, micropay::core::receipt_check::Evidence::Log(_)),
        "{evidence:?}"
    );
    parsed
}
