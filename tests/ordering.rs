//! Issue 11, item 5: on one connection, a request that reads or changes
//! the caller's own state sees the effects of every earlier request on
//! that connection, even when the client pipelines them.

mod common;

use common::{person, start_server};
use micropay::core::payment::{Payment, PaymentId};
use micropay::system::clock::now_s;
use micropay::wire::{Balance, History, Listing, PaymentJson, ServerRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_read_their_own_writes() {
    let server = start_server().await;
    let alice = person(&server.pki, "alice");
    let bob = person(&server.pki, "bob");
    let bob_link = common::link(&bob, &server).await;
    let _: micropay::wire::Registered = bob_link
        .call(&ServerRequest::Register {})
        .await
        .expect("bob registers");
    let link = common::link(&alice, &server).await;
    // Nothing is awaited until everything is sent.
    let register = link.send(&ServerRequest::Register {}).await.expect("send");
    let list = link.send(&ServerRequest::List {}).await.expect("send");
    let payment = Payment {
        id: PaymentId::random(),
        payer: alice.name.clone(),
        payee: bob.name.clone(),
        amount_minor: 250,
        expires_at_s: now_s() + 60,
        memo: String::new(),
    }
    .sign(&alice.key);
    let settle = link
        .send(&ServerRequest::Settle {
            payment: PaymentJson::from(&payment),
        })
        .await
        .expect("send");
    let balance = link.send(&ServerRequest::Balance {}).await.expect("send");
    let history = link
        .send(&ServerRequest::History {
            limit: None,
            before_seq: None,
        })
        .await
        .expect("send");

    assert!(register.await.expect("reply").ok);
    let listing: Listing = list.await.expect("reply").into_result().expect("list");
    assert_eq!(listing.balance, common::GRANT);
    assert!(settle.await.expect("reply").ok);
    let balance: Balance = balance
        .await
        .expect("reply")
        .into_result()
        .expect("balance");
    assert_eq!(balance.balance, common::GRANT - 250);
    let history: History = history
        .await
        .expect("reply")
        .into_result()
        .expect("history");
    assert_eq!(history.entries.len(), 1);
    common::shutdown_and_audit(server).await;
}
