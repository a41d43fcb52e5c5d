//! Shared helpers for integration tests: in-memory PKIs made by the same
//! code as `micropay-certs`, a real server on 127.0.0.1:0, people and links.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use micropay::certs::{CertifiedPem, TestPki};
use micropay::client::Link;
use micropay::ledger::LedgerConfig;
use micropay::peer::Person;
use micropay::server::{self, RunningServer, ServerLimits, ServerOptions};
use micropay::tls::{self, Material};

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
