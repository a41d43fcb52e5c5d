//! Payment channels through a real server, on both ledgers: `channel_open`
//! places a hold answered by a server-signed receipt, `channel_close` pays
//! exactly the revealed links once, forged links and claims beyond n are
//! refused, and the ledger audits clean with holds.

mod common;

use micropay::core::channel::{
    Chain, ChannelId, Commitment, Link, OpenReceipt, SignedCommitment, SignedOpenReceipt,
};
use micropay::core::keys::SigningKey;
use micropay::core::name::Name;
use micropay::net::link::{CallError, Link as Conn};
use micropay::net::tls::Material;
use micropay::person::Person;
use micropay::wire::{
    Balance, ChannelAck, ChannelClosed, ChannelOpened, CommitmentJson, ErrorCode, History, Listing,
    PeerRequest, Registered, ServerRequest,
};

use common::GRANT;

fn commitment(
    payer: &Person,
    payee: &str,
    links: u64,
    value_minor: u64,
) -> (Chain, SignedCommitment) {
    let id = ChannelId::random();
    let chain = Chain::generate(id, Link::random_secret(), links).expect("in bounds");
    let signed = Commitment {
        id,
        payer: payer.name.clone(),
        payee: Name::parse(payee).expect("valid name"),
        root: chain.root(),
        value_minor,
        links,
        expires_at_s: micropay::system::clock::now_s() + 600,
    }
    .sign(&payer.key);
    (chain, signed)
}

async fn open(link: &Conn, signed: &SignedCommitment) -> Result<ChannelOpened, CallError> {
    link.call::<ChannelOpened>(&ServerRequest::ChannelOpen {
        commitment: CommitmentJson::from(signed),
    })
    .await
}

async fn close(
    link: &Conn,
    chain: &Chain,
    index: u64,
    w: Link,
) -> Result<ChannelClosed, CallError> {
    link.call::<ChannelClosed>(&ServerRequest::ChannelClose {
        channel_id: chain.id().to_hex(),
        index,
        link: w.to_hex(),
    })
    .await
}

fn code(r: Result<impl std::fmt::Debug, CallError>) -> ErrorCode {
    match r {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn balances(link: &Conn) -> (u64, u64) {
    let b: Balance = link
        .call(&ServerRequest::Balance {})
        .await
        .expect("balance");
    (b.balance, b.held)
}

/// alice and bob (shared, for `serve`), registered, with their server
/// connections.
async fn alice_and_bob(
    server: &common::TestServer,
) -> (Person, std::sync::Arc<Person>, Conn, Conn) {
    let alice = common::person(&server.pki, "alice");
    let bob = std::sync::Arc::new(common::person(&server.pki, "bob"));
    let (a, b) = (
        common::link(&alice, server).await,
        common::link(&bob, server).await,
    );
    for link in [&a, &b] {
        link.call::<Registered>(&ServerRequest::Register {})
            .await
            .expect("register");
    }
    (alice, bob, a, b)
}

fn server_key(pki: &common::TestPki) -> SigningKey {
    Material::from_pem(
        &pki.ca.pem.cert_pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
    )
    .expect("server material")
    .signing_key()
    .expect("server key")
}

backend_test! {
    async fn a_channel_opens_pays_the_revealed_links_once_and_audits_clean(backend) {
        let server = common::start_server_on(&backend).await;
        let alice = common::person(&server.pki, "alice");
        let bob = common::person(&server.pki, "bob");
        let (a, b) = (common::link(&alice, &server).await, common::link(&bob, &server).await);
        for link in [&a, &b] {
            link.call::<Registered>(&ServerRequest::Register {}).await.expect("register");
        }
        let (chain, signed) = commitment(&alice, "bob", 100, 3);
        let opened = open(&a, &signed).await.expect("opens");
        assert_eq!((opened.hold, opened.replay), (300, false));
        // The receipt is the server's signature over the open.
        let receipt = SignedOpenReceipt {
            receipt: OpenReceipt {
                id: chain.id(),
                commitment_hash: signed.content_hash(),
                hold_minor: opened.hold,
                opened_at_ms: opened.opened_at_ms,
            },
            signature: hex::decode(&opened.server_signature).expect("hex"),
        };
        let key = server_key(&server.pki);
        assert!(receipt.verify(key.verifying_key(), &signed).is_ok());
        assert_eq!(balances(&a).await, (GRANT - 300, 300));
        let listing: Listing = a.call(&ServerRequest::List {}).await.expect("list");
        assert_eq!((listing.balance, listing.held), (GRANT - 300, 300));
        // Opening it again answers the first open; a forged commitment
        // (signed by bob in alice's name, sent by bob) is refused.
        assert!(open(&a, &signed).await.expect("replays").replay);
        let (_, forged) = commitment(&bob, "alice", 10, 1);
        let mut forged = forged;
        forged.commitment.payer = alice.name.clone();
        assert_eq!(code(open(&b, &forged).await), ErrorCode::Forbidden);
        assert_eq!(code(open(&a, &forged).await), ErrorCode::BadSignature);
        // Closing: only bob; a forged link and a claim beyond n are refused.
        let w = |i| chain.link(i).expect("in bounds");
        assert_eq!(code(close(&a, &chain, 40, w(40)).await), ErrorCode::Forbidden);
        assert_eq!(code(close(&b, &chain, 41, w(40)).await), ErrorCode::BadSignature);
        assert_eq!(code(close(&b, &chain, 101, w(100)).await), ErrorCode::BadRequest);
        let closed = close(&b, &chain, 40, w(40)).await.expect("closes");
        assert_eq!((closed.paid, closed.released, closed.replay), (120, 180, false));
        assert_eq!(balances(&a).await, (GRANT - 120, 0));
        assert_eq!(balances(&b).await, (GRANT + 120, 0));
        let again = close(&b, &chain, 90, w(90)).await.expect("answers");
        assert_eq!((again.paid, again.replay), (120, true));
        // Both see the channel, its open and its close, in their history.
        for link in [&a, &b] {
            let h: History = link
                .call(&ServerRequest::History { limit: None, before_seq: None })
                .await
                .expect("history");
            assert_eq!(h.channels.len(), 1);
            let entry = &h.channels[0];
            assert_eq!(entry.channel_id, chain.id().to_hex());
            assert_eq!((entry.state.as_str(), entry.hold), ("closed", 300));
            assert_eq!((entry.paid, entry.released), (Some(120), Some(180)));
        }
        drop((a, b));
        let report = common::shutdown_and_audit(server).await;
        assert_eq!(report.channels, 1);
    }
}

backend_test! {
    async fn over_balance_opens_are_refused_and_open_holds_audit_clean(backend) {
        let server = common::start_server_on(&backend).await;
        let alice = common::person(&server.pki, "alice");
        let bob = common::person(&server.pki, "bob");
        let (a, b) = (common::link(&alice, &server).await, common::link(&bob, &server).await);
        for link in [&a, &b] {
            link.call::<Registered>(&ServerRequest::Register {}).await.expect("register");
        }
        let (_, over) = commitment(&alice, "bob", GRANT + 1, 1);
        assert_eq!(code(open(&a, &over).await), ErrorCode::InsufficientFunds);
        let (_, to_self) = commitment(&alice, "alice", 1, 1);
        assert_eq!(code(open(&a, &to_self).await), ErrorCode::SelfPayment);
        let (_, held) = commitment(&alice, "bob", 10, 10);
        open(&a, &held).await.expect("opens");
        drop((a, b));
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        let report = common::audit(&db).await;
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.total_held, 100);
        // The expiry instant is derived, not logged: audit checks it (a
        // later one would keep the payer's hold locked past its expiry).
        common::tamper(&db, "UPDATE channels SET expirable_at_ms = expirable_at_ms + 86400000").await;
        let report = common::audit(&db).await;
        assert!(
            report.violations.iter().any(|v| v.contains("stored expiry instant")),
            "{:?}",
            report.violations
        );
        drop((dir, pg));
    }
}

/// Stops the server and audits a ledger that still has open holds.
async fn finish_with_holds(server: common::TestServer) -> micropay::ledger::AuditReport {
    let (db, dir, pg) = common::stop_keeping_ledger(server).await;
    let report = common::audit(&db).await;
    assert!(
        report.violations.is_empty(),
        "audit: {:?}",
        report.violations
    );
    assert_eq!(
        report.total_balances + report.total_held,
        report.total_granted
    );
    drop((dir, pg));
    report
}

struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), micropay::person::PeerError>>,
    listen: String,
}

/// `person` serves with its channels kept in `dir`.
async fn serve(
    person: std::sync::Arc<Person>,
    server: &common::TestServer,
    dir: &std::path::Path,
) -> Serving {
    use micropay::person::{self, ServeEvent, ServeOptions};
    let (events_tx, mut events) =
        tokio::sync::mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        server: server.addr_string(),
        limits: Default::default(),
        reconnect: person::Reconnect::default(),
        channels_dir: Some(dir.to_owned()),
        log_state: None,
    };
    let task = tokio::spawn(person::serve(person, options, events_tx, async move {
        let _ = stop_rx.await;
    }));
    let listen = match events.recv().await {
        Some(ServeEvent::Online { listen, .. }) => listen,
        other => panic!("expected to go online, got {other:?}"),
    };
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Serving { stop, task, listen }
}

impl Serving {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("serve task")
            .expect("serve ends cleanly");
    }
}

async fn offer(
    peer: &Conn,
    signed: &SignedCommitment,
    opened: &ChannelOpened,
) -> Result<ChannelAck, CallError> {
    peer.call(&PeerRequest::ChannelOffer {
        commitment: CommitmentJson::from(signed),
        open_receipt: opened.clone(),
    })
    .await
}

async fn pay(peer: &Conn, chain: &Chain, index: u64, w: Link) -> Result<ChannelAck, CallError> {
    peer.call(&PeerRequest::ChannelPay {
        channel_id: chain.id().to_hex(),
        index,
        link: w.to_hex(),
    })
    .await
}

async fn connect_payee(payer: &Person, serving: &Serving, payee: &str) -> Conn {
    Conn::connect(&serving.listen, payee, payer.payer_config(), 10_000)
        .await
        .expect("connects to the payee")
}

backend_test! {
    async fn a_payee_checks_stores_and_closes_its_channels_without_losing_a_link(backend) {
        let server = common::start_server_on(&backend).await;
        let (alice, bob, a, b) = alice_and_bob(&server).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let serving = serve(bob.clone(), &server, dir.path()).await;
        // Channel A lasts ten minutes: serve does not close it yet.
        let (chain, signed) = commitment(&alice, "bob", 100, 2);
        let opened = open(&a, &signed).await.expect("opens");
        let peer = connect_payee(&alice, &serving, "bob").await;
        assert_eq!(offer(&peer, &signed, &opened).await.expect("offer").index, 0);
        let w = |i| chain.link(i).expect("in bounds");
        assert_eq!(pay(&peer, &chain, 3, w(3)).await.expect("pays").index, 3);
        assert_eq!(pay(&peer, &chain, 10, w(10)).await.expect("pays 7 at once").index, 10);
        // A link revealed twice, or an older genuine one, pays nothing
        // again: the answer is the index held.
        assert_eq!(pay(&peer, &chain, 10, w(10)).await.expect("held").index, 10);
        assert_eq!(pay(&peer, &chain, 4, w(4)).await.expect("held").index, 10);
        // An older index with a link not of the chain, a wrong preimage,
        // beyond n: refused.
        assert_eq!(code(pay(&peer, &chain, 4, w(5)).await), ErrorCode::BadSignature);
        assert_eq!(code(pay(&peer, &chain, 12, w(11)).await), ErrorCode::BadSignature);
        assert_eq!(code(pay(&peer, &chain, 101, w(100)).await), ErrorCode::BadSignature);
        // A forged receipt is refused.
        let mut forged = opened.clone();
        forged.hold += 1;
        let (_, other) = commitment(&alice, "bob", 5, 1);
        assert_eq!(code(offer(&peer, &other, &forged).await), ErrorCode::Forbidden);
        // The payee restarts: every acknowledged link is still held.
        drop(peer);
        serving.stop().await;
        let serving = serve(bob.clone(), &server, dir.path()).await;
        let peer = connect_payee(&alice, &serving, "bob").await;
        assert_eq!(pay(&peer, &chain, 10, w(10)).await.expect("held").index, 10);
        assert_eq!(pay(&peer, &chain, 12, w(12)).await.expect("goes on").index, 12);
        // Channel B expires within serve's margin: serve closes it by
        // itself once it holds a paid link.
        let (chain_b, signed_b) = {
            let id = ChannelId::random();
            let chain = Chain::generate(id, Link::random_secret(), 10).expect("in bounds");
            let signed = Commitment {
                id,
                payer: alice.name.clone(),
                payee: Name::parse("bob").expect("valid"),
                root: chain.root(),
                value_minor: 5,
                links: 10,
                expires_at_s: micropay::system::clock::now_s() + 60,
            }
            .sign(&alice.key);
            (chain, signed)
        };
        let opened_b = open(&a, &signed_b).await.expect("opens");
        offer(&peer, &signed_b, &opened_b).await.expect("offer");
        pay(&peer, &chain_b, 4, chain_b.link(4).expect("in bounds")).await.expect("pays");
        let mut closed = false;
        for _ in 0..400 {
            if balances(&b).await.0 == GRANT + 20 {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(closed, "serve closed channel B by itself");
        assert_eq!(balances(&a).await, (GRANT - 200 - 20, 200));
        drop(peer);
        serving.stop().await;
        drop((a, b));
        let report = finish_with_holds(server).await;
        assert_eq!((report.channels, report.total_held), (2, 200));
    }
}

backend_test! {
    async fn a_payee_stopped_in_the_middle_of_a_pipelined_stream_loses_no_acknowledged_unit(backend) {
        use micropay::person::channel_payee::PayeeChannels;
        use micropay::person::channel_payer::PayerChannel;
        let server = common::start_server_on(&backend).await;
        let (alice, bob, a, b) = alice_and_bob(&server).await;
        let (dir, payer_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let serving = serve(bob.clone(), &server, dir.path()).await;
        let expires_at_s = micropay::system::clock::now_s() + 600;
        let terms = (bob.name.clone(), GRANT, 1, expires_at_s);
        let mut channel = PayerChannel::open(&alice, &a, terms, payer_dir.path()).await.expect("opens");
        let peer = connect_payee(&alice, &serving, "bob").await;
        channel.offer(&peer).await.expect("offered");
        assert_eq!(channel.pay_pipelined(&peer, 1, 500, 64).await.expect("streams"), 500);
        // The payee stops while thousands of one-unit messages are in
        // flight: whatever was acknowledged must be on its disk.
        let stopper = async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            serving.stop().await;
        };
        let (_cut, ()) = tokio::join!(channel.pay_pipelined(&peer, 1, GRANT - 1_000, 256), stopper);
        let acknowledged = channel.paid();
        let held = PayeeChannels::open(dir.path()).expect("reopens").get(&channel.id()).expect("held").index;
        assert!(held >= acknowledged, "acknowledged {acknowledged} but only {held} on disk");
        // After the restart the payer goes on from its own record; links
        // the payee already holds are answered with the index held.
        let serving = serve(bob.clone(), &server, dir.path()).await;
        let peer = connect_payee(&alice, &serving, "bob").await;
        let paid = channel.pay_pipelined(&peer, 1, 100, 64).await.expect("goes on");
        eprintln!("acknowledged {acknowledged}, held on disk {held}, paid after the restart {paid}");
        assert!(paid >= acknowledged + 100, "paid {paid}");
        serving.stop().await;
        let on_disk = PayeeChannels::open(dir.path()).expect("reopens");
        assert_eq!(on_disk.get(&channel.id()).expect("held").index, paid);
        // The close pays exactly what the payer counts as paid.
        let shared = std::sync::Arc::new(std::sync::Mutex::new(on_disk));
        let closed = micropay::person::channel_serve::close_due(&shared, &b, u64::MAX).await.expect("closes");
        assert_eq!(closed, 1);
        assert_eq!(balances(&b).await, (GRANT + paid, 0));
        assert_eq!(balances(&a).await, (GRANT - paid, 0));
    }
}
