//! Shared helpers for integration tests: in-memory PKIs made by the same
//! code as `micropay-certs`, a real server on 127.0.0.1:0, people and links.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use micropay::certs::{CertifiedPem, TestPki};
use micropay::ledger::LedgerConfig;
use micropay::net::link::Link;
use micropay::net::tls::{self, Material};
use micropay::person::Person;
use micropay::server::{self, RunningServer, ServerLimits, ServerOptions};

/// A server running in this process on a temporary ledger.
pub struct TestServer {
    pub running: RunningServer,
    pub pki: Arc<TestPki>,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
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

pub fn server_options(pki: &TestPki, db: PathBuf, limits: ServerLimits) -> ServerOptions {
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
            path: db,
            initial_balance: 10_000,
        },
        limits,
    }
}

/// Starts a server with default limits on a fresh temporary ledger.
pub async fn start_server() -> TestServer {
    start_server_with(pki(), ServerLimits::default()).await
}

pub async fn start_server_with(pki: Arc<TestPki>, limits: ServerLimits) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("ledger.db");
    let running = server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        server_options(&pki, db.clone(), limits),
    )
    .await
    .expect("server starts");
    TestServer {
        running,
        pki,
        db,
        dir,
    }
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

/// Stops the server cleanly and audits its ledger, which must be sound:
/// no violation, balances summing to the grants. Returns the report.
pub async fn shutdown_and_audit(server: TestServer) -> micropay::ledger::AuditReport {
    let TestServer {
        running, db, dir, ..
    } = server;
    running.shutdown().await.expect("clean shutdown");
    let report = micropay::ledger::audit(&db).expect("audit runs");
    assert!(
        report.violations.is_empty(),
        "audit: {:?}",
        report.violations
    );
    assert_eq!(report.total_balances, report.total_granted);
    drop(dir);
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
