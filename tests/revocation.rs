//! Certificate revocation (issue 15): a CRL signed by the CA, enforced at
//! the handshake and at every request by the server and by a payee's
//! peer listener, reloaded without a restart, and made by
//! `micropay-certs --revoke`.
//!
//! Library tests reload the CRL explicitly (their listeners poll it only
//! hourly), so what they see does not depend on timing; the binary tests
//! poll for a change within a bounded wait.

mod cli_support;
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cli_support::{make_certs, run, start_server, WAIT};
use common::*;
use micropay::certs::CertifiedPem;
use micropay::core::name::Name;
use micropay::core::payment::{Payment, PaymentId, SignedPayment};
use micropay::net::link::{CallError, Link};
use micropay::net::revocation::{Crl, CrlError};
use micropay::person::{self, Person, Reconnect, ServeEvent, ServeOptions};
use micropay::system::clock::now_s;
use micropay::wire::{Balance, ErrorCode, PaymentJson, PeerRequest, ServerRequest, Settled};
use tokio::sync::{mpsc, oneshot};

/// The longest a single step may take.
const STEP: Duration = Duration::from_secs(20);

/// A listener's poll interval that never fires during a test: reloads
/// are explicit.
const POLL_NEVER_MS: u64 = 3_600_000;

/// A PKI with alice and bob, a CRL (initially revoking nothing) in a
/// directory, and a server enforcing it.
struct Setup {
    pki: Arc<TestPki>,
    dir: tempfile::TempDir,
    alice: CertifiedPem,
    bob: CertifiedPem,
    crl: Arc<Crl>,
    server: TestServer,
}

impl Setup {
    async fn start() -> Setup {
        let pki = pki();
        let alice = pki.person("alice").expect("alice");
        let bob = pki.person("bob").expect("bob");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = pki.revoke(dir.path(), &[("alice", &alice), ("bob", &bob)], &[]);
        let crl = Crl::load(&path, &pki.ca_der(), POLL_NEVER_MS).expect("the CRL loads");
        let server = start_server_with_crl(pki.clone(), crl.clone()).await;
        Setup {
            pki,
            dir,
            alice,
            bob,
            crl,
            server,
        }
    }

    /// Revokes `names` in the CRL file (without reloading anything).
    fn revoke_in_file(&self, names: &[&str]) {
        self.pki.revoke(
            self.dir.path(),
            &[("alice", &self.alice), ("bob", &self.bob)],
            names,
        );
    }

    /// Revokes `names` and reloads the server's CRL.
    fn revoke(&self, names: &[&str]) {
        self.revoke_in_file(names);
        self.crl.reload().expect("the new CRL loads");
    }

    fn crl_path(&self) -> std::path::PathBuf {
        self.dir.path().join("crl.pem")
    }
}

async fn registered(pki: &TestPki, pem: &CertifiedPem, server: &TestServer) -> (Person, Link) {
    let who = person_from(pki, pem);
    let l = link(&who, server).await;
    l.call::<serde_json::Value>(&ServerRequest::Register {})
        .await
        .expect("registers");
    (who, l)
}

fn code<T: std::fmt::Debug>(result: Result<T, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Whether a fresh connection with `who`'s certificate can get its
/// balance (a revoked one fails the handshake, or in TLS 1.3 its first
/// request after the server's alert).
async fn can_connect(who: &Person, server: &TestServer) -> bool {
    match who.connect_server(&server.addr_string()).await {
        Err(_) => false,
        Ok(l) => l.call::<Balance>(&ServerRequest::Balance {}).await.is_ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_during_an_open_connection_refuses_its_next_request_and_closes_it() {
    let s = Setup::start().await;
    let (alice, la) = registered(&s.pki, &s.alice, &s.server).await;
    let (_bob, lb) = registered(&s.pki, &s.bob, &s.server).await;
    assert_eq!(balance(&la).await, GRANT);

    s.revoke(&["alice"]);

    match la.call::<Balance>(&ServerRequest::Balance {}).await {
        Err(CallError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::CertificateRevoked, "{e:?}");
            assert!(e.message.contains("revoked"), "{e:?}");
        }
        other => panic!("expected certificate_revoked, got {other:?}"),
    }
    tokio::time::timeout(STEP, la.closed())
        .await
        .expect("the server closes a revoked caller's connection");
    assert!(la
        .call::<Balance>(&ServerRequest::Balance {})
        .await
        .is_err());
    // Bob, not revoked, goes on on his open connection and on new ones.
    assert_eq!(balance(&lb).await, GRANT);
    let bob = person_from(&s.pki, &s.bob);
    assert!(can_connect(&bob, &s.server).await, "bob is not revoked");
    // A new connection with alice's certificate is refused: resumed, at
    // its first request; in a full handshake (a fresh configuration, no
    // session to resume), by the server's TLS alert, which the link
    // reports as certificate_revoked too.
    assert!(!can_connect(&alice, &s.server).await, "alice is revoked");
    let fresh = person_from(&s.pki, &s.alice);
    let full = fresh
        .connect_server(&s.server.addr_string())
        .await
        .expect("TLS 1.3: the client finishes before the server's verdict");
    assert!(!full.resumed());
    assert_eq!(
        code(full.call::<Balance>(&ServerRequest::Balance {}).await),
        ErrorCode::CertificateRevoked
    );
    shutdown_and_audit(s.server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_of_a_revoked_certificate_is_refused_at_the_request() {
    let s = Setup::start().await;
    let (alice, first) = registered(&s.pki, &s.alice, &s.server).await;
    // A reply has come back, so the session ticket that precedes it has
    // been stored by alice's configuration.
    assert_eq!(balance(&first).await, GRANT);
    drop(first);

    s.revoke(&["alice"]);

    let second = alice
        .connect_server(&s.server.addr_string())
        .await
        .expect("a resumed handshake does not verify the certificate again");
    assert!(
        second.resumed(),
        "the test needs a resumed session to mean anything"
    );
    assert_eq!(
        code(second.call::<Balance>(&ServerRequest::Balance {}).await),
        ErrorCode::CertificateRevoked
    );
    tokio::time::timeout(STEP, second.closed())
        .await
        .expect("the connection closes");
    shutdown_and_audit(s.server).await;
}

/// Starts `payee`'s `serve` against `server`; returns its listening
/// address, its events and the handle that stops it.
async fn start_serve(
    payee: Person,
    server: &TestServer,
) -> (
    String,
    mpsc::Receiver<ServeEvent>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), person::PeerError>>,
) {
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        server: server.addr_string(),
        limits: Default::default(),
        reconnect: Reconnect::default(),
        channels_dir: None,
        log_state: None,
    };
    let task = tokio::spawn(person::serve(Arc::new(payee), options, tx, async move {
        let _ = stopped.await;
    }));
    let listen = loop {
        match tokio::time::timeout(STEP, rx.recv()).await {
            Ok(Some(ServeEvent::Online { listen, .. })) => break listen,
            Ok(Some(_)) => continue,
            other => panic!("serve did not come online: {other:?}"),
        }
    };
    (listen, rx, stop, task)
}

async fn pay_peer(l: &Link, payer: &Person, amount: u64) -> Result<Settled, CallError> {
    let signed = signed_payment(payer, "bob", amount, "");
    l.call::<Settled>(&PeerRequest::Pay {
        payment: PaymentJson::from(&signed),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_listener_refuses_a_revoked_payer_on_open_and_resumed_connections() {
    let s = Setup::start().await;
    let (alice, _la) = registered(&s.pki, &s.alice, &s.server).await;
    let bob_material = micropay::net::tls::Material::from_pem(
        &s.pki.ca.pem.cert_pem,
        &s.bob.cert_pem,
        &s.bob.key_pem,
    )
    .expect("bob's material");
    // Bob's listener has its own copy of the CRL; the server's is not
    // reloaded here, so every refusal below is the listener's own.
    let bob_crl = Crl::load(&s.crl_path(), &s.pki.ca_der(), POLL_NEVER_MS).expect("bob's CRL");
    let bob = Person::from_material_with_crl(bob_material, Some(bob_crl.clone())).expect("bob");
    let (_bob, lb) = registered(&s.pki, &s.bob, &s.server).await;
    let (listen, _events, stop, task) = start_serve(bob, &s.server).await;

    let open = Link::connect(&listen, "bob", alice.payer_config(), 10_000)
        .await
        .expect("alice reaches bob");
    pay_peer(&open, &alice, 5)
        .await
        .expect("paid before the revocation");

    s.revoke_in_file(&["alice"]);
    bob_crl.reload().expect("bob reloads the CRL");

    assert_eq!(
        code(pay_peer(&open, &alice, 6).await),
        ErrorCode::CertificateRevoked
    );
    tokio::time::timeout(STEP, open.closed())
        .await
        .expect("bob's listener closes the connection");
    // Again, on a new connection (resumed: refused at the request).
    let again = Link::connect(&listen, "bob", alice.payer_config(), 10_000)
        .await
        .expect("alice reaches bob's listener");
    assert_eq!(
        code(pay_peer(&again, &alice, 7).await),
        ErrorCode::CertificateRevoked
    );
    // A full handshake too (a fresh configuration: nothing to resume),
    // refused by the listener's verifier.
    let fresh = person_from(&s.pki, &s.alice);
    let full = Link::connect(&listen, "bob", fresh.payer_config(), 10_000)
        .await
        .expect("TLS 1.3: the payer finishes before the listener's verdict");
    assert!(!full.resumed());
    assert_eq!(
        code(pay_peer(&full, &fresh, 8).await),
        ErrorCode::CertificateRevoked
    );
    assert_eq!(
        balance(&lb).await,
        GRANT + 5,
        "only the first payment moved"
    );
    let _ = stop.send(());
    tokio::time::timeout(STEP, task)
        .await
        .expect("serve stops")
        .expect("serve task")
        .expect("serve ends cleanly");
    shutdown_and_audit(s.server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_signed_by_a_foreign_ca_is_refused_at_load() {
    let pki = pki();
    let foreign = common::pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = foreign.revoke(dir.path(), &[], &[]);
    match Crl::load(&path, &pki.ca_der(), POLL_NEVER_MS) {
        Err(e @ CrlError::ForeignIssuer { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("not signed by the configured CA"), "{text}");
        }
        other => panic!("expected ForeignIssuer, got {other:?}"),
    }
    // Not a CRL at all, and no file: refused too, naming the file.
    std::fs::write(
        &path,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    assert!(matches!(
        Crl::load(&path, &pki.ca_der(), POLL_NEVER_MS),
        Err(CrlError::Malformed { .. })
    ));
    assert!(matches!(
        Crl::load(&dir.path().join("none.pem"), &pki.ca_der(), POLL_NEVER_MS),
        Err(CrlError::Read { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_keeps_the_previous_list() {
    let s = Setup::start().await;
    let (alice, _la) = registered(&s.pki, &s.alice, &s.server).await;
    let (bob, _lb) = registered(&s.pki, &s.bob, &s.server).await;
    s.revoke(&["alice"]);
    let before = s.crl.revocations().list();
    assert_eq!(before.len(), 1);

    // A broken file, then a CRL from another CA: both refused.
    std::fs::write(s.crl_path(), "not a CRL").expect("write");
    assert!(matches!(s.crl.reload(), Err(CrlError::Malformed { .. })));
    let foreign = common::pki();
    let other = tempfile::tempdir().expect("tempdir");
    let foreign_crl = foreign.revoke(other.path(), &[], &[]);
    std::fs::copy(&foreign_crl, s.crl_path()).expect("copy");
    assert!(matches!(
        s.crl.reload(),
        Err(CrlError::ForeignIssuer { .. })
    ));
    // The previous list is still in force, at the request and at the
    // handshake.
    let now = s.crl.revocations().list();
    assert_eq!(now.len(), 1);
    assert_eq!(now.number(), before.number());
    assert!(!can_connect(&alice, &s.server).await, "alice stays revoked");
    assert!(can_connect(&bob, &s.server).await, "bob is still let in");
    shutdown_and_audit(s.server).await;
}

// ---------------------------------------------------------------------
// The real binaries
// ---------------------------------------------------------------------

fn certs_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(cli_support::CERTS);
    cmd.arg("--out").arg(dir).args(args);
    cmd
}

/// Parses `crl.pem`: its number and revoked serials (hex).
fn read_crl(path: &Path) -> (u64, Vec<String>) {
    use x509_parser::prelude::FromDer;
    let bytes = std::fs::read(path).expect("crl.pem");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).expect("PEM");
    assert_eq!(pem.label, "X509 CRL");
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents)
        .expect("a CRL");
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .expect("a CRL number");
    let serials = crl
        .iter_revoked_certificates()
        .map(|e| hex::encode(e.raw_serial()))
        .collect();
    (number, serials)
}

fn serial_of(path: &Path) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let bytes = std::fs::read(path).expect("certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).expect("PEM");
    let (_, cert) = X509Certificate::from_der(&pem.contents).expect("X.509");
    hex::encode(cert.raw_serial())
}

#[test]
fn micropay_certs_revoke_adds_serials_keeps_entries_and_counts_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    make_certs(&certs, &["alice", "bob", "carol"]);
    let alice = serial_of(&certs.join("alice.pem"));
    let bob = serial_of(&certs.join("bob.pem"));

    run(
        &mut certs_cmd(&certs, &["--revoke", "alice"]),
        "revoke alice",
    )
    .expect(0)
    .stdout_has(&format!("revoked alice (serial {alice})"))
    .stdout_has("CRL number 1, 1 revoked");
    assert_eq!(read_crl(&certs.join("crl.pem")), (1, vec![alice.clone()]));
    run(
        &mut certs_cmd(
            &certs,
            &["--revoke", "bob", "--revoke", "alice", "--crl-days", "7"],
        ),
        "revoke bob",
    )
    .expect(0)
    .stdout_has("revoked bob")
    .stdout_has("already revoked alice")
    .stdout_has("CRL number 2, 2 revoked");
    assert_eq!(
        read_crl(&certs.join("crl.pem")),
        (2, vec![alice.clone(), bob])
    );

    // Refusals leave the CRL as it was.
    run(&mut certs_cmd(&certs, &["--revoke", "dave"]), "revoke dave")
        .expect(1)
        .stderr_has("dave.pem");
    run(
        &mut certs_cmd(&certs, &["--revoke", "carol", "--crl-days", "0"]),
        "bad days",
    )
    .expect(1)
    .stderr_has("--crl-days");
    run(
        &mut certs_cmd(&certs, &["--revoke", "carol", "dave"]),
        "revoke and issue at once",
    )
    .expect(2);
    // A certificate from another CA is not this CA's to revoke.
    let other = dir.path().join("other");
    make_certs(&other, &["carol"]);
    std::fs::copy(other.join("carol.pem"), certs.join("carol.pem")).expect("copy");
    run(
        &mut certs_cmd(&certs, &["--revoke", "carol"]),
        "foreign carol",
    )
    .expect(1)
    .stderr_has("not issued by ca.pem");
    assert_eq!(read_crl(&certs.join("crl.pem")).0, 2, "nothing was written");
    // A CRL that this CA did not sign is not overwritten.
    std::fs::copy(certs.join("crl.pem"), dir.path().join("ours.pem")).expect("copy");
    run(&mut certs_cmd(&other, &["--revoke", "carol"]), "other CRL").expect(0);
    std::fs::copy(other.join("crl.pem"), certs.join("crl.pem")).expect("copy");
    run(
        &mut certs_cmd(&certs, &["--revoke", "alice"]),
        "foreign CRL",
    )
    .expect(1)
    .stderr_has("not signed by ca.pem");
}

#[test]
fn micropay_certs_revoke_explains_a_ca_without_crl_sign() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "old micropay CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("old CA");
    std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("ca.pem");
    std::fs::write(dir.path().join("ca.key"), key.serialize_pem()).expect("ca.key");
    make_certs(dir.path(), &["alice"]);
    run(&mut certs_cmd(dir.path(), &["--revoke", "alice"]), "revoke")
        .expect(1)
        .stderr_has("lacks the cRLSign key usage");
    assert!(!dir.path().join("crl.pem").exists());
}

/// A world for the binaries: certificates for alice, bob and carol,
/// carol revoked (so that crl.pem exists), and a server with `--crl`.
fn crl_world(
    poll_ms: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    cli_support::Guard,
    String,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    make_certs(&certs, &["alice", "bob", "carol"]);
    run(
        &mut certs_cmd(&certs, &["--revoke", "carol"]),
        "revoke carol",
    )
    .expect(0);
    let crl = certs.join("crl.pem");
    let (server, addr) = start_server(
        &certs,
        &dir.path().join("ledger.db"),
        &dir.path().join("addr"),
        &dir.path().join("server.log"),
        &[("RUST_LOG", None)],
        &[
            "--crl",
            crl.to_str().expect("utf-8"),
            "--crl-poll-ms",
            poll_ms,
        ],
    );
    (dir, certs, server, addr)
}

/// Runs `WHO balance` until it fails (bounded); panics if it never does.
fn until_refused(certs: &Path, addr: &str, who: &str) -> cli_support::Out {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run(
            &mut cli_support::client(who, certs, addr, &["balance"]),
            format!("{who} balance"),
        );
        if out.code != Some(0) {
            return out;
        }
        assert!(Instant::now() < deadline, "{who} was never refused");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_picks_up_a_changed_crl_file_without_a_restart() {
    let (_dir, certs, _server, addr) = crl_world("50");
    let ok = |who: &str| {
        run(
            &mut cli_support::client(who, &certs, &addr, &["register"]),
            format!("{who} register"),
        )
        .expect(0);
    };
    ok("alice");
    ok("bob");
    // Carol, revoked before the server started, is refused.
    run(
        &mut cli_support::client("carol", &certs, &addr, &["register"]),
        "carol register",
    )
    .expect(1)
    .stderr_has("certificate_revoked");

    run(
        &mut certs_cmd(&certs, &["--revoke", "alice"]),
        "revoke alice",
    )
    .expect(0);
    until_refused(&certs, &addr, "alice")
        .expect(1)
        .stderr_has("certificate_revoked");
    run(
        &mut cli_support::client("bob", &certs, &addr, &["balance"]),
        "bob balance",
    )
    .expect(0);
}

#[test]
fn the_server_reloads_the_crl_on_sighup() {
    // The file is polled only hourly: only SIGHUP can bring the change in.
    let (dir, certs, server, addr) = crl_world("3600000");
    run(
        &mut cli_support::client("bob", &certs, &addr, &["register"]),
        "bob register",
    )
    .expect(0);
    run(&mut certs_cmd(&certs, &["--revoke", "bob"]), "revoke bob").expect(0);
    server.signal("HUP");
    until_refused(&certs, &addr, "bob")
        .expect(1)
        .stderr_has("certificate_revoked");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(log.contains("CRL reloaded (SIGHUP)"), "{log}");
}

#[test]
fn the_server_refuses_to_start_with_a_crl_from_a_foreign_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let other = dir.path().join("other");
    make_certs(&certs, &["alice"]);
    make_certs(&other, &["alice"]);
    run(
        &mut certs_cmd(&other, &["--revoke", "alice"]),
        "foreign CRL",
    )
    .expect(0);
    let crl = other.join("crl.pem");
    let mut cmd = Command::new(cli_support::SERVER);
    cmd.env_remove("RUST_LOG")
        .arg("--cert")
        .arg(certs.join("server.pem"))
        .arg("--key")
        .arg(certs.join("server.key"))
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(dir.path().join("ledger.db"))
        .arg("--crl")
        .arg(&crl);
    // Unusable files are a configuration error: exit 2, nothing started.
    run(&mut cmd, "server with a foreign CRL")
        .expect(2)
        .stderr_has(&crl.display().to_string())
        .stderr_has("not signed by the configured CA");
}

#[test]
fn serve_with_crl_refuses_a_revoked_payer() {
    // The server polls its CRL only hourly, so it still lets alice in:
    // the refusal is bob's listener's, which polls every 50 ms.
    let (_dir, certs, _server, addr) = crl_world("3600000");
    for who in ["alice", "bob"] {
        run(
            &mut cli_support::client(who, &certs, &addr, &["register"]),
            format!("{who} register"),
        )
        .expect(0);
    }
    let crl = certs.join("crl.pem");
    let mut serve = cli_support::Serve::spawn(
        cli_support::client(
            "bob",
            &certs,
            &addr,
            &[
                "--json",
                "serve",
                "--crl",
                crl.to_str().expect("utf-8"),
                "--crl-poll-ms",
                "50",
            ],
        ),
        "bob serve --crl".to_owned(),
        _dir.path().join("bob-serve.err"),
        true,
    );
    serve.online();
    run(
        &mut cli_support::client("alice", &certs, &addr, &["send", "bob", "3"]),
        "alice pays bob",
    )
    .expect(0);
    run(
        &mut certs_cmd(&certs, &["--revoke", "alice"]),
        "revoke alice",
    )
    .expect(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run(
            &mut cli_support::client("alice", &certs, &addr, &["send", "bob", "4"]),
            "alice pays bob again",
        );
        if out.code != Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "alice was never refused");
        thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = serve.interrupt();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_past_its_next_update_is_still_enforced() {
    use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams};
    use time::{Duration as Span, OffsetDateTime};
    let pki = pki();
    let alice = pki.person("alice").expect("alice");
    let bob = pki.person("bob").expect("bob");
    let ca_key = KeyPair::from_pem(&pki.ca.pem.key_pem).expect("CA key");
    let issuer = Issuer::from_ca_cert_pem(&pki.ca.pem.cert_pem, ca_key).expect("issuer");
    let now = OffsetDateTime::now_utc();
    let alice_serial = {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, pem) = x509_parser::pem::parse_x509_pem(alice.cert_pem.as_bytes()).expect("PEM");
        let (_, cert) = X509Certificate::from_der(&pem.contents).expect("X.509");
        cert.raw_serial().to_vec()
    };
    let stale = CertificateRevocationListParams {
        this_update: now - Span::days(2),
        next_update: now - Span::days(1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&alice_serial),
            revocation_time: now - Span::days(2),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .expect("a stale CRL");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crl.pem");
    std::fs::write(&path, stale.pem().expect("PEM")).expect("write");

    let crl = Crl::load(&path, &pki.ca_der(), POLL_NEVER_MS).expect("a stale CRL still loads");
    assert!(crl
        .revocations()
        .list()
        .is_stale_at(micropay::system::clock::now_s()));
    let server = start_server_with_crl(pki.clone(), crl).await;
    let (_bob, _lb) = registered(&pki, &bob, &server).await;
    let alice = person_from(&pki, &alice);
    assert!(
        !can_connect(&alice, &server).await,
        "a stale CRL's revocations stay in force"
    );
    let bob = person_from(&pki, &bob);
    assert!(
        can_connect(&bob, &server).await,
        "and nobody else is shut out"
    );
    shutdown_and_audit(server).await;
}

/// Issue 10, item 1 with issue 15: revocation stops a stolen key, not only
/// its owner's connections. The thief (bob, with a valid certificate of
/// his own) holds alice's key and forwards payments signed with it from
/// alice to himself: before the revocation they settle, after it they are
/// refused `payer_revoked` whoever forwards them, nothing moves, and the
/// forwarder's connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_signed_with_a_revoked_certificates_key_is_refused_at_settlement() {
    let s = Setup::start().await;
    let (alice, _la) = registered(&s.pki, &s.alice, &s.server).await;
    let (_bob, lb) = registered(&s.pki, &s.bob, &s.server).await;
    let stolen = |amount: u64| {
        Payment {
            id: PaymentId::random(),
            payer: alice.name.clone(),
            payee: Name::parse("bob").expect("name"),
            amount_minor: amount,
            expires_at_s: now_s() + 120,
            memo: String::new(),
        }
        .sign(&alice.key)
    };
    let settle = |p: SignedPayment| {
        let lb = &lb;
        async move {
            lb.call::<Settled>(&ServerRequest::Settle {
                payment: PaymentJson::from(&p),
            })
            .await
        }
    };
    settle(stolen(5))
        .await
        .expect("before the revocation it settles");

    s.revoke(&["alice"]);
    let later = stolen(7);
    assert_eq!(code(settle(later.clone()).await), ErrorCode::PayerRevoked);
    assert_eq!(code(settle(later).await), ErrorCode::PayerRevoked);
    // The forwarder is not revoked: its connection goes on.
    assert_eq!(balance(&lb).await, GRANT + 5);
    let report = shutdown_and_audit(s.server).await;
    assert_eq!(report.payments, 1);
}
