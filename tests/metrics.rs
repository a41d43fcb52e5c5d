//! The Prometheus metrics (issue 15): a real server with metrics on takes
//! a short, bounded load, and a scrape read with a real Prometheus
//! text-format parser (`prometheus-parse`) must count exactly what the
//! test did. Then the metrics listener's bounds, and the negative cases:
//! off by default (nothing listens), a non-loopback or bad address is a
//! clear start-up error.

#[macro_use]
mod common;
mod cli_support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{person, signed_payment, Backend, TestPki, TestServer, GRANT};
use micropay::core::limits::{METRICS_CONNECTIONS_MAX, METRICS_REQUEST_HEAD_BYTES_MAX};
use micropay::metrics::http::MetricsError;
use micropay::net::link::{CallError, Link};
use micropay::server::{self, MetricsOptions, ServerError, ServerLimits};
use micropay::wire::{ErrorCode, PaymentJson, Registered, ServerRequest, Settled};

/// The longest any one step of these tests may take.
const STEP: Duration = Duration::from_secs(20);

/// How many times a test reads the metrics while waiting for something
/// the server does after the client has seen its effect (a closed socket).
const POLLS_MAX: usize = 500;

/// Every label the metrics use: all with values we fixed.
const LABEL_KEYS: [&str; 4] = ["outcome", "result", "version", "le"];

/// A memo no metric may ever show.
const MEMO: &str = "memo-never-in-metrics";

fn loopback_any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A server on a fresh ledger of `backend` with its metrics listener on.
async fn start_with_metrics(backend: &Backend, limits: ServerLimits) -> TestServer {
    let pki = common::pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, pg) = backend.fresh_db(dir.path()).await;
    let options = common::server_options(&pki, db.clone(), limits);
    let metrics = MetricsOptions {
        listen: loopback_any_port(),
        allow_non_loopback: false,
    };
    let running = server::spawn_with(loopback_any_port(), options, Some(metrics))
        .await
        .expect("server starts");
    TestServer {
        running,
        pki,
        db,
        dir,
        pg: pg.map(Arc::new),
    }
}

/// `GET path` on the metrics listener: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    request(addr, "GET", path, &[]).await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.expect("connects");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::<Bytes>::new()).expect("request");
        let response = sender.send_request(request).await.expect("a response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body");
        let text = String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8 body");
        (status, text)
    };
    tokio::time::timeout(STEP, exchange)
        .await
        .expect("the metrics listener answers in time")
}

/// Scrapes `/metrics` and parses it with `prometheus-parse`.
async fn scrape(addr: SocketAddr) -> (Scrape, String) {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    (parsed, text)
}

/// The value of the one sample named `metric` whose labels include
/// `label` (if given); `None` when there is none.
fn value(scrape: &Scrape, metric: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let mut found = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
    let sample = found.next()?;
    assert!(found.next().is_none(), "{metric} {label:?} is not unique");
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
        other => panic!("{metric} is not a single number: {other:?}"),
    }
}

#[track_caller]
fn assert_value(scrape: &Scrape, metric: &str, label: Option<(&str, &str)>, want: f64) {
    assert_eq!(
        value(scrape, metric, label),
        Some(want),
        "{metric} {label:?}"
    );
}

fn outcome(code: &str) -> Option<(&str, &str)> {
    Some(("outcome", code))
}

async fn settle(link: &Link, payment: PaymentJson) -> Result<Settled, CallError> {
    link.call::<Settled>(&ServerRequest::Settle { payment })
        .await
}

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, CallError>, want: ErrorCode) {
    match result {
        Err(CallError::Refused(e)) => assert_eq!(e.code, want, "{e}"),
        other => panic!("expected {want}, got {other:?}"),
    }
}

/// Reads the metrics until `done` holds, at most [`POLLS_MAX`] times.
async fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..POLLS_MAX {
        let (parsed, _) = scrape(addr).await;
        if done(&parsed) {
            return parsed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the metrics never showed {what}");
}

/// The load: three registrations, four payments, a replay and one
/// refusal of each of six codes; people online: one; four connections,
/// with a fifth refused. Returns the links, still open.
async fn load(server: &TestServer) -> Vec<Link> {
    let pki: &TestPki = &server.pki;
    let (alice, bob, carol, dave) = (
        person(pki, "alice"),
        person(pki, "bob"),
        person(pki, "carol"),
        person(pki, "dave"),
    );
    let mut links = Vec::new();
    for p in [&alice, &bob, &carol] {
        let link = common::link(p, server).await;
        link.call::<Registered>(&ServerRequest::Register {})
            .await
            .expect("registers");
        links.push(link);
    }
    let dave_link = common::link(&dave, server).await;
    let (a, b, c) = (&links[0], &links[1], &links[2]);
    b.call::<serde_json::Value>(&ServerRequest::Online {
        port: 4242,
        address: None,
    })
    .await
    .expect("bob goes online");
    let first = signed_payment(&alice, "bob", 10, MEMO);
    let settled = settle(a, PaymentJson::from(&first)).await.expect("settles");
    assert!(!settled.replay);
    for _ in 0..3 {
        let p = signed_payment(&alice, "bob", 10, MEMO);
        settle(a, PaymentJson::from(&p)).await.expect("settles");
    }
    let again = settle(b, PaymentJson::from(&first)).await.expect("replay");
    assert!(again.replay, "the same payment again is a replay");
    let too_much = signed_payment(&alice, "bob", GRANT * 10, MEMO);
    refused(
        settle(a, PaymentJson::from(&too_much)).await,
        ErrorCode::InsufficientFunds,
    );
    let to_nobody = signed_payment(&alice, "zed", 5, MEMO);
    refused(
        settle(a, PaymentJson::from(&to_nobody)).await,
        ErrorCode::UnknownPayee,
    );
    // Claims to be from alice, signed with bob's key.
    let mut forged = PaymentJson::from(&signed_payment(&bob, "alice", 5, MEMO));
    forged.payer = "alice".into();
    forged.payee = "bob".into();
    refused(settle(b, forged).await, ErrorCode::BadSignature);
    let not_carols = signed_payment(&alice, "bob", 5, MEMO);
    refused(
        settle(c, PaymentJson::from(&not_carols)).await,
        ErrorCode::Forbidden,
    );
    let from_dave = signed_payment(&dave, "bob", 5, MEMO);
    refused(
        settle(&dave_link, PaymentJson::from(&from_dave)).await,
        ErrorCode::NotRegistered,
    );
    links.push(dave_link);
    // Every connection slot is taken now: eve's connection is closed.
    let eve = person(pki, "eve");
    assert!(
        eve.connect_server(&server.addr_string()).await.is_err(),
        "a fifth connection is refused"
    );
    links
}

backend_test! {
    async fn the_metrics_count_exactly_what_the_server_did(backend) {
        let limits = ServerLimits {
            connections_max: 4,
            ..ServerLimits::default()
        };
        let server = start_with_metrics(&backend, limits).await;
        let metrics = server.running.metrics_addr.expect("metrics are served");
        let mut links = load(&server).await;
        let (parsed, text) = scrape(metrics).await;

        let settlements = "micropay_settlements_total";
        assert_value(&parsed, settlements, outcome("settled"), 4.0);
        assert_value(&parsed, settlements, outcome("replay"), 1.0);
        for code in ["insufficient_funds", "unknown_payee", "bad_signature", "forbidden", "not_registered"] {
            assert_value(&parsed, settlements, outcome(code), 1.0);
        }
        let counted: HashSet<_> = parsed
            .samples
            .iter()
            .filter(|s| s.metric == settlements)
            .filter(|s| !matches!(s.value, Value::Counter(v) if v == 0.0))
            .filter_map(|s| s.labels.get("outcome"))
            .collect();
        assert_eq!(counted.len(), 7, "no other outcome was counted: {counted:?}");
        assert_value(&parsed, "micropay_settlement_duration_seconds_count", None, 10.0);
        // Into the ledger: three registrations, four payments, the replay,
        // and the two refusals the ledger decides (funds, unknown payee).
        assert_value(&parsed, "micropay_commit_batch_commands_sum", None, 10.0);
        let batches = value(&parsed, "micropay_commit_batch_commands_count", None).expect("batches");
        assert!((1.0..=10.0).contains(&batches), "{batches} commits");
        assert_value(&parsed, "micropay_commit_duration_seconds_count", None, batches);
        assert_value(&parsed, "micropay_ledger_queue_depth", None, 0.0);
        assert_value(&parsed, "micropay_people_online", None, 1.0);
        assert_value(&parsed, "micropay_connections_open", None, 4.0);
        assert_value(&parsed, "micropay_connections_refused_total", None, 1.0);
        assert_value(&parsed, "micropay_tls_handshakes_total", Some(("result", "ok")), 4.0);
        assert_value(&parsed, "micropay_tls_handshakes_total", Some(("result", "failed")), 0.0);
        let version = env!("CARGO_PKG_VERSION");
        assert_value(&parsed, "micropay_build_info", Some(("version", version)), 1.0);
        // Nothing a peer chose appears: labels are only our fixed names.
        assert!(!text.contains(MEMO), "the metrics show a memo:\n{text}");
        assert!(!text.contains("127.0.0.1"), "the metrics show an address:\n{text}");
        for sample in &parsed.samples {
            for (key, label) in sample.labels.iter() {
                assert!(LABEL_KEYS.contains(&key.as_str()), "label {key} on {}", sample.metric);
                for name in ["alice", "bob", "carol", "dave", "eve", "zed"] {
                    assert!(!label.contains(name), "{}{{{key}={label:?}}}", sample.metric);
                }
            }
        }

        // A connection ends: the gauge follows. A client that is not TLS
        // at all: a failed handshake.
        drop(links.pop());
        scrape_until(metrics, "three connections", |s| {
            value(s, "micropay_connections_open", None) == Some(3.0)
        })
        .await;
        let mut not_tls = TcpStream::connect(server.addr()).await.expect("connects");
        not_tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("writes");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STEP, not_tls.read_to_end(&mut rest)).await;
        let failed = Some(("result", "failed"));
        scrape_until(metrics, "a failed handshake", |s| {
            value(s, "micropay_tls_handshakes_total", failed) == Some(1.0)
        })
        .await;
        drop(links);
        common::shutdown_and_audit(server).await;
    }
}

#[tokio::test]
async fn the_metrics_listener_serves_only_metrics_and_is_bounded() {
    let server = start_with_metrics(&Backend::Sqlite, ServerLimits::default()).await;
    let metrics = server.running.metrics_addr.expect("metrics are served");
    let (status, _) = get(metrics, "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(metrics, "/metrics/more").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = request(metrics, "POST", "/metrics", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let big = "x".repeat(METRICS_REQUEST_HEAD_BYTES_MAX);
    let (status, _) = request(metrics, "GET", "/metrics", &[("x-big", &big)]).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Every slot taken by a silent connection: one more gets no answer,
    // where a free slot would have answered 200.
    let mut idle = Vec::new();
    for _ in 0..METRICS_CONNECTIONS_MAX {
        idle.push(TcpStream::connect(metrics).await.expect("connects"));
    }
    let mut extra = TcpStream::connect(metrics).await.expect("connects");
    let _ = extra
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(STEP, extra.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection over the cap is closed");
    assert!(answer.is_empty(), "over the cap, no answer: {answer:?}");
    // A silent connection does not stay: the server closes it.
    let mut silent = idle.pop().expect("one idle connection");
    let mut nothing = Vec::new();
    let read = tokio::time::timeout(STEP, silent.read_to_end(&mut nothing)).await;
    assert!(
        read.is_ok(),
        "a silent metrics connection is closed in time"
    );
    drop(idle);
    // Slots free again: metrics are served.
    scrape_until(metrics, "an answer once slots are free", |_| true).await;
    common::shutdown_and_audit(server).await;
}

#[tokio::test]
async fn a_non_loopback_metrics_address_is_refused_unless_allowed() {
    let pki = common::pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        common::server_options(&pki, dir.path().join("ledger.db"), ServerLimits::default());
    let metrics = MetricsOptions {
        listen: "0.0.0.0:0".parse().expect("addr"),
        allow_non_loopback: false,
    };
    let refused = server::spawn_with(loopback_any_port(), options, Some(metrics)).await;
    assert!(
        matches!(
            refused,
            Err(ServerError::Metrics(MetricsError::NotLoopback(_)))
        ),
        "{:?}",
        refused.err()
    );
}

/// The sockets `pid` listens on (Linux: its socket inodes in LISTEN state
/// in /proc/net/tcp and tcp6).
#[cfg(target_os = "linux")]
fn listening_sockets(pid: u32) -> usize {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds") {
        let target = std::fs::read_link(fd.expect("fd").path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Field 3 is the state (0A: LISTEN), field 9 the inode.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                count += 1;
            }
        }
    }
    count
}

fn certs_for_cli(dir: &Path) {
    cli_support::make_certs(&dir.join("certs"), &["alice"]);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn metrics_are_off_by_default_and_on_with_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs_for_cli(dir.path());
    let (certs, ready, log) = (
        dir.path().join("certs"),
        dir.path().join("ready"),
        dir.path().join("log"),
    );
    let (plain, _) =
        cli_support::start_server(&certs, &dir.path().join("a.db"), &ready, &log, &[], &[]);
    assert_eq!(
        listening_sockets(plain.pid()),
        1,
        "without --metrics-listen only the server listens"
    );
    drop(plain);

    let metrics_ready = dir.path().join("metrics-ready");
    let metrics_ready_arg = metrics_ready.to_string_lossy().into_owned();
    let args = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--metrics-ready-file",
        &metrics_ready_arg,
    ];
    let (observed, _) =
        cli_support::start_server(&certs, &dir.path().join("b.db"), &ready, &log, &[], &args);
    assert_eq!(
        listening_sockets(observed.pid()),
        2,
        "with --metrics-listen, metrics listen too"
    );
    let addr: SocketAddr = std::fs::read_to_string(&metrics_ready)
        .expect("the metrics ready file")
        .trim()
        .parse()
        .expect("an address");
    let (parsed, _) = scrape(addr).await;
    let version = env!("CARGO_PKG_VERSION");
    assert_value(
        &parsed,
        "micropay_build_info",
        Some(("version", version)),
        1.0,
    );
    assert_value(&parsed, "micropay_connections_open", None, 0.0);
    drop(observed);
}

#[test]
fn a_bad_metrics_address_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs_for_cli(dir.path());
    let certs = dir.path().join("certs");
    let in_use = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = in_use.local_addr().expect("addr").to_string();
    let cases: [(&str, i32, &str); 3] = [
        ("0.0.0.0:9464", 1, "not a loopback address"),
        ("localhost-ish", 2, "--metrics-listen"),
        (&taken, 1, "cannot listen for metrics"),
    ];
    for (addr, code, says) in cases {
        let mut cmd = std::process::Command::new(cli_support::SERVER);
        cmd.arg("--cert")
            .arg(certs.join("server.pem"))
            .arg("--key")
            .arg(certs.join("server.key"))
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--db")
            .arg(dir.path().join("ledger.db"))
            .arg("--metrics-listen")
            .arg(addr);
        let out = cli_support::run(&mut cmd, format!("micropay-server --metrics-listen {addr}"));
        out.expect(code).stderr_has(says);
    }
    drop(in_use);
    // The same rule for a payee's `serve`, checked before it goes online.
    let server = format!("127.0.0.1:{}", cli_support::dead_port());
    let args = ["serve", "--metrics-listen", "0.0.0.0:9464"];
    let mut cmd = cli_support::client("alice", &certs, &server, &args);
    let out = cli_support::run(
        &mut cmd,
        "micropay-client serve --metrics-listen 0.0.0.0:9464",
    );
    out.expect(2).stderr_has("not a loopback address");
    assert!(
        !dir.path().join("ledger.db").exists(),
        "the server stopped before opening its ledger"
    );
}

/// A payee's `serve` running with its metrics served on a loopback port.
struct MeteredServe {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), micropay::person::PeerError>>,
    metrics: SocketAddr,
}

async fn serve_with_metrics(payee: micropay::person::Person, server: &TestServer) -> MeteredServe {
    use micropay::person::{Reconnect, ServeEvent, ServeOptions};
    let metrics = Arc::new(micropay::metrics::PeerMetrics::new());
    let listener = micropay::metrics::http::bind(loopback_any_port(), false)
        .await
        .expect("metrics listener");
    let metrics_addr = listener.local_addr().expect("metrics address");
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(micropay::metrics::http::serve(
        listener,
        metrics.clone(),
        metrics_stopped,
    ));
    let (events_tx, mut events) =
        tokio::sync::mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        listen: loopback_any_port(),
        advertise: None,
        server: server.addr_string(),
        limits: ServerLimits::default(),
        reconnect: Reconnect::default(),
        channels_dir: None,
        log_state: None,
    };
    let task = tokio::spawn(micropay::person::serve_with_metrics(
        Arc::new(payee),
        options,
        metrics,
        events_tx,
        async move {
            let _ = stop_rx.await;
            let _ = stop_metrics.send(true);
        },
    ));
    match tokio::time::timeout(STEP, events.recv()).await {
        Ok(Some(ServeEvent::Online { .. })) => {}
        other => panic!("expected to go online, got {other:?}"),
    }
    // Later events are not needed; keep the channel drained.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    MeteredServe {
        stop,
        task,
        metrics: metrics_addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payees_serve_counts_the_payments_handed_to_it() {
    use micropay::person::{send, SendOptions};
    let server = common::start_server().await;
    let (alice, bob) = (person(&server.pki, "alice"), person(&server.pki, "bob"));
    for p in [&alice, &bob] {
        common::link(p, &server)
            .await
            .call::<Registered>(&ServerRequest::Register {})
            .await
            .expect("registers");
    }
    let bob_name = bob.name.clone();
    let serving = serve_with_metrics(bob, &server).await;
    let pay = |amount: u64| SendOptions {
        memo: MEMO.to_owned(),
        ..SendOptions::new(&server.addr_string(), bob_name.clone(), amount)
    };
    let first = SendOptions {
        retry: Some((
            micropay::core::payment::PaymentId::random(),
            micropay::system::clock::now_s() + 120,
        )),
        ..pay(7)
    };
    send(&alice, &first).await.expect("paid");
    send(&alice, &pay(8)).await.expect("paid");
    send(&alice, &first).await.expect("the same payment again");
    assert!(
        send(&alice, &pay(GRANT * 10)).await.is_err(),
        "more than alice has"
    );

    let (parsed, text) = scrape(serving.metrics).await;
    let payments = "micropay_serve_payments_total";
    assert_value(&parsed, payments, outcome("settled"), 2.0);
    assert_value(&parsed, payments, outcome("replay"), 1.0);
    assert_value(&parsed, payments, outcome("insufficient_funds"), 1.0);
    assert_value(&parsed, "micropay_serve_server_connected", None, 1.0);
    let ok = Some(("result", "ok"));
    assert_value(&parsed, "micropay_serve_tls_handshakes_total", ok, 4.0);
    assert_value(
        &parsed,
        "micropay_serve_connections_refused_total",
        None,
        0.0,
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_value(
        &parsed,
        "micropay_build_info",
        Some(("version", version)),
        1.0,
    );
    for forbidden in ["alice", "bob", MEMO, "127.0.0.1"] {
        assert!(
            !text.contains(forbidden),
            "the metrics show {forbidden:?}:\n{text}"
        );
    }
    let _ = serving.stop.send(());
    tokio::time::timeout(STEP, serving.task)
        .await
        .expect("serve stops")
        .expect("serve task")
        .expect("serve ends cleanly");
    common::shutdown_and_audit(server).await;
}
