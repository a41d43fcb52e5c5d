//! Mutual TLS as micropay configures it, over real loopback sockets, with
//! in-memory PKIs made by the same certificate code as `micropay-certs`.
//!
//! Every handshake runs a tiny exchange: the client writes `ping`, the
//! server answers `pong`. With TLS 1.3 a client whose certificate the
//! server rejects finishes its own half of the handshake before the
//! server's alert arrives, so a refusal is asserted on both ends: the
//! server's accept fails (with the rustls error we expect) and the client
//! never gets its `pong`.

mod common;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::TestPki;
use micropay::certs::{Ca, CertifiedPem, KeyType, Validity};
use micropay::core::name::Name;
use micropay::net::identity::Identity;
use micropay::net::tls::{self, Material, TlsError};
use micropay::person::Person;
use micropay::wire::ServerRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Longest any single step (connect, handshake, one read) may take.
const STEP: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------

fn day() -> Validity {
    Validity::days_from_now(1)
}

fn expired() -> Validity {
    let now = OffsetDateTime::now_utc();
    Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    }
}

fn not_yet_valid() -> Validity {
    let now = OffsetDateTime::now_utc();
    Validity {
        not_before: now + time::Duration::days(1),
        not_after: now + time::Duration::days(10),
    }
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid name")
}

fn new_ca(cn: &str) -> Ca {
    Ca::new(cn, KeyType::Ed25519, day()).expect("CA")
}

fn person_pem(ca: &Ca, who: &str, validity: Validity) -> CertifiedPem {
    ca.issue_person(&name(who), KeyType::Ed25519, validity)
        .expect("person certificate")
}

fn server_pem(ca: &Ca, validity: Validity) -> CertifiedPem {
    ca.issue_server(
        &["localhost".to_owned()],
        &["127.0.0.1".parse().expect("ip")],
        KeyType::Ed25519,
        validity,
    )
    .expect("server certificate")
}

/// Material that trusts `trusted` and presents `pem`.
fn material(trusted: &Ca, pem: &CertifiedPem) -> Material {
    Material::from_pem(&trusted.pem.cert_pem, &pem.cert_pem, &pem.key_pem).expect("material")
}

fn server_cfg(trusted: &Ca, pem: &CertifiedPem) -> Arc<ServerConfig> {
    tls::server_config(&material(trusted, pem)).expect("server config")
}

fn listener_cfg(trusted: &Ca, pem: &CertifiedPem) -> Arc<ServerConfig> {
    tls::peer_listener_config(&material(trusted, pem)).expect("peer listener config")
}

fn client_cfg(trusted: &Ca, pem: &CertifiedPem) -> Arc<ClientConfig> {
    tls::client_config(&material(trusted, pem)).expect("client config")
}

fn payer_cfg(trusted: &Ca, pem: &CertifiedPem) -> Arc<ClientConfig> {
    tls::payer_config(&material(trusted, pem)).expect("payer config")
}

/// A TLS 1.3 client that trusts `trusted` and presents no certificate.
fn anonymous_client_cfg(trusted: &Ca) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let ca_der =
        CertificateDer::from_pem_slice(trusted.pem.cert_pem.as_bytes()).expect("CA certificate");
    roots.add(ca_der).expect("root");
    let config = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(tls::PROTOCOL_VERSIONS)
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn signing_spki(pem: &CertifiedPem, ca: &Ca) -> Vec<u8> {
    material(ca, pem)
        .signing_key()
        .expect("signing key")
        .verifying_key()
        .spki_der()
        .to_vec()
}

// ---------------------------------------------------------------------
// One handshake and a ping over real sockets
// ---------------------------------------------------------------------

struct Outcome {
    /// Server side: the verified client, or why accepting failed.
    server: Result<Identity, io::Error>,
    /// Client side: the server's leaf certificate once `pong` came back,
    /// or why the exchange failed.
    client: Result<Vec<u8>, io::Error>,
}

impl Outcome {
    fn assert_ok(&self) -> &Identity {
        if let Err(e) = &self.client {
            panic!("client failed: {e}");
        }
        match &self.server {
            Ok(identity) => identity,
            Err(e) => panic!("server failed: {e}"),
        }
    }

    /// The server refused and the client could not exchange data; returns
    /// the server's rustls error.
    fn assert_refused_by_server(&self) -> rustls::Error {
        assert!(
            self.client.is_err(),
            "the client exchanged data although the server should have refused it"
        );
        match &self.server {
            Ok(identity) => panic!("the server accepted {}", identity.name),
            Err(e) => rustls_error(e)
                .unwrap_or_else(|| panic!("server failed, but not with a rustls error: {e}")),
        }
    }

    /// The client refused the server (during its handshake); returns the
    /// client's rustls error.
    fn assert_refused_by_client(&self) -> rustls::Error {
        assert!(
            self.server.is_err(),
            "the server accepted a connection the client should have abandoned"
        );
        match &self.client {
            Ok(_) => panic!("the client accepted the server's certificate"),
            Err(e) => rustls_error(e)
                .unwrap_or_else(|| panic!("client failed, but not with a rustls error: {e}")),
        }
    }
}

fn rustls_error(e: &io::Error) -> Option<rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
}

async fn within<T>(
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(STEP, fut).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out"),
        )),
    }
}

async fn serve_one(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<Identity> {
    let (tcp, _) = within("accept", listener.accept()).await?;
    let mut tls = within("server handshake", acceptor.accept(tcp)).await?;
    let identity = tls::peer_identity(tls.get_ref().1).map_err(io::Error::other)?;
    let mut buf = [0u8; 4];
    within("server read", tls.read_exact(&mut buf)).await?;
    if &buf != b"ping" {
        return Err(io::Error::other(format!("server read {buf:?}")));
    }
    within("server write", async {
        tls.write_all(b"pong").await?;
        tls.flush().await
    })
    .await?;
    let _ = within("server shutdown", tls.shutdown()).await;
    Ok(identity)
}

async fn ping(addr: SocketAddr, config: Arc<ClientConfig>, dial: &str) -> io::Result<Vec<u8>> {
    let tcp = within("connect", TcpStream::connect(addr)).await?;
    let server_name = ServerName::try_from(dial.to_owned()).map_err(io::Error::other)?;
    let mut tls = within(
        "client handshake",
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.to_vec())
        .ok_or_else(|| io::Error::other("no server certificate"))?;
    within("client write", async {
        tls.write_all(b"ping").await?;
        tls.flush().await
    })
    .await?;
    let mut buf = [0u8; 4];
    within("client read", tls.read_exact(&mut buf)).await?;
    if &buf != b"pong" {
        return Err(io::Error::other(format!("client read {buf:?}")));
    }
    Ok(leaf)
}

/// Accepts one connection with `server` and dials it with `client`,
/// using `dial` as the TLS server name.
async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>, dial: &str) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server_task = tokio::spawn(serve_one(listener, TlsAcceptor::from(server)));
    let client = ping(addr, client, dial).await;
    let server = match tokio::time::timeout(STEP * 2, server_task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(io::Error::other(format!("server task: {join}"))),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "server task")),
    };
    Outcome { server, client }
}

// ---------------------------------------------------------------------
// Handshakes that succeed
// ---------------------------------------------------------------------

#[tokio::test]
async fn handshake_succeeds_with_ca_issued_certificates() {
    let ca = new_ca("test CA");
    let server = server_pem(&ca, day());
    let alice = person_pem(&ca, "alice", day());

    for dial in ["localhost", "127.0.0.1"] {
        let outcome = exchange(server_cfg(&ca, &server), client_cfg(&ca, &alice), dial).await;
        let identity = outcome.assert_ok();
        assert_eq!(identity.name.as_str(), "alice", "dialling {dial}");
        assert_eq!(
            identity.key.spki_der(),
            signing_spki(&alice, &ca),
            "the identity's key is alice's certificate key"
        );
        assert!(identity.not_after_s > OffsetDateTime::now_utc().unix_timestamp());
    }
}

#[tokio::test]
async fn handshake_succeeds_with_the_test_pki() {
    let pki = TestPki::new().expect("test PKI");
    let bob = pki.person("bob").expect("bob");
    let outcome = exchange(
        server_cfg(&pki.ca, &pki.server),
        client_cfg(&pki.ca, &bob),
        "localhost",
    )
    .await;
    assert_eq!(outcome.assert_ok().name.as_str(), "bob");
}

#[tokio::test]
async fn peer_handshake_each_side_learns_the_other() {
    let ca = new_ca("test CA");
    let alice = person_pem(&ca, "alice", day());
    let bob = person_pem(&ca, "bob", day());

    // alice pays bob: bob's listener, alice dials "bob".
    let outcome = exchange(listener_cfg(&ca, &bob), payer_cfg(&ca, &alice), "bob").await;
    assert_eq!(outcome.assert_ok().name.as_str(), "alice");
    let payee_leaf = outcome.client.as_ref().expect("client ok");
    let payee = Identity::from_cert_der(payee_leaf).expect("payee identity");
    assert_eq!(payee.name.as_str(), "bob");
    assert_eq!(payee.key.spki_der(), signing_spki(&bob, &ca));
}

#[tokio::test]
async fn ecdsa_p256_certificates_handshake() {
    let ca = Ca::new("p256 CA", KeyType::EcdsaP256, day()).expect("CA");
    let alice = ca
        .issue_person(&name("alice"), KeyType::EcdsaP256, day())
        .expect("alice");
    let bob = ca
        .issue_person(&name("bob"), KeyType::Ed25519, day())
        .expect("bob");
    let server = ca
        .issue_server(&["localhost".to_owned()], &[], KeyType::EcdsaP256, day())
        .expect("server");

    let outcome = exchange(
        server_cfg(&ca, &server),
        client_cfg(&ca, &alice),
        "localhost",
    )
    .await;
    assert_eq!(outcome.assert_ok().name.as_str(), "alice");
    let outcome = exchange(listener_cfg(&ca, &bob), payer_cfg(&ca, &alice), "bob").await;
    assert_eq!(outcome.assert_ok().name.as_str(), "alice");
    let outcome = exchange(listener_cfg(&ca, &alice), payer_cfg(&ca, &bob), "alice").await;
    assert_eq!(outcome.assert_ok().name.as_str(), "bob");
}

/// A payer reaches a payee listener by dialling the payee's name.
async fn dial_person(who: &str) -> Outcome {
    let ca = new_ca("test CA");
    let payer = person_pem(&ca, "payer", day());
    let payee = person_pem(&ca, who, day());
    exchange(listener_cfg(&ca, &payee), payer_cfg(&ca, &payer), who).await
}

#[tokio::test]
async fn payees_are_dialled_by_name() {
    let longest = format!("z{}x", "-9".repeat(15));
    for who in ["a", "0a", "9z", "a-b", "a--b", "x1-y", longest.as_str()] {
        let outcome = dial_person(who).await;
        assert_eq!(outcome.assert_ok().name.as_str(), "payer", "dialling {who}");
    }
}

#[tokio::test]
async fn every_grammatical_name_can_be_dialled() {
    // Names TLS cannot dial are refused by the grammar itself ...
    for who in ["x-", "a1-", "0", "7", "42", "2024", "0x", "0x1f", "0xbeef"] {
        assert!(Name::parse(who).is_err(), "{who} must be refused");
    }
    // ... and every name it accepts, however odd, can be dialled.
    let mut failures = Vec::new();
    for who in [
        "x",
        "a-1",
        "1-2",
        "1a",
        "x0x1f",
        "z9-9-z",
        "abcdefghijklmnopqrstuvwxyz012345",
    ] {
        Name::parse(who).expect("the grammar accepts it");
        let outcome = dial_person(who).await;
        if let Err(e) = &outcome.client {
            failures.push(format!("{who}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "payees that cannot be dialled: {failures:#?}"
    );
}

// ---------------------------------------------------------------------
// Handshakes the server refuses
// ---------------------------------------------------------------------

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let ca = new_ca("test CA");
    let server = server_pem(&ca, day());
    let bob = person_pem(&ca, "bob", day());

    for (what, config) in [
        ("server", server_cfg(&ca, &server)),
        ("peer listener", listener_cfg(&ca, &bob)),
    ] {
        let dial = if what == "server" { "localhost" } else { "bob" };
        let outcome = exchange(config, anonymous_client_cfg(&ca), dial).await;
        let error = outcome.assert_refused_by_server();
        assert!(
            matches!(error, rustls::Error::NoCertificatesPresented),
            "{what}: unexpected error {error:?}"
        );
    }
}

#[tokio::test]
async fn client_certificate_from_a_foreign_ca_is_refused() {
    let ca = new_ca("test CA");
    let foreign = new_ca("foreign CA");
    let server = server_pem(&ca, day());
    let bob = person_pem(&ca, "bob", day());
    // Same name, same shape, wrong issuer. The client trusts the real CA
    // so that it is the server, not the client, who must refuse.
    let mallory = person_pem(&foreign, "alice", day());

    for (what, config, dial) in [
        ("server", server_cfg(&ca, &server), "localhost"),
        ("peer listener", listener_cfg(&ca, &bob), "bob"),
    ] {
        let outcome = exchange(config, client_cfg(&ca, &mallory), dial).await;
        let error = outcome.assert_refused_by_server();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{what}: unexpected error {error:?}"
        );
    }
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let ca = new_ca("test CA");
    let server = server_pem(&ca, day());
    let bob = person_pem(&ca, "bob", day());
    let alice = person_pem(&ca, "alice", expired());

    for (what, config, dial) in [
        ("server", server_cfg(&ca, &server), "localhost"),
        ("peer listener", listener_cfg(&ca, &bob), "bob"),
    ] {
        let outcome = exchange(config, client_cfg(&ca, &alice), dial).await;
        let error = outcome.assert_refused_by_server();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{what}: unexpected error {error:?}"
        );
    }
}

#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let ca = new_ca("test CA");
    let server = server_pem(&ca, day());
    let bob = person_pem(&ca, "bob", day());
    let alice = person_pem(&ca, "alice", not_yet_valid());

    for (what, config, dial) in [
        ("server", server_cfg(&ca, &server), "localhost"),
        ("peer listener", listener_cfg(&ca, &bob), "bob"),
    ] {
        let outcome = exchange(config, client_cfg(&ca, &alice), dial).await;
        let error = outcome.assert_refused_by_server();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
                )
            ),
            "{what}: unexpected error {error:?}"
        );
    }
}

#[tokio::test]
async fn server_certificate_cannot_log_in_as_a_person() {
    // The server's certificate is ServerAuth only: presented as a client
    // certificate it is refused, even though the CA issued it.
    let ca = new_ca("test CA");
    let server = server_pem(&ca, day());
    let outcome = exchange(
        server_cfg(&ca, &server),
        client_cfg(&ca, &server),
        "localhost",
    )
    .await;
    let error = outcome.assert_refused_by_server();
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            )
        ),
        "unexpected error {error:?}"
    );
}

// ---------------------------------------------------------------------
// Handshakes the payer (client) refuses
// ---------------------------------------------------------------------

#[tokio::test]
async fn payee_presenting_another_name_is_refused() {
    let ca = new_ca("test CA");
    let alice = person_pem(&ca, "alice", day());
    let carol = person_pem(&ca, "carol", day());

    // alice dials "bob", but the listener is carol's.
    let outcome = exchange(listener_cfg(&ca, &carol), payer_cfg(&ca, &alice), "bob").await;
    let error = outcome.assert_refused_by_client();
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "unexpected error {error:?}"
    );

    // The same listener is fine when dialled by its own name.
    let outcome = exchange(listener_cfg(&ca, &carol), payer_cfg(&ca, &alice), "carol").await;
    assert_eq!(outcome.assert_ok().name.as_str(), "alice");
}

#[tokio::test]
async fn payee_from_a_foreign_ca_is_refused() {
    // An impostor listener with the right name, signed by another CA.
    let ca = new_ca("test CA");
    let foreign = new_ca("foreign CA");
    let alice = person_pem(&ca, "alice", day());
    let fake_bob = person_pem(&foreign, "bob", day());

    let outcome = exchange(listener_cfg(&ca, &fake_bob), payer_cfg(&ca, &alice), "bob").await;
    let error = outcome.assert_refused_by_client();
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "unexpected error {error:?}"
    );
}

#[tokio::test]
async fn expired_or_not_yet_valid_payee_is_refused() {
    let ca = new_ca("test CA");
    let alice = person_pem(&ca, "alice", day());
    for validity in [expired(), not_yet_valid()] {
        let bob = person_pem(&ca, "bob", validity);
        let outcome = exchange(listener_cfg(&ca, &bob), payer_cfg(&ca, &alice), "bob").await;
        let error = outcome.assert_refused_by_client();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired
                        | CertificateError::ExpiredContext { .. }
                        | CertificateError::NotValidYet
                        | CertificateError::NotValidYetContext { .. }
                )
            ),
            "unexpected error {error:?}"
        );
    }
}

#[tokio::test]
async fn server_certificate_for_another_host_is_refused() {
    let ca = new_ca("test CA");
    let server = server_pem(&ca, day());
    let alice = person_pem(&ca, "alice", day());
    let outcome = exchange(
        server_cfg(&ca, &server),
        client_cfg(&ca, &alice),
        "server.example",
    )
    .await;
    let error = outcome.assert_refused_by_client();
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "unexpected error {error:?}"
    );
}

// ---------------------------------------------------------------------
// TLS 1.2
// ---------------------------------------------------------------------

/// A well-formed TLS 1.2 ClientHello with no supported_versions extension,
/// i.e. from a client that speaks nothing newer than TLS 1.2 (this crate
/// builds rustls without TLS 1.2 support, so the bytes are written here).
fn tls12_client_hello() -> Vec<u8> {
    fn u16be(n: usize) -> [u8; 2] {
        u16::try_from(n).expect("fits u16").to_be_bytes()
    }
    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(u16be(data.len()));
        out.extend(data);
        out
    }
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend(u16be(host.len() + 3));
    sni.push(0); // host_name
    sni.extend(u16be(host.len()));
    sni.extend(host);
    // x25519, secp256r1
    let groups = [0x00, 0x04, 0x00, 0x1d, 0x00, 0x17];
    // ed25519, ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    let sigalgs = [0x00, 0x08, 0x08, 0x07, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01];
    let mut extensions = Vec::new();
    extensions.extend(extension(0x0000, &sni));
    extensions.extend(extension(0x000a, &groups));
    extensions.extend(extension(0x000b, &[0x01, 0x00]));
    extensions.extend(extension(0x000d, &sigalgs));

    // ECDHE-ECDSA/RSA with AES-GCM and ChaCha20-Poly1305.
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8];
    let mut body = vec![0x03, 0x03]; // client_version: TLS 1.2
    body.extend([0x5a; 32]); // random
    body.push(0); // empty session id
    body.extend(u16be(suites.len() * 2));
    for suite in suites {
        body.extend(suite.to_be_bytes());
    }
    body.extend([0x01, 0x00]); // compression: null only
    body.extend(u16be(extensions.len()));
    body.extend(extensions);

    let mut handshake = vec![0x01]; // ClientHello
    let len = u32::try_from(body.len()).expect("fits").to_be_bytes();
    handshake.extend(&len[1..]);
    handshake.extend(body);

    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 compat
    record.extend(u16be(handshake.len()));
    record.extend(handshake);
    record
}

#[tokio::test]
async fn tls12_only_client_is_refused() {
    let ca = new_ca("test CA");
    let server = server_pem(&ca, day());
    let bob = person_pem(&ca, "bob", day());

    for (what, config) in [
        ("server", server_cfg(&ca, &server)),
        ("peer listener", listener_cfg(&ca, &bob)),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(config);
        let server_task = tokio::spawn(async move {
            let (tcp, _) = within("accept", listener.accept()).await?;
            within("handshake", acceptor.accept(tcp)).await.map(|_| ())
        });

        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&tls12_client_hello())
            .await
            .expect("send ClientHello");
        let mut answer = Vec::new();
        let _ = within("read answer", tcp.read_to_end(&mut answer)).await;

        let accepted = server_task.await.expect("server task");
        let error = match accepted {
            Ok(()) => panic!("{what}: a TLS 1.2 handshake was accepted"),
            Err(e) => rustls_error(&e).unwrap_or_else(|| panic!("{what}: not a rustls error: {e}")),
        };
        assert!(
            matches!(
                error,
                rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::SupportedVersionsExtensionRequired
                        | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
                        | rustls::PeerIncompatible::Tls12NotOffered
                )
            ),
            "{what}: unexpected error {error:?}"
        );
        // The answer is a fatal protocol_version alert, never a ServerHello.
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "{what}: expected an alert record, got {answer:02x?}"
        );
        assert_eq!(
            answer.get(5..7),
            Some(&[0x02, 0x46][..]),
            "{what}: expected fatal protocol_version, got {answer:02x?}"
        );
    }
}

// ---------------------------------------------------------------------
// Loading material from files: every error names the file
// ---------------------------------------------------------------------

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// A directory with ca.pem, alice.pem/.key and bob.pem/.key.
    fn new() -> Files {
        let ca = new_ca("files CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |file: &str, text: &str| {
            std::fs::write(dir.path().join(file), text).expect("write file");
        };
        write("ca.pem", &ca.pem.cert_pem);
        for who in ["alice", "bob"] {
            let pem = person_pem(&ca, who, day());
            write(&format!("{who}.pem"), &pem.cert_pem);
            write(&format!("{who}.key"), &pem.key_pem);
        }
        Files { dir }
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }

    fn write(&self, file: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.path(file);
        std::fs::write(&path, bytes).expect("write file");
        path
    }

    fn load(&self, ca: &Path, cert: &Path, key: &Path) -> TlsError {
        match Material::from_files(ca, cert, key) {
            Ok(_) => panic!(
                "loading {} {} {} should have failed",
                ca.display(),
                cert.display(),
                key.display()
            ),
            Err(e) => e,
        }
    }
}

#[test]
fn from_files_loads_matching_files() {
    let files = Files::new();
    let material = Material::from_files(
        &files.path("ca.pem"),
        &files.path("alice.pem"),
        &files.path("alice.key"),
    )
    .expect("alice's files load");
    assert_eq!(material.roots.len(), 1);
    assert_eq!(material.chain.len(), 1);
    let person = Person::from_material(material).expect("person");
    assert_eq!(person.name.as_str(), "alice");
}

#[test]
fn from_files_names_a_missing_file() {
    let files = Files::new();
    let (ca, cert, key) = (
        files.path("ca.pem"),
        files.path("alice.pem"),
        files.path("alice.key"),
    );
    let missing = files.path("nobody.pem");
    for (args, culprit) in [
        ((&missing, &cert, &key), &missing),
        ((&ca, &missing, &key), &missing),
        ((&ca, &cert, &missing), &missing),
    ] {
        let error = files.load(args.0, args.1, args.2);
        assert!(
            matches!(&error, TlsError::Read { path, .. } if path == culprit),
            "unexpected error {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&culprit.display().to_string()),
            "the message names the file: {message}"
        );
        assert!(
            message.contains("cannot read"),
            "the message says what is wrong: {message}"
        );
    }
}

#[test]
fn from_files_rejects_a_file_that_is_not_pem() {
    let files = Files::new();
    let (ca, cert, key) = (
        files.path("ca.pem"),
        files.path("alice.pem"),
        files.path("alice.key"),
    );
    let text = files.write("notes.txt", b"this is not a certificate\n");
    let binary = files.write("random.bin", &[0x30, 0x82, 0x01, 0x00, 0xff, 0x00, 0x13]);
    let bad_base64 = files.write(
        "broken.pem",
        b"-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );

    // As the CA file, the certificate file and the key file.
    let cases: Vec<(&Path, &Path, &Path, &Path, &str)> = vec![
        (&text, &cert, &key, &text, "no certificate"),
        (&ca, &text, &key, &text, "no certificate"),
        (&ca, &binary, &key, &binary, "no certificate"),
        (&ca, &bad_base64, &key, &bad_base64, "not a PEM certificate"),
        (&ca, &cert, &text, &text, "no PEM private key"),
        (&ca, &cert, &binary, &binary, "no PEM private key"),
        // A key file given as the certificate and vice versa.
        (&ca, &key, &key, &key, "no certificate"),
        (&ca, &cert, &cert, &cert, "no PEM private key"),
    ];
    for (ca_path, cert_path, key_path, culprit, says) in cases {
        let error = files.load(ca_path, cert_path, key_path);
        assert!(
            matches!(&error, TlsError::Pem { path, .. } if path == culprit),
            "unexpected error {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&culprit.display().to_string()),
            "the message names the file: {message}"
        );
        assert!(
            message.contains(says),
            "the message says {says:?}: {message}"
        );
    }
}

#[test]
fn from_files_rejects_a_key_that_does_not_match_the_certificate() {
    let files = Files::new();
    let (ca, alice_pem, bob_key) = (
        files.path("ca.pem"),
        files.path("alice.pem"),
        files.path("bob.key"),
    );
    let error = files.load(&ca, &alice_pem, &bob_key);
    assert!(
        matches!(&error, TlsError::KeyMismatch { key, cert } if key == &bob_key && cert == &alice_pem),
        "unexpected error {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&bob_key.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&alice_pem.display().to_string()),
        "{message}"
    );
    assert!(message.contains("does not belong"), "{message}");
}

// ---------------------------------------------------------------------
// The real server
// ---------------------------------------------------------------------

#[tokio::test]
async fn real_server_accepts_its_own_people_only() {
    let server = common::start_server().await;

    // Control: a person of the server's CA registers and reads a balance.
    let alice = common::person(&server.pki, "alice");
    let link = common::link(&alice, &server).await;
    let _: serde_json::Value = link
        .call(&ServerRequest::Register {})
        .await
        .expect("alice registers");
    let balance: serde_json::Value = link
        .call(&ServerRequest::Balance {})
        .await
        .expect("alice's balance");
    assert_eq!(balance["balance"], 10_000, "{balance}");

    // A certificate from a foreign CA, by a client that trusts the real
    // CA (so it is the server that must refuse). Also expired and
    // not-yet-valid certificates from the right CA.
    let foreign = TestPki::new().expect("foreign PKI");
    let refused = [
        ("foreign CA", foreign.person("mallory").expect("mallory")),
        ("expired", person_pem(&server.pki.ca, "eve", expired())),
        (
            "not yet valid",
            person_pem(&server.pki.ca, "trudy", not_yet_valid()),
        ),
    ];
    for (what, pem) in refused {
        let person = Person::from_material(material(&server.pki.ca, &pem)).expect("person");
        match person.connect_server(&server.addr_string()).await {
            Err(e) => eprintln!("{what}: connect refused: {e}"),
            Ok(link) => {
                let reply = link
                    .call::<serde_json::Value>(&ServerRequest::Balance {})
                    .await;
                assert!(reply.is_err(), "{what}: the server answered {reply:?}");
                let reply = link
                    .call::<serde_json::Value>(&ServerRequest::Register {})
                    .await;
                assert!(reply.is_err(), "{what}: the server answered {reply:?}");
            }
        }
    }

    // No client certificate at all.
    let outcome = ping(
        server.addr(),
        anonymous_client_cfg(&server.pki.ca),
        "127.0.0.1",
    )
    .await;
    assert!(
        outcome.is_err(),
        "a client without a certificate exchanged data"
    );

    // The refusals did not disturb the server.
    let balance: serde_json::Value = link
        .call(&ServerRequest::Balance {})
        .await
        .expect("alice's balance again");
    assert_eq!(balance["balance"], 10_000, "{balance}");
}

// ---------------------------------------------------------------------
// The server-role mark: a person certificate cannot be the server, and
// the server's certificate cannot be a person
// ---------------------------------------------------------------------

/// A certificate a careless CA might issue, made with rcgen directly
/// (bypassing `Ca::issue_person`'s reserved-name check): CN and DNS name
/// `dns`, ClientAuth and ServerAuth, with or without the server-role mark.
fn mis_issued(ca: &Ca, dns: &str, server_mark: bool) -> CertifiedPem {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let mut params = rcgen::CertificateParams::new(vec![dns.to_owned()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, dns);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.not_before = day().not_before;
    params.not_after = day().not_after;
    if server_mark {
        let oid = micropay::net::identity::SERVER_ROLE_POLICY_DER;
        let len = u8::try_from(oid.len()).expect("short OID");
        let mut content = vec![0x30, len + 4, 0x30, len + 2, 0x06, len];
        content.extend_from_slice(&oid);
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[2, 5, 29, 32],
                content,
            ));
    }
    let ca_key = rcgen::KeyPair::from_pem(&ca.pem.key_pem).expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem.cert_pem, ca_key).expect("issuer");
    let cert = params.signed_by(&key, &issuer).expect("signed");
    CertifiedPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A micropay server (the real code) presenting `pem` and signing
/// receipts with its key.
async fn impostor_server(
    pki: &TestPki,
    pem: &CertifiedPem,
    dir: &Path,
) -> micropay::server::RunningServer {
    let material = material(&pki.ca, pem);
    micropay::server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        micropay::server::ServerOptions {
            tls: tls::server_config(&material).expect("impostor config"),
            signing_key: material.signing_key().expect("impostor key"),
            ledger: micropay::ledger::LedgerConfig {
                location: dir.join("impostor.db").into(),
                initial_balance: common::GRANT,
            },
            limits: micropay::server::ServerLimits::default(),
            presence: Default::default(),
            refusals_per_minute: micropay::core::limits::REFUSALS_PER_WINDOW_DEFAULT,
            verify_batch_max: micropay::core::limits::VERIFY_BATCH_MAX_DEFAULT,
            crl: None,
        },
    )
    .await
    .expect("impostor starts")
}

/// Issue 10 item 6: a person certificate named after the server's host,
/// signed by the deployment's CA, served by the real server code. Before
/// the server-role mark, clients took it for the server and "verified"
/// the receipts its person key signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_certificate_named_like_the_server_is_refused_as_the_server() {
    let pki = common::pki();
    let fake = mis_issued(&pki.ca, "localhost", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let impostor = impostor_server(&pki, &fake, dir.path()).await;
    let at = format!("localhost:{}", impostor.addr.port());
    let alice = common::person(&pki, "alice");
    let bob = Arc::new(common::person(&pki, "bob"));

    // Everything the attack needs, tolerated if refused: both register
    // at the impostor and bob goes online there.
    for p in [&alice, &*bob] {
        if let Ok(link) = p.connect_server(&at).await {
            let _ = link
                .call::<serde_json::Value>(&ServerRequest::Register {})
                .await;
        }
    }
    let (events_tx, mut events) = tokio::sync::mpsc::channel(16);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = micropay::person::ServeOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        server: at.clone(),
        limits: micropay::net::session::SessionLimits::default(),
        reconnect: micropay::person::Reconnect::default(),
        channels_dir: None,
        log_state: None,
    };
    let serving = tokio::spawn(micropay::person::serve(
        bob.clone(),
        options,
        events_tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let _ = tokio::time::timeout(STEP, events.recv()).await;

    // alice pays bob through "the server at localhost": refused before
    // anything is sent, naming the certificate; no receipt signed by the
    // person key is ever accepted.
    let mut send = micropay::person::SendOptions::new(&at, name("bob"), 25);
    send.timeout_ms = 5_000;
    match micropay::person::send(&alice, &send).await {
        Ok(sent) => panic!(
            "alice accepted a receipt signed by the person key of `localhost`: {:?}",
            sent.receipt
        ),
        Err(e) => {
            let said = e.to_string();
            assert!(
                said.contains("not a micropay server certificate")
                    && said.contains("CN=localhost")
                    && said.contains(micropay::net::identity::SERVER_ROLE_POLICY),
                "a clear refusal naming the certificate: {said}"
            );
        }
    }
    // Typed, for connect_server itself; bob's serve stopped on it too.
    match alice.connect_server(&at).await {
        Err(micropay::net::link::CallError::NotTheServer { addr, reason }) => {
            assert_eq!(addr, at);
            assert!(reason.contains("CN=localhost"), "{reason}");
        }
        Err(other) => panic!("expected NotTheServer, got {other:?}"),
        Ok(_) => panic!("alice took a person certificate for the server"),
    }
    let _ = stop.send(());
    let served = tokio::time::timeout(STEP, serving)
        .await
        .expect("serve ends")
        .expect("serve task");
    assert!(
        served.is_err_and(|e| e.to_string().contains("not a micropay server certificate")),
        "bob did not go online at the impostor"
    );

    // Even a client that skips connect_server gets no receipt key from
    // it: TLS alone accepts it (the CA signed it for `localhost`).
    let link = micropay::net::link::Link::connect(&at, "localhost", alice.payer_config(), 5_000)
        .await
        .expect("the handshake alone succeeds");
    assert!(matches!(
        link.server_key(),
        Err(micropay::net::identity::IdentityError::NotAServer { .. })
    ));

    // Control: the genuine server, dialled by the same name, is accepted
    // and its key is the receipt key.
    let real = common::start_server_with(pki.clone(), Default::default()).await;
    let link = alice
        .connect_server(&format!("localhost:{}", real.addr().port()))
        .await
        .expect("the real server is the server");
    assert_eq!(link.server_key().ok(), link.peer_key());
    impostor.shutdown().await.expect("impostor stops");
}

/// The server's certificate (or one with its mark, issued by mistake with
/// ClientAuth) is never a person: the library refuses it as an identity
/// and the server refuses it as a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_with_the_server_mark_is_refused_as_a_person() {
    let server = common::start_server().await;
    let der = |pem: &CertifiedPem| {
        CertificateDer::from_pem_slice(pem.cert_pem.as_bytes())
            .expect("certificate")
            .to_vec()
    };
    // The real server certificate: marked, not a person.
    let server_der = der(&server.pki.server);
    assert!(micropay::net::identity::server_key_of_cert(&server_der).is_ok());
    assert!(matches!(
        Identity::from_cert_der(&server_der),
        Err(micropay::net::identity::IdentityError::ServerCertificate { .. })
    ));
    // A person certificate: not marked.
    let alice = server.pki.person("alice").expect("alice");
    assert!(matches!(
        micropay::net::identity::server_key_of_cert(&der(&alice)),
        Err(micropay::net::identity::IdentityError::NotAServer { .. })
    ));

    // A marked certificate with a person's name and ClientAuth.
    let mallory = mis_issued(&server.pki.ca, "mallory", true);
    let refused = Person::from_material(material(&server.pki.ca, &mallory));
    assert!(
        refused.is_err_and(|e| e.to_string().contains("server-role")),
        "the library refuses to load it as a person"
    );
    let config = tls::client_config(&material(&server.pki.ca, &mallory)).expect("config");
    let link =
        micropay::net::link::Link::connect(&server.addr_string(), "127.0.0.1", config, 5_000)
            .await
            .expect("TLS handshake");
    let reply = link
        .call::<serde_json::Value>(&ServerRequest::Register {})
        .await;
    match reply {
        Err(micropay::net::link::CallError::Refused(w)) => {
            assert!(w.message.contains("server-role"), "{}", w.message);
        }
        Err(micropay::net::link::CallError::Closed) => {}
        other => panic!("the server took the server's mark for a person: {other:?}"),
    }
    // ... and a reserved name is not a person either.
    let localhost = mis_issued(&server.pki.ca, "localhost", false);
    assert!(matches!(
        Identity::from_cert_der(&der(&localhost)),
        Err(micropay::net::identity::IdentityError::ReservedName(_))
    ));
}
