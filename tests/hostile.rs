//! Hostile input and limits (issue 6), against real servers and peer
//! listeners on 127.0.0.1:0.
//!
//! Every test abuses a server in one way and proves it stays up by having
//! a well-behaved client (`probe`) get its balance during or after the
//! abuse. Raw connections write bytes straight through tokio-rustls, not
//! through `Link`, so that nothing on the client side tidies them up.
//! Every loop is bounded in count and every wait in time.
//!
//! Every test runs once per ledger backend (`backend_test!`: SQLite
//! always, PostgreSQL when `MICROPAY_TEST_PG` is set). Even the abuse
//! that never reaches the ledger is proved harmless by a probe whose
//! registration and balance do, and on PostgreSQL those go through a
//! connection pool that the abusers must not be able to exhaust.
//!
//! `many_idle_connections_...` runs the real `micropay-server` binary and
//! prints the server's memory per idle connection (see it with
//! `cargo test --release --test hostile -- --nocapture`).

mod cli_support;
mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    link, person, person_from, pki, start_server_on_with, Backend, TestDb, TestPki, TestServer,
};
use micropay::certs::{KeyType, Validity};
use micropay::core::limits::FRAME_BYTES_MAX;
use micropay::core::name::Name;
use micropay::core::payment::{Payment, PaymentId, SignedPayment};
use micropay::ledger::DbLocation;
use micropay::net::link::{CallError, Link};
use micropay::net::tls::{self, Material};
use micropay::person::{self, Person, SendOptions, ServeEvent, ServeOptions};
use micropay::server::ServerLimits;
use micropay::system::clock::now_s;
use micropay::wire::{
    encode_request, Balance, ErrorCode, Listing, PaymentJson, PeerRequest, Registered, Reply,
    ServerRequest, Settled,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Longest any single step (connect, handshake, one reply) may take.
const STEP: Duration = Duration::from_secs(5);

/// What a new account is granted by the in-process test servers.
use common::GRANT;

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

/// Default limits with some changed.
fn limits(change: impl FnOnce(&mut ServerLimits)) -> ServerLimits {
    let mut limits = ServerLimits::default();
    change(&mut limits);
    limits
}

/// An in-process server with `limits` on a fresh ledger of `backend`.
async fn server_on(backend: &Backend, limits: ServerLimits) -> TestServer {
    start_server_on_with(backend, pki(), limits).await
}

/// A fresh ledger of `backend` for the real binary: its `--db` argument
/// (an SQLite file in `dir`, or a PostgreSQL URL, which the binary reads
/// from the same option) and the PostgreSQL database behind it. The
/// caller keeps the database alive for as long as the server runs, so
/// it must be bound before the server's guard and so dropped after it.
async fn binary_db(backend: &Backend, dir: &Path) -> (PathBuf, Option<TestDb>) {
    match backend.fresh_db(dir).await {
        (DbLocation::Sqlite(path), pg) => (path, pg),
        (DbLocation::Postgres(url), pg) => (PathBuf::from(url), pg),
    }
}

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {STEP:?}"))
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid test name")
}

/// A person registered on `server` (over a connection that is then closed).
async fn registered(server: &TestServer, who: &str) -> Person {
    let p = person(&server.pki, who);
    let l = link(&p, server).await;
    let r: Registered = within("register", l.call(&ServerRequest::Register {}))
        .await
        .expect("register");
    assert_eq!(r.balance, GRANT);
    p
}

/// `who`'s balance over a fresh connection: the server is up and serving.
async fn served(server: &TestServer, who: &Person) -> u64 {
    let l = within("probe connects", who.connect_server(&server.addr_string()))
        .await
        .expect("the probe connects");
    let b: Balance = within("probe balance", l.call(&ServerRequest::Balance {}))
        .await
        .expect("the probe gets its balance");
    b.balance
}

async fn balance(link: &Link) -> u64 {
    within("balance", link.call::<Balance>(&ServerRequest::Balance {}))
        .await
        .expect("balance")
        .balance
}

/// The error code of a refused call; anything else fails the test.
fn code<T: std::fmt::Debug>(result: Result<T, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The error code of a failed reply line; a success fails the test.
fn reply_code(reply: &Reply) -> ErrorCode {
    assert!(!reply.ok, "expected an error reply, got {reply:?}");
    reply
        .error
        .as_ref()
        .expect("an error reply has an error")
        .code
}

/// A payment from `payer` to `payee`, valid for two minutes, signed by
/// `payer`'s key.
fn signed(payer: &Person, payee: &str, amount: u64, memo: &str) -> SignedPayment {
    common::signed_payment(payer, payee, amount, memo)
}

async fn settle(link: &Link, payment: PaymentJson) -> Result<Settled, CallError> {
    within(
        "settle",
        link.call::<Settled>(&ServerRequest::Settle { payment }),
    )
    .await
}

/// SplitMix64, for garbage bytes.
use common::Rng;

/// A generator with a fresh seed, printed so a failure can be replayed.
fn seeded_rng() -> Rng {
    let bytes = PaymentId::random().0;
    let seed = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    eprintln!("garbage seed {seed}");
    Rng(seed)
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

type Tls = TlsStream<TcpStream>;

/// TCP, then a TLS handshake as `config` with `server_name`.
async fn tls_to(addr: SocketAddr, server_name: &str, config: Arc<ClientConfig>) -> io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let server_name = ServerName::try_from(server_name.to_owned()).map_err(io::Error::other)?;
    TlsConnector::from(config).connect(server_name, tcp).await
}

/// A TLS 1.3 client that trusts `pki`'s CA and presents no certificate.
fn anonymous_config(pki: &TestPki) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(pki.ca.pem.cert_pem.as_bytes()).expect("CA");
    roots.add(ca).expect("root");
    Arc::new(
        ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(tls::PROTOCOL_VERSIONS)
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Reads and discards until the other side closes (EOF or reset); returns
/// how long that took. Fails the test after `limit` or 16 MiB.
async fn closed_within<R: AsyncRead + Unpin>(r: &mut R, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, r.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(n)) => {
                total += n;
                assert!(total < 16 << 20, "{what}: the server keeps sending");
            }
        }
    }
}

/// A client that must not get anywhere: either the handshake fails, or
/// (TLS 1.3 lets the client finish first) its first request gets no
/// reply, only the server's alert and the end of the connection.
async fn assert_locked_out(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    what: &str,
) {
    let attempt = tokio::time::timeout(STEP, tls_to(addr, server_name, config)).await;
    let mut stream = match attempt {
        Err(_) => panic!("{what}: the handshake neither finished nor failed"),
        Ok(Err(_)) => return,
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.write_all(b"{\"id\":1,\"op\":\"register\"}\n").await;
    let _ = stream.flush().await;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(STEP, stream.read(&mut buf)).await {
        Err(_) => panic!("{what}: neither refused nor answered"),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "{what}: got an answer: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// A raw authenticated connection: lines in, reply lines out.
struct Raw {
    stream: BufReader<Tls>,
}

impl Raw {
    /// Connects to the server as `who`.
    async fn open(server: &TestServer, who: &Person) -> Raw {
        Raw::open_at(server.addr(), "localhost", who).await
    }

    /// Connects to `addr` as `who`, expecting `server_name` on the other end.
    async fn open_at(addr: SocketAddr, server_name: &str, who: &Person) -> Raw {
        let stream = within("TLS connect", tls_to(addr, server_name, who.payer_config()))
            .await
            .expect("TLS handshake");
        Raw {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes))
            .await
            .expect("write");
        within("flush", self.stream.flush()).await.expect("flush");
    }

    /// Reads one reply line.
    async fn reply(&mut self) -> Reply {
        let mut line = Vec::new();
        let n = within("reply", self.stream.read_until(b'\n', &mut line))
            .await
            .expect("read a reply");
        assert!(
            n > 0 && line.ends_with(b"\n"),
            "the connection closed instead of replying"
        );
        line.pop();
        Reply::decode(&line).unwrap_or_else(|e| {
            panic!("unreadable reply {:?}: {e}", String::from_utf8_lossy(&line))
        })
    }

    /// Sends `line` and a newline; reads one reply.
    async fn ask(&mut self, line: &[u8]) -> Reply {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        self.send(&bytes).await;
        self.reply().await
    }

    /// A `balance` request with `id` succeeds: the connection is usable.
    async fn assert_usable(&mut self, id: u64) -> u64 {
        let line = encode_request(id, &ServerRequest::Balance {});
        self.send(&line).await;
        let reply = self.reply().await;
        assert_eq!(reply.id, Some(id), "{reply:?}");
        reply
            .into_result::<Balance>()
            .expect("balance succeeds")
            .balance
    }

    async fn closed_within(&mut self, limit: Duration, what: &str) -> Duration {
        closed_within(&mut self.stream, limit, what).await
    }
}

/// Raises the soft limit on open files towards `wanted` (never above the
/// hard limit) and returns the soft limit in force afterwards.
#[allow(unsafe_code)]
fn raise_fd_limit(wanted: u64) -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into `current`, a valid rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return 1024;
    }
    let soft = current.rlim_cur;
    if soft >= wanted {
        return soft;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.min(current.rlim_max),
        rlim_max: current.rlim_max,
    };
    // SAFETY: setrlimit only reads `raised`, a valid rlimit we own; raising
    // the soft limit up to the hard limit is always permitted.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        soft
    }
}

/// Resident memory of a process, KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// Peak resident memory of a process, KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM")
}

/// A `FIELD: N kB` line of /proc/PID/status, KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------
// Before the handshake
// ---------------------------------------------------------------------

backend_test! {
async fn garbage_before_the_handshake_does_not_stop_the_server(backend) {
    let server = server_on(&backend, limits(|l| l.handshake_timeout_ms = 2_000)).await;
    let probe = registered(&server, "probe").await;
    let mut rng = seeded_rng();

    // Random bytes, a plain-HTTP request, and a TLS record header that
    // promises more than it sends, all open at once.
    let mut garbage = Vec::new();
    for i in 0..8 {
        let mut tcp = within("connect", TcpStream::connect(server.addr()))
            .await
            .expect("TCP connect");
        // The server may already have hung up: a failed write is fine.
        let _ = tcp
            .write_all(&random_bytes(&mut rng, 1024 << (i % 4)))
            .await;
        garbage.push(("random bytes", tcp));
    }
    let mut http = within("connect", TcpStream::connect(server.addr()))
        .await
        .expect("TCP connect");
    let _ = http
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: hostile\r\n\r\n")
        .await;
    garbage.push(("plain HTTP", http));
    let mut partial = within("connect", TcpStream::connect(server.addr()))
        .await
        .expect("TCP connect");
    let _ = partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await;
    garbage.push(("a truncated ClientHello record", partial));

    assert_eq!(served(&server, &probe).await, GRANT);

    // A real TLS 1.3 ClientHello without a client certificate.
    assert_locked_out(
        server.addr(),
        "localhost",
        anonymous_config(&server.pki),
        "no client certificate",
    )
    .await;

    for (what, mut tcp) in garbage {
        let took = closed_within(&mut tcp, STEP, what).await;
        eprintln!("{what}: closed after {took:?}");
    }

    // Many at once, while the probe is served.
    let mut abusers = JoinSet::new();
    for i in 0..64u64 {
        let addr = server.addr();
        let bytes = random_bytes(&mut rng, 64 + (i as usize * 97) % 4096);
        abusers.spawn(async move {
            let Ok(mut tcp) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = tcp.write_all(&bytes).await;
            closed_within(&mut tcp, STEP, "random bytes (many)").await;
        });
    }
    for _ in 0..5 {
        assert_eq!(served(&server, &probe).await, GRANT);
    }
    while let Some(done) = within("abusers finish", abusers.join_next()).await {
        done.expect("abuser task");
    }
    assert_eq!(served(&server, &probe).await, GRANT);
}
}

// ---------------------------------------------------------------------
// After the handshake
// ---------------------------------------------------------------------

backend_test! {
async fn garbage_after_the_handshake_gets_bad_request_and_the_connection_goes_on(backend) {
    let server = server_on(&backend, ServerLimits::default()).await;
    let alice = registered(&server, "alice").await;
    let bob = registered(&server, "bob").await;
    let mut raw = Raw::open(&server, &alice).await;

    // A settle line for a payment, with `amount` replaced by raw JSON text.
    let settle_line = |id: u64, payment: &SignedPayment, amount_text: Option<&str>| -> Vec<u8> {
        let json = serde_json::to_string(&PaymentJson::from(payment)).expect("payment JSON");
        let json = match amount_text {
            None => json,
            Some(text) => {
                let field = format!("\"amount\":{},", payment.payment.amount_minor);
                assert_eq!(json.matches(&field).count(), 1, "{json}");
                json.replace(&field, &format!("\"amount\":{text},"))
            }
        };
        format!("{{\"id\":{id},\"op\":\"settle\",\"payment\":{json}}}").into_bytes()
    };
    let one = signed(&alice, "bob", 1, "");
    let zero = signed(&alice, "bob", 0, "");
    let long_memo = signed(&alice, "bob", 1, &"m".repeat(141));
    let long_utf8_memo = signed(&alice, "bob", 1, &format!("{}m", "é".repeat(70)));

    let settle_json_line = |id: u64, payment: &PaymentJson| -> Vec<u8> {
        let json = serde_json::to_string(payment).expect("payment JSON");
        format!("{{\"id\":{id},\"op\":\"settle\",\"payment\":{json}}}").into_bytes()
    };
    let mut short_id = PaymentJson::from(&one);
    short_id.id.truncate(16);
    let mut bad_hex = PaymentJson::from(&one);
    bad_hex.signature = "zz".repeat(64);
    let mut bad_name = PaymentJson::from(&one);
    bad_name.payer = "Alice Smith".into();

    let invalid_utf8_in_string = [
        br#"{"id":3,"op":"locate","name":""#.as_slice(),
        &[0xff, 0xfe],
        b"\"}",
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>, Option<u64>)> = vec![
        ("not JSON", b"hello, server".to_vec(), None),
        ("an empty line", Vec::new(), None),
        ("a JSON array", b"[1,2,3]".to_vec(), None),
        ("a JSON string", b"\"balance\"".to_vec(), None),
        ("truncated JSON", br#"{"id":1,"op":"bal"#.to_vec(), None),
        ("invalid UTF-8", vec![0xff, 0xfe, 0xfd, 0x80], None),
        ("invalid UTF-8 in a string", invalid_utf8_in_string, None),
        ("NUL bytes", vec![0u8; 100], None),
        ("an unknown op", br#"{"id":4,"op":"fly"}"#.to_vec(), Some(4)),
        ("no op", br#"{"id":5}"#.to_vec(), Some(5)),
        (
            "an extra field",
            br#"{"id":6,"op":"balance","extra":true}"#.to_vec(),
            Some(6),
        ),
        (
            "a wrong type",
            br#"{"id":7,"op":"locate","name":42}"#.to_vec(),
            Some(7),
        ),
        (
            "a missing field",
            br#"{"id":8,"op":"locate"}"#.to_vec(),
            Some(8),
        ),
        (
            "port 0",
            br#"{"id":9,"op":"online","port":0}"#.to_vec(),
            Some(9),
        ),
        (
            "port 65536",
            br#"{"id":10,"op":"online","port":65536}"#.to_vec(),
            Some(10),
        ),
        (
            "a bad advertised host",
            br#"{"id":11,"op":"online","port":9,"address":"a b"}"#.to_vec(),
            Some(11),
        ),
        (
            "id 2^64",
            br#"{"id":18446744073709551616,"op":"balance"}"#.to_vec(),
            None,
        ),
        (
            "a negative id",
            br#"{"id":-1,"op":"balance"}"#.to_vec(),
            None,
        ),
        (
            "a string id",
            br#"{"id":"1","op":"balance"}"#.to_vec(),
            None,
        ),
        (
            "pay sent to the server",
            br#"{"id":12,"op":"pay","payment":{}}"#.to_vec(),
            Some(12),
        ),
        ("amount 0 (signed)", settle_line(13, &zero, None), Some(13)),
        ("amount -1", settle_line(14, &one, Some("-1")), Some(14)),
        (
            "amount 2^64",
            settle_line(15, &one, Some("18446744073709551616")),
            Some(15),
        ),
        ("amount 1.5", settle_line(16, &one, Some("1.5")), Some(16)),
        ("amount 1.0", settle_line(17, &one, Some("1.0")), Some(17)),
        ("amount 1e3", settle_line(18, &one, Some("1e3")), Some(18)),
        (
            "amount as a string",
            settle_line(19, &one, Some("\"1\"")),
            Some(19),
        ),
        ("amount null", settle_line(20, &one, Some("null")), Some(20)),
        (
            "a 141-byte memo (signed)",
            settle_line(21, &long_memo, None),
            Some(21),
        ),
        (
            "a 141-byte UTF-8 memo (signed)",
            settle_line(22, &long_utf8_memo, None),
            Some(22),
        ),
        (
            "a payment with an extra field",
            format!(
                "{{\"id\":23,\"op\":\"settle\",\"payment\":{}}}",
                serde_json::to_string(&PaymentJson::from(&one))
                    .expect("payment JSON")
                    .replacen('{', "{\"bonus\":1,", 1)
            )
            .into_bytes(),
            Some(23),
        ),
        (
            "a short payment id",
            settle_json_line(24, &short_id),
            Some(24),
        ),
        (
            "a non-hex signature",
            settle_json_line(25, &bad_hex),
            Some(25),
        ),
        (
            "a bad payer name",
            settle_json_line(26, &bad_name),
            Some(26),
        ),
    ];
    for (i, (what, line, id)) in cases.iter().enumerate() {
        let reply = raw.ask(line).await;
        assert_eq!(
            reply_code(&reply),
            ErrorCode::BadRequest,
            "{what}: {reply:?}"
        );
        assert_eq!(reply.id, *id, "{what}: the id echoed");
        // The connection goes on.
        assert_eq!(raw.assert_usable(1000 + i as u64).await, GRANT, "{what}");
    }

    // The largest amount is well-formed; it is refused for want of funds
    // and overflows nothing.
    let huge = signed(&alice, "bob", u64::MAX, "");
    let reply = raw.ask(&settle_line(50, &huge, None)).await;
    assert_eq!(
        reply_code(&reply),
        ErrorCode::InsufficientFunds,
        "{reply:?}"
    );

    // Nothing moved, and the server serves everyone.
    assert_eq!(raw.assert_usable(99).await, GRANT);
    assert_eq!(served(&server, &alice).await, GRANT);
    assert_eq!(served(&server, &bob).await, GRANT);
}
}

backend_test! {
async fn an_oversize_line_gets_too_large_and_the_connection_closes(backend) {
    let server = server_on(&backend, ServerLimits::default()).await;
    let alice = registered(&server, "alice").await;
    let mut raw = Raw::open(&server, &alice).await;

    // Exactly at the limit (newline excluded): read and answered.
    let mut at_limit = br#"{"id":1,"op":"balance"}"#.to_vec();
    at_limit.resize(FRAME_BYTES_MAX, b' ');
    let reply = raw.ask(&at_limit).await;
    assert_eq!(reply.id, Some(1));
    assert!(
        reply.ok,
        "a line of exactly {FRAME_BYTES_MAX} bytes is accepted: {reply:?}"
    );

    // One byte over: too_large, then the connection closes.
    let mut over = br#"{"id":2,"op":"balance"}"#.to_vec();
    over.resize(FRAME_BYTES_MAX + 1, b' ');
    let reply = raw.ask(&over).await;
    assert_eq!(reply_code(&reply), ErrorCode::TooLarge, "{reply:?}");
    assert_eq!(reply.id, None);
    raw.closed_within(STEP, "after too_large").await;

    // The same with a smaller configured limit.
    let small = server_on(&backend, limits(|l| l.frame_bytes_max = 100)).await;
    let carol = registered(&small, "carol").await;
    let mut raw = Raw::open(&small, &carol).await;
    let reply = raw.ask(&[b'x'; 101]).await;
    assert_eq!(reply_code(&reply), ErrorCode::TooLarge, "{reply:?}");
    raw.closed_within(STEP, "after too_large (limit 100)").await;

    assert_eq!(served(&server, &alice).await, GRANT);
    assert_eq!(served(&small, &carol).await, GRANT);
}
}

backend_test! {
async fn megabytes_without_a_newline_are_never_buffered(backend) {
    // What the client's kernel may accept without the server reading a
    // byte: its send buffer (up to tcp_wmem's maximum) and the server's
    // small receive buffer. The client must be stopped within that, and
    // long before it has sent everything.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let kernel_slack = wmem_max + (2 << 20);
    let total: usize = (4 * kernel_slack).max(32 << 20);
    let server = server_on(&backend, ServerLimits::default()).await;
    let alice = registered(&server, "alice").await;
    let raw = Raw::open(&server, &alice).await;
    let (mut r, mut w) = tokio::io::split(raw.stream.into_inner());

    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0usize;
        while written < total {
            // A write that blocks for long means the server neither reads
            // nor closes: that is a failure too, reported as no error.
            match tokio::time::timeout(STEP, w.write_all(&chunk)).await {
                Ok(Ok(())) => written += chunk.len(),
                Ok(Err(e)) => return (written, Some(e)),
                Err(_) => return (written, None),
            }
        }
        let flushed = tokio::time::timeout(STEP, w.flush()).await;
        (written, flushed.ok().and_then(|r| r.err()))
    });

    // The reader sees the too_large line (unless the reset overtook it),
    // then the end.
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    if !received.is_empty() {
        let line = received.split(|&b| b == b'\n').next().expect("a line");
        let reply = Reply::decode(line).expect("a reply line");
        assert_eq!(reply_code(&reply), ErrorCode::TooLarge);
    }
    let (written, error) = within("the writer stops", writer)
        .await
        .expect("writer task");
    println!(
        "{} MiB without a newline: the client's kernel took {} KiB before the server's close stopped it ({error:?}); reply seen: {}",
        total >> 20,
        written / 1024,
        !received.is_empty()
    );
    assert!(
        error.is_some(),
        "writes never failed ({} KiB written)",
        written / 1024
    );
    assert!(
        written <= kernel_slack,
        "the client wrote {} KiB before the server closed (kernel buffering allows {} KiB)",
        written / 1024,
        kernel_slack / 1024
    );
    assert_eq!(served(&server, &alice).await, GRANT);
}
}

// ---------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------

backend_test! {
async fn half_open_and_stalled_connections_are_closed_by_the_server(backend) {
    let server = server_on(&backend, limits(|l| {
        l.handshake_timeout_ms = 500;
        l.idle_timeout_ms = 500;
    }))
    .await;
    let probe = registered(&server, "probe").await;
    let hog = registered(&server, "hog").await;

    let mut watchers = JoinSet::new();
    // TCP connect, then nothing.
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    watchers.spawn(async move {
        let took = closed_within(&mut silent, STEP, "half-open TCP").await;
        ("half-open TCP", took)
    });
    // Half a ClientHello.
    let mut half = TcpStream::connect(server.addr()).await.expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00])
        .await
        .expect("write");
    watchers.spawn(async move {
        let took = closed_within(&mut half, STEP, "half a ClientHello").await;
        ("half a ClientHello", took)
    });
    // Authenticated and silent.
    let mut idle = Raw::open(&server, &hog).await;
    watchers.spawn(async move {
        let took = idle.closed_within(STEP, "idle after the handshake").await;
        ("idle after the handshake", took)
    });
    // Half a line, then nothing.
    let mut stalled = Raw::open(&server, &hog).await;
    stalled.send(br#"{"id":1,"op":"bal"#).await;
    watchers.spawn(async move {
        let took = stalled.closed_within(STEP, "stalled mid-line").await;
        ("stalled mid-line", took)
    });
    // A line dripped one byte per 100 ms (slowloris): never finishes
    // within the idle timeout, so it is closed even though bytes arrive.
    let drip = Raw::open(&server, &hog).await;
    let (mut drip_r, mut drip_w) = tokio::io::split(drip.stream.into_inner());
    let dripping = tokio::spawn(async move {
        // 72 bytes, no newline: at most 7.2 s of dripping.
        let line = br#"{"id":1,"op":"balance","pad":"                                         "}"#;
        for byte in line {
            if drip_w.write_all(&[*byte]).await.is_err() || drip_w.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    watchers.spawn(async move {
        let took = closed_within(&mut drip_r, STEP, "slowloris drip").await;
        ("slowloris drip", took)
    });

    // Meanwhile a good client is served.
    let started = Instant::now();
    assert_eq!(served(&server, &probe).await, GRANT);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the probe waited {:?}",
        started.elapsed()
    );

    while let Some(done) = within("watchers", watchers.join_next()).await {
        let (what, took) = done.expect("watcher");
        eprintln!("{what}: closed by the server after {took:?}");
        assert!(
            took < Duration::from_secs(3),
            "{what}: closed only after {took:?}"
        );
    }
    let _ = within("drip stops", dripping).await;
    assert_eq!(served(&server, &probe).await, GRANT);
}
}

// ---------------------------------------------------------------------
// Connection and in-flight limits
// ---------------------------------------------------------------------

backend_test! {
async fn connections_over_the_cap_are_refused_quickly_and_the_rest_go_on(backend) {
    const CAP: usize = 8;
    let server = server_on(&backend, limits(|l| l.connections_max = CAP)).await;
    // No helper link here: every connection is one of the CAP.
    let alice = person(&server.pki, "alice");
    let mut held = Vec::new();
    for i in 0..CAP {
        let mut raw = Raw::open(&server, &alice).await;
        if i == 0 {
            let reply = raw.ask(br#"{"id":1,"op":"register"}"#).await;
            assert!(reply.ok, "{reply:?}");
        }
        assert_eq!(raw.assert_usable(2).await, GRANT);
        held.push(raw);
    }

    // The next one is refused at once.
    for _ in 0..3 {
        let started = Instant::now();
        let attempt = within(
            "a refused connection",
            tls_to(server.addr(), "localhost", alice.payer_config()),
        )
        .await;
        assert!(
            attempt.is_err(),
            "connection {} over the cap was admitted",
            CAP + 1
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    // Those already in are not starved.
    for (i, raw) in held.iter_mut().enumerate() {
        assert_eq!(raw.assert_usable(10 + i as u64).await, GRANT);
    }

    // Close two; two new ones get in (once the server has seen the close).
    held.truncate(CAP - 2);
    let mut admitted = 0;
    for _ in 0..100 {
        if admitted == 2 {
            break;
        }
        match within(
            "connect",
            tls_to(server.addr(), "localhost", alice.payer_config()),
        )
        .await
        {
            Ok(stream) => {
                let mut raw = Raw {
                    stream: BufReader::new(stream),
                };
                assert_eq!(raw.assert_usable(3).await, GRANT);
                held.push(raw);
                admitted += 1;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(
        admitted, 2,
        "the freed places were not given to new connections"
    );
    let attempt = within(
        "a refused connection",
        tls_to(server.addr(), "localhost", alice.payer_config()),
    )
    .await;
    assert!(attempt.is_err(), "the cap holds again");
    for (i, raw) in held.iter_mut().enumerate() {
        assert_eq!(raw.assert_usable(20 + i as u64).await, GRANT);
    }
}
}

backend_test! {
async fn a_thousand_pipelined_requests_with_four_in_flight_all_get_replies(backend) {
    const N: u64 = 1000;
    let server = server_on(&backend, limits(|l| l.in_flight_max = 4)).await;
    let alice = registered(&server, "alice").await;
    let raw = Raw::open(&server, &alice).await;
    let (r, mut w) = tokio::io::split(raw.stream.into_inner());

    let mut requests = Vec::new();
    for id in 1..=N {
        let request = match id % 4 {
            0 => ServerRequest::List {},
            1 => ServerRequest::Balance {},
            2 => ServerRequest::History {
                limit: Some(5),
                before_seq: None,
            },
            _ => ServerRequest::Locate {
                name: "nobody".into(),
            },
        };
        requests.extend_from_slice(&encode_request(id, &request));
    }
    let writer = tokio::spawn(async move {
        w.write_all(&requests).await.expect("write the requests");
        w.flush().await.expect("flush");
        w
    });

    let mut reader = BufReader::new(r);
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    let mut line = Vec::new();
    for _ in 0..N {
        line.clear();
        let n = within("a pipelined reply", reader.read_until(b'\n', &mut line))
            .await
            .expect("read");
        assert!(n > 0, "closed after {} replies", seen.len());
        line.pop();
        let reply = Reply::decode(&line).expect("reply");
        let id = reply.id.expect("every reply has its id");
        match id % 4 {
            3 => assert_eq!(reply_code(&reply), ErrorCode::UnknownPayee, "{reply:?}"),
            _ => assert!(reply.ok, "{reply:?}"),
        }
        assert!(seen.insert(id), "reply {id} twice");
    }
    println!(
        "{N} pipelined requests, 4 in flight: all replies in {:?}",
        started.elapsed()
    );
    assert_eq!(seen, (1..=N).collect::<BTreeSet<u64>>());
    let _w = within("writer", writer).await.expect("writer task");
    assert_eq!(served(&server, &alice).await, GRANT);
}
}

backend_test! {
async fn a_client_that_never_reads_cannot_hold_its_connection(backend) {
    let server = server_on(&backend, limits(|l| {
        l.idle_timeout_ms = 1_000;
        l.in_flight_max = 16;
    }))
    .await;
    let probe = registered(&server, "probe").await;
    let hog = registered(&server, "hog").await;
    registered(&server, "sink").await;
    // The hog asks again and again to settle a payment of its own that
    // is already settled. Each replay is looked up in the ledger, replays
    // run side by side (up to in_flight_max), and each reply carries a
    // whole receipt, so the replies nobody reads fill the kernel's buffers
    // after thousands of requests. Replies as small as a balance would
    // take a hundred thousand, one at a time (every request but settle
    // waits for the ones before it): seconds on SQLite, but most of a
    // minute on PostgreSQL, too near the outer bound below.
    let payment = PaymentJson::from(&signed(&hog, "sink", 1, "replayed"));
    settle(&link(&hog, &server).await, payment.clone())
        .await
        .expect("the hog's payment settles");
    let replay = encode_request(1, &ServerRequest::Settle { payment });
    let raw = Raw::open(&server, &hog).await;
    // The read half is kept, never read.
    let (_never_read, mut w) = tokio::io::split(raw.stream.into_inner());

    let batch: Vec<u8> = (0..100).flat_map(|_| replay.clone()).collect();
    // The pump writes until the server closes the connection. No step is
    // timed: on a loaded machine the close may take a while, and only the
    // outer bound (a minute, far above the 1 s reply budget) fails it.
    let pump = tokio::spawn(async move {
        let started = Instant::now();
        let mut written = 0usize;
        loop {
            if let Err(e) = w.write_all(&batch).await {
                return (written, started.elapsed(), e);
            }
            written += batch.len();
        }
    });

    // Others are served while the hog pumps.
    for _ in 0..10 {
        assert_eq!(served(&server, &probe).await, GRANT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (written, took, error) = tokio::time::timeout(Duration::from_secs(60), pump)
        .await
        .expect("the server closes a connection whose replies nobody reads")
        .expect("pump task");
    println!(
        "a client that never reads: closed by the server after {took:?}, {} KiB of requests written ({error})",
        written / 1024
    );
    assert_eq!(served(&server, &probe).await, GRANT);
    let report = common::shutdown_and_audit(server).await;
    assert_eq!(report.payments, 1, "the replays moved nothing");
}
}

// ---------------------------------------------------------------------
// Thousands of connections (the real binary)
// ---------------------------------------------------------------------

backend_test! {
async fn many_idle_connections_are_held_and_the_server_keeps_answering(backend) {
    const WANTED: usize = 2000;
    let fd_limit = raise_fd_limit(2 * WANTED as u64 + 512);
    let count = WANTED.min(fd_limit.saturating_sub(256) as usize);
    if count < WANTED {
        println!("open-file limit {fd_limit}: holding {count} connections instead of {WANTED}");
    }
    // The real binary, on certificates written by the same code as
    // micropay-certs's.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    pki.write_to(dir.path(), &[]).expect("certificates written");
    let (db, _pg) = binary_db(&backend, dir.path()).await;
    let (proc, proc_addr) = cli_support::start_server(
        dir.path(),
        &db,
        &dir.path().join("addr"),
        &dir.path().join("server.log"),
        &[("RUST_LOG", None)],
        &["-q", "--connections-max", "5000"],
    );
    let addr: SocketAddr = proc_addr.parse().expect("server address");
    let idle = person(&pki, "idle");
    let probe = person(&pki, "probe");
    for p in [&idle, &probe] {
        let l = within("connect", p.connect_server(&proc_addr))
            .await
            .expect("connect");
        let _: Registered = within("register", l.call(&ServerRequest::Register {}))
            .await
            .expect("register");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = vm_rss_kib(proc.pid());

    let config = idle.payer_config();
    let started = Instant::now();
    let mut held: Vec<BufReader<Tls>> = Vec::with_capacity(count);
    while held.len() < count && started.elapsed() < Duration::from_secs(40) {
        let batch = (count - held.len()).min(100);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            let config = config.clone();
            set.spawn(async move {
                let stream = tls_to(addr, "127.0.0.1", config).await?;
                let mut stream = BufReader::new(stream);
                stream
                    .write_all(&encode_request(1, &ServerRequest::Balance {}))
                    .await?;
                stream.flush().await?;
                let mut line = Vec::new();
                stream.read_until(b'\n', &mut line).await?;
                let reply = Reply::decode(line.trim_ascii_end()).map_err(io::Error::other)?;
                if !reply.ok {
                    return Err(io::Error::other(format!("{reply:?}")));
                }
                Ok::<_, io::Error>(stream)
            });
        }
        while let Some(done) = tokio::time::timeout(Duration::from_secs(20), set.join_next())
            .await
            .expect("a batch of connections in time")
        {
            held.push(
                done.expect("connect task")
                    .expect("an idle connection is admitted and answered"),
            );
        }
    }
    let opened_in = started.elapsed();
    assert_eq!(
        held.len(),
        count,
        "only {} connections in {opened_in:?}",
        held.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib(proc.pid());
    let per_connection = (after.saturating_sub(before)) as f64 / count as f64;

    // The server keeps answering: a new client, and some of the idle ones.
    let answered = Instant::now();
    let l = within("probe connects", probe.connect_server(&proc_addr))
        .await
        .expect("probe connects");
    let _: Balance = within("probe balance", l.call(&ServerRequest::Balance {}))
        .await
        .expect("probe balance");
    let probe_took = answered.elapsed();
    for (i, stream) in held.iter_mut().enumerate().step_by(count.max(10) / 10) {
        within(
            "an idle connection answers",
            stream.write_all(&encode_request(2, &ServerRequest::Balance {})),
        )
        .await
        .expect("write");
        within("flush", stream.flush()).await.expect("flush");
        let mut line = Vec::new();
        within(
            "an idle connection answers",
            stream.read_until(b'\n', &mut line),
        )
        .await
        .expect("read");
        let reply = Reply::decode(line.trim_ascii_end()).expect("reply");
        assert!(reply.ok, "idle connection {i}: {reply:?}");
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_close = vm_rss_kib(proc.pid());
    println!(
        "{count} idle authenticated connections opened in {opened_in:?}; server RSS {before} KiB -> {after} KiB \
         ({per_connection:.1} KiB per idle connection; peak {} KiB; {after_close} KiB after closing them); \
         a new client was answered in {probe_took:?} meanwhile",
        vm_hwm_kib(proc.pid())
    );
    assert!(
        per_connection < 512.0,
        "{per_connection} KiB per idle connection"
    );
}
}

// ---------------------------------------------------------------------
// The peer listener
// ---------------------------------------------------------------------

struct Serving {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), person::PeerError>>,
    listen: SocketAddr,
}

async fn go_online(person: Arc<Person>, server: &TestServer, limits: ServerLimits) -> Serving {
    let (events_tx, mut events) = mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        server: server.addr_string(),
        limits,
        reconnect: micropay::person::Reconnect::default(),
        channels_dir: None,
        log_state: None,
    };
    let task = tokio::spawn(person::serve(person, options, events_tx, async move {
        let _ = stop_rx.await;
    }));
    let listen = match within("online", events.recv()).await {
        Some(ServeEvent::Online { listen, .. }) => listen.parse().expect("listen address"),
        other => panic!("expected to go online, got {other:?}"),
    };
    // Later events are not needed; keep the channel drained.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Serving { stop, task, listen }
}

impl Serving {
    async fn stop(self) {
        let _ = self.stop.send(());
        within("serve stops", self.task)
            .await
            .expect("serve task")
            .expect("serve ends cleanly");
    }
}

fn pay_line(id: u64, payment: &SignedPayment) -> Vec<u8> {
    let request = PeerRequest::Pay {
        payment: PaymentJson::from(payment),
    };
    let mut line = encode_request(id, &request);
    line.pop();
    line
}

backend_test! {
async fn the_peer_listener_has_the_same_protections(backend) {
    let server = server_on(&backend, ServerLimits::default()).await;
    let alice = registered(&server, "alice").await;
    let bob = Arc::new(registered(&server, "bob").await);
    let carol = registered(&server, "carol").await;
    let bob_serves = go_online(
        bob.clone(),
        &server,
        limits(|l| {
            l.handshake_timeout_ms = 1_000;
            l.idle_timeout_ms = 5_000;
        }),
    )
    .await;
    let listen = bob_serves.listen;
    let mut rng = seeded_rng();

    // Garbage before the handshake, and no certificate at all.
    for bytes in [
        random_bytes(&mut rng, 4096),
        b"GET / HTTP/1.1\r\nHost: bob\r\n\r\n".to_vec(),
        vec![0x16, 0x03, 0x01, 0x02, 0x00],
    ] {
        let mut tcp = within("connect", TcpStream::connect(listen))
            .await
            .expect("connect to the listener");
        let _ = tcp.write_all(&bytes).await;
        closed_within(&mut tcp, STEP, "garbage to the listener").await;
    }
    assert_locked_out(
        listen,
        "bob",
        anonymous_config(&server.pki),
        "no certificate to bob",
    )
    .await;

    // An oversize line: too_large, then the connection closes.
    let mut raw = Raw::open_at(listen, "bob", &alice).await;
    let reply = raw.ask(&vec![b'x'; FRAME_BYTES_MAX + 1]).await;
    assert_eq!(reply_code(&reply), ErrorCode::TooLarge, "{reply:?}");
    raw.closed_within(STEP, "listener after too_large").await;

    let mut refused = Vec::new();
    // A payment for carol handed to bob.
    let mut raw = Raw::open_at(listen, "bob", &alice).await;
    let for_carol = signed(&alice, "carol", 100, "not bob's");
    let reply = raw.ask(&pay_line(1, &for_carol)).await;
    assert_eq!(reply_code(&reply), ErrorCode::Forbidden, "{reply:?}");
    refused.push(for_carol.payment.id);
    // Garbage and other ops on the listener: bad_request, the connection goes on.
    let reply = raw.ask(b"{\"id\":2,\"op\":\"balance\"}").await;
    assert_eq!(reply_code(&reply), ErrorCode::BadRequest, "{reply:?}");
    let reply = raw.ask(b"\xff\xfe not json").await;
    assert_eq!(reply_code(&reply), ErrorCode::BadRequest, "{reply:?}");
    // A bad signature.
    let mut forged = signed(&alice, "bob", 100, "");
    forged.signature[0] ^= 1;
    let reply = raw.ask(&pay_line(3, &forged)).await;
    assert_eq!(reply_code(&reply), ErrorCode::BadSignature, "{reply:?}");
    refused.push(forged.payment.id);
    // A changed amount.
    let mut changed = signed(&alice, "bob", 1, "");
    changed.payment.amount_minor = 1000;
    let reply = raw.ask(&pay_line(4, &changed)).await;
    assert_eq!(reply_code(&reply), ErrorCode::BadSignature, "{reply:?}");
    refused.push(changed.payment.id);

    // Carol hands bob a genuine payment of alice's: the certificate on the
    // connection is not the payer's.
    let mut raw = Raw::open_at(listen, "bob", &carol).await;
    let alices = signed(&alice, "bob", 100, "");
    let reply = raw.ask(&pay_line(1, &alices)).await;
    assert_eq!(reply_code(&reply), ErrorCode::Forbidden, "{reply:?}");
    refused.push(alices.payment.id);
    // Nor can carol sign in alice's name.
    let mut impostor = Payment {
        id: PaymentId::random(),
        payer: alice.name.clone(),
        payee: name("bob"),
        amount_minor: 100,
        expires_at_s: now_s() + 120,
        memo: String::new(),
    }
    .sign(&carol.key);
    let reply = raw.ask(&pay_line(2, &impostor)).await;
    assert_eq!(reply_code(&reply), ErrorCode::Forbidden, "{reply:?}");
    impostor.payment.payer = carol.name.clone();
    impostor.signature = impostor.payment.clone().sign(&alice.key).signature;
    let reply = raw.ask(&pay_line(3, &impostor)).await;
    assert_eq!(reply_code(&reply), ErrorCode::BadSignature, "{reply:?}");
    refused.push(impostor.payment.id);

    // Nothing settled.
    let alice_link = link(&alice, &server).await;
    for id in &refused {
        let status = within(
            "status",
            alice_link.call::<serde_json::Value>(&ServerRequest::Status {
                payment_id: id.to_hex(),
            }),
        )
        .await;
        assert_eq!(code(status), ErrorCode::NotFound, "payment {id}");
    }
    assert_eq!(balance(&alice_link).await, GRANT);
    assert_eq!(served(&server, &bob).await, GRANT);
    assert_eq!(served(&server, &carol).await, GRANT);

    // The listener still takes a genuine payment.
    let mut options = SendOptions::new(&server.addr_string(), name("bob"), 25);
    options.timeout_ms = 10_000;
    let sent = within("send", person::send(&alice, &options))
        .await
        .expect("a genuine payment goes through");
    assert_eq!(sent.balance, GRANT - 25);
    assert_eq!(served(&server, &bob).await, GRANT + 25);
    bob_serves.stop().await;
}
}

backend_test! {
/// Issue 11: a payment that reaches a payee whose server is away is
/// refused at once with `unavailable` (nothing was paid), not left
/// hanging; and stopping `serve` while it reconnects ends it cleanly.
async fn a_payment_while_the_server_is_away_is_refused_as_unavailable(backend) {
    let server = server_on(&backend, ServerLimits::default()).await;
    let alice = registered(&server, "alice").await;
    let bob = Arc::new(registered(&server, "bob").await);
    let bob_serves = go_online(bob.clone(), &server, ServerLimits::default()).await;
    let listen = bob_serves.listen;
    within("server stops", common::shutdown_and_audit(server)).await;

    let mut raw = Raw::open_at(listen, "bob", &alice).await;
    let payment = signed(&alice, "bob", 100, "while away");
    let reply = raw.ask(&pay_line(1, &payment)).await;
    assert_eq!(reply_code(&reply), ErrorCode::Unavailable, "{reply:?}");
    bob_serves.stop().await;
}
}

// ---------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------

fn past() -> Validity {
    let now = OffsetDateTime::now_utc();
    Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    }
}

fn future() -> Validity {
    let now = OffsetDateTime::now_utc();
    Validity {
        not_before: now + time::Duration::days(1),
        not_after: now + time::Duration::days(10),
    }
}

/// A client configuration that trusts `pki`'s CA (so it verifies the
/// server) and presents `pem`.
fn config_presenting(pki: &TestPki, pem: &micropay::certs::CertifiedPem) -> Arc<ClientConfig> {
    let material =
        Material::from_pem(&pki.ca.pem.cert_pem, &pem.cert_pem, &pem.key_pem).expect("material");
    tls::client_config(&material).expect("client config")
}

backend_test! {
async fn strangers_cannot_do_anything(backend) {
    let server = server_on(&backend, ServerLimits::default()).await;
    let pki = server.pki.clone();
    let alice = registered(&server, "alice").await;
    let bob = registered(&server, "bob").await;
    let addr = server.addr();

    assert_locked_out(addr, "localhost", anonymous_config(&pki), "no certificate").await;
    let foreign = TestPki::new().expect("another PKI");
    for who in ["mallory", "alice"] {
        let pem = foreign.person(who).expect("foreign certificate");
        assert_locked_out(
            addr,
            "localhost",
            config_presenting(&pki, &pem),
            "a foreign CA",
        )
        .await;
    }
    for (who, validity, what) in [
        ("eve", past(), "expired"),
        ("eve", future(), "not yet valid"),
        ("alice", past(), "expired alice"),
    ] {
        let pem = pki
            .ca
            .issue_person(&name(who), KeyType::Ed25519, validity)
            .expect("certificate");
        assert_locked_out(addr, "localhost", config_presenting(&pki, &pem), what).await;
    }

    // A valid certificate for alice with another key: key_mismatch for
    // everything, registering again included.
    let other_alice = person_from(
        &pki,
        &pki.person("alice").expect("second alice certificate"),
    );
    let l = link(&other_alice, &server).await;
    let theft = signed(&other_alice, "bob", 500, "");
    let attempts: Vec<(&str, ServerRequest)> = vec![
        ("register", ServerRequest::Register {}),
        ("balance", ServerRequest::Balance {}),
        ("list", ServerRequest::List {}),
        (
            "history",
            ServerRequest::History {
                limit: None,
                before_seq: None,
            },
        ),
        ("locate", ServerRequest::Locate { name: "bob".into() }),
        (
            "online",
            ServerRequest::Online {
                port: 9,
                address: None,
            },
        ),
        ("offline", ServerRequest::Offline {}),
        (
            "status",
            ServerRequest::Status {
                payment_id: PaymentId::random().to_hex(),
            },
        ),
        (
            "settle",
            ServerRequest::Settle {
                payment: PaymentJson::from(&theft),
            },
        ),
    ];
    for (what, request) in attempts {
        let result = within(what, l.call::<serde_json::Value>(&request)).await;
        assert_eq!(code(result), ErrorCode::KeyMismatch, "{what}");
    }
    // Bob cannot cash it either: it is not signed with alice's registered key.
    let bob_link = link(&bob, &server).await;
    assert_eq!(
        code(settle(&bob_link, PaymentJson::from(&theft)).await),
        ErrorCode::BadSignature
    );

    // Nothing happened: balances untouched, alice not online, eve and
    // mallory never registered.
    let alice_link = link(&alice, &server).await;
    let listing: Listing = within("list", alice_link.call(&ServerRequest::List {}))
        .await
        .expect("list");
    assert_eq!(listing.balance, GRANT);
    assert_eq!(listing.online_count, 0);
    assert_eq!(balance(&bob_link).await, GRANT);
    for who in ["eve", "mallory"] {
        registered(&server, who).await;
    }
}
}

backend_test! {
async fn a_registered_peer_cannot_settle_what_is_not_its_own(backend) {
    let server = server_on(&backend, ServerLimits::default()).await;
    let alice = registered(&server, "alice").await;
    let bob = registered(&server, "bob").await;
    let carol = registered(&server, "carol").await;
    let (a, b, c) = (
        link(&alice, &server).await,
        link(&bob, &server).await,
        link(&carol, &server).await,
    );
    let payment = signed(&alice, "bob", 300, "rent");
    let json = PaymentJson::from(&payment);

    // Not addressed to carol.
    assert_eq!(code(settle(&c, json.clone()).await), ErrorCode::Forbidden);
    // A changed amount (or payee) no longer verifies, before and after.
    let mut more = json.clone();
    more.amount = 3000;
    assert_eq!(
        code(settle(&b, more.clone()).await),
        ErrorCode::BadSignature
    );
    assert_eq!(
        code(settle(&a, more.clone()).await),
        ErrorCode::BadSignature
    );
    let mut to_carol = json.clone();
    to_carol.payee = "carol".into();
    assert_eq!(
        code(settle(&c, to_carol.clone()).await),
        ErrorCode::BadSignature
    );
    // Carol cannot sign for alice.
    let forged = Payment {
        payee: name("carol"),
        ..payment.payment.clone()
    }
    .sign(&carol.key);
    assert_eq!(
        code(settle(&c, PaymentJson::from(&forged)).await),
        ErrorCode::BadSignature
    );
    for (l, expected) in [(&a, GRANT), (&b, GRANT), (&c, GRANT)] {
        assert_eq!(balance(l).await, expected);
    }

    // Bob settles it once; every replay answers the same receipt and moves nothing.
    let first = settle(&b, json.clone()).await.expect("bob settles");
    let mut replays = Vec::new();
    for _ in 0..10 {
        replays.push(
            b.send(&ServerRequest::Settle {
                payment: json.clone(),
            })
            .await
            .expect("send"),
        );
    }
    for rx in replays {
        let reply = within("replay", rx).await.expect("reply");
        let again: Settled = reply.into_result().expect("a replay answers the receipt");
        assert_eq!(again.receipt, first.receipt);
    }
    let by_payer = settle(&a, json.clone())
        .await
        .expect("alice submits it too");
    assert_eq!(by_payer.receipt, first.receipt);
    assert_eq!(code(settle(&c, json.clone()).await), ErrorCode::Forbidden);
    assert_eq!(code(settle(&b, more).await), ErrorCode::BadSignature);
    assert_eq!(code(settle(&c, to_carol).await), ErrorCode::BadSignature);
    let status = within(
        "status",
        c.call::<serde_json::Value>(&ServerRequest::Status {
            payment_id: payment.payment.id.to_hex(),
        }),
    )
    .await;
    assert_eq!(code(status), ErrorCode::NotFound);
    for (l, expected) in [(&a, GRANT - 300), (&b, GRANT + 300), (&c, GRANT)] {
        assert_eq!(balance(l).await, expected);
    }

    drop((a, b, c));
    let TestServer { running, db, .. } = server;
    running.shutdown().await.expect("clean shutdown");
    let report = common::audit(&db).await;
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.payments, 1, "money moved exactly once");
    assert_eq!(report.total_balances, report.total_granted);
}
}

backend_test! {
/// Issue 10, item 2: a registered peer pipelining huge `history` replies
/// and never reading them pins a bounded amount of server memory: one
/// barrier request at a time and a per-connection reply byte budget.
async fn unread_large_replies_pin_bounded_memory(backend) {
    const CONNECTIONS: usize = 4;
    const PAGES: u64 = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    pki.write_to(dir.path(), &[]).expect("certificates written");
    let (db, _pg) = binary_db(&backend, dir.path()).await;
    let (proc, addr) = cli_support::start_server(
        dir.path(),
        &db,
        &dir.path().join("addr"),
        &dir.path().join("server.log"),
        &[("RUST_LOG", None)],
        &["-q"],
    );
    let alice = person(&pki, "alice");
    let bob = person(&pki, "bob");
    let mut links = Vec::new();
    for p in [&alice, &bob] {
        let l = within("connect", p.connect_server(&addr))
            .await
            .expect("connect");
        let _: Registered = within("register", l.call(&ServerRequest::Register {}))
            .await
            .expect("register");
        links.push(l);
    }
    // 500 payments with the longest memos: a 500-entry page is ~0.5 MB.
    let memo = "\u{1}".repeat(140);
    let pending: Vec<_> = (0..500)
        .map(|_| ServerRequest::Settle {
            payment: PaymentJson::from(&signed(&alice, "bob", 1, &memo)),
        })
        .collect();
    let mut replies = Vec::new();
    for r in &pending {
        replies.push(links[0].send(r).await.expect("queue settle"));
    }
    for r in replies {
        let reply = within("settle reply", r).await.expect("reply");
        assert!(reply.ok, "{reply:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = vm_rss_kib(proc.pid());
    let page = encode_request(
        0,
        &ServerRequest::History {
            limit: Some(500),
            before_seq: None,
        },
    );
    let mut attackers = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut raw = Raw::open_at(addr.parse().expect("addr"), "localhost", &bob).await;
        let lines: Vec<u8> = (0..PAGES).flat_map(|_| page.clone()).collect();
        // The server stops reading once its budget is full; what does
        // not fit in the socket buffers may never be written.
        let _ = tokio::time::timeout(Duration::from_secs(2), raw.stream.write_all(&lines)).await;
        attackers.push(raw);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = vm_rss_kib(proc.pid());
    let grown_kib = after.saturating_sub(before);
    println!("server RSS {before} KiB -> {after} KiB with {CONNECTIONS} unread connections");
    assert!(
        grown_kib < 64 * 1024,
        "{CONNECTIONS} unread connections pinned {grown_kib} KiB"
    );
    // The server still answers everyone else at once.
    let b = within(
        "probe balance",
        links[0].call::<Balance>(&ServerRequest::Balance {}),
    )
    .await
    .expect("balance");
    assert_eq!(b.balance, GRANT - 500);
    drop(attackers);
}
}
