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
    Balance, ChannelClosed, ChannelOpened, CommitmentJson, ErrorCode, Registered, ServerRequest,
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
        let report = finish_with_holds(server).await;
        assert_eq!(report.total_held, 100);
    }
}

/// Stops the server and audits a ledger that still has open holds.
async fn finish_with_holds(server: common::TestServer) -> micropay::ledger::AuditReport {
    let common::TestServer {
        running,
        db,
        dir,
        pg,
        ..
    } = server;
    running.shutdown().await.expect("clean shutdown");
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
