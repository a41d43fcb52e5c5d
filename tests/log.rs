//! The tamper-evident log (issue 13): receipts carry inclusion proofs
//! that payer and payee verify against a checkpoint signed by the server,
//! one checkpoint is stored per commit batch, and audit (and a restarting
//! server) finds a settled payment rewritten or deleted in the database
//! even where balances were made to add up.

mod common;

use common::{link, person, start_server_on, TestServer};
use micropay::core::checkpoint;
use micropay::core::payment::SignedPayment;
use micropay::ledger::{audit_at_with_keys, DbLocation};
use micropay::net::link::Link;
use micropay::person::Person;
use micropay::wire::{PaymentJson, PaymentStatus, Registered, ServerRequest, Settled};

async fn register(link: &Link) {
    link.call::<Registered>(&ServerRequest::Register {})
        .await
        .expect("register");
}

async fn settle(link: &Link, signed: &SignedPayment) -> Settled {
    link.call::<Settled>(&ServerRequest::Settle {
        payment: PaymentJson::from(signed),
    })
    .await
    .expect("settles")
}

/// The log's size once alice and bob registered (a key and a grant record
/// each) and the first payment settled.
const FIRST_PAYMENT_LOG_SIZE: u64 = 5;

/// Rolls a stopped ledger back to its state after the first of the
/// payments alice made to bob (5, then 6 and 7): what restoring an old
/// copy of the database looks like.
async fn roll_back_to_the_first_payment(db: &DbLocation) {
    let meta = match db {
        DbLocation::Sqlite(_) => "",
        DbLocation::Postgres(_) => "UPDATE ledger_meta SET last_seq = 1;",
    };
    common::tamper(
        db,
        &format!(
            "DELETE FROM payments WHERE seq > 1;
             DELETE FROM log_leaves WHERE leaf_index >= {FIRST_PAYMENT_LOG_SIZE};
             DELETE FROM checkpoints WHERE tree_size > {FIRST_PAYMENT_LOG_SIZE};
             UPDATE accounts SET balance = balance + 13 WHERE name = 'alice';
             UPDATE accounts SET balance = balance - 13 WHERE name = 'bob';
             {meta}"
        ),
    )
    .await;
}

async fn audit_with_key(db: &DbLocation, server: &Link) -> micropay::ledger::AuditReport {
    let (db, key) = (db.clone(), server.server_key().expect("server key"));
    tokio::task::spawn_blocking(move || audit_at_with_keys(&db, &[key]))
        .await
        .expect("audit task")
        .expect("audit runs")
}

/// A server with alice and bob registered, each with a link to it.
async fn alice_and_bob(backend: &common::Backend) -> (TestServer, Person, Person, Link, Link) {
    let server = start_server_on(backend).await;
    let alice = person(&server.pki, "alice");
    let bob = person(&server.pki, "bob");
    let (la, lb) = (link(&alice, &server).await, link(&bob, &server).await);
    register(&la).await;
    register(&lb).await;
    (server, alice, bob, la, lb)
}

/// Three payments from alice to bob (5, 6, 7), settled by bob; returns
/// the server, alice, her link and the replies.
async fn three_payments(
    backend: &common::Backend,
) -> (TestServer, Person, Link, Vec<(SignedPayment, Settled)>) {
    let (server, alice, bob, la, lb) = alice_and_bob(backend).await;
    drop(bob);
    let mut settled = Vec::new();
    for amount in [5, 6, 7] {
        let signed = common::signed_payment(&alice, "bob", amount, "log");
        let reply = settle(&lb, &signed).await;
        settled.push((signed, reply));
    }
    (server, alice, la, settled)
}

backend_test! {
    /// Every settle reply carries its leaf index, an inclusion proof and
    /// a checkpoint signed by the server's key, and no receipt signature
    /// (the proof stands in for it); the proof verifies; `status` carries
    /// the same; another key, another payment or another settlement time
    /// does not verify. Audit (with the
    /// server's key) checks every stored checkpoint and finds nothing.
    async fn receipts_carry_inclusion_proofs_that_verify(backend) {
        let (server, alice, la, settled) = three_payments(&backend).await;
        let key = la.server_key().expect("server key");
        for (signed, reply) in &settled {
            let receipt = common::check_proven(&la, &reply.receipt, reply.log.as_ref(), signed);
            let log = reply.log.as_ref().expect("a log proof");
            // Both registrations came first, two records each (key, grant).
            assert_eq!(log.leaf_index, 3 + receipt.seq);
            let cp = alice.verify_in_log(&key, signed, &receipt, log).expect("proof verifies");
            assert!(cp.size > log.leaf_index);
            assert!(cp.origin.starts_with("micropay/"));
            let other = &settled[(receipt.seq as usize) % 3].0;
            assert!(alice.verify_in_log(&key, other, &receipt, log).is_err());
            let mut later = receipt.clone();
            later.settled_at_ms += 1;
            assert!(alice.verify_in_log(&key, signed, &later, log).is_err());
            let stranger = micropay::core::keys::SigningKey::ed25519_from_seed(&[9; 32]);
            let mut fresh = checkpoint::CheckpointCache::new(1);
            let (parsed, _, _) = checkpoint::parse(&log.checkpoint).expect("parses");
            assert!(fresh.open(&log.checkpoint, &parsed.origin, stranger.verifying_key()).is_err());
            let status: PaymentStatus = la
                .call(&ServerRequest::Status { payment_id: signed.payment.id.to_hex() })
                .await
                .expect("status");
            let PaymentStatus::Settled { receipt: r, log: Some(log) } = status else {
                panic!("settled with a log proof");
            };
            let r = common::check_proven(&la, &r, Some(&log), signed);
            alice.verify_in_log(&key, signed, &r, &log).expect("status proof verifies");
        }
        let (db, _dir, _pg) = common::stop_keeping_ledger(server).await;
        let report = audit_with_key(&db, &la).await;
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(report.checkpoints >= 1);
        assert_eq!(report.checkpoint_signatures, report.checkpoints);
    }
}

backend_test! {
    /// Moving a settled payment's time by 1 ms (nothing else checks it)
    /// is found by audit (the row's record is in no log, and the logged
    /// record matches no row) and makes a restarting server refuse the
    /// ledger.
    async fn a_rewritten_settled_payment_is_detected(backend) {
        let (server, _alice, la, _) = three_payments(&backend).await;
        let pki = server.pki.clone();
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        common::tamper(&db, "UPDATE payments SET settled_at_ms = settled_at_ms + 1 WHERE seq = 2;").await;
        let report = audit_with_key(&db, &la).await;
        assert!(
            report.violations.iter().any(|v| v.contains("settlement row record(s) are in no log")),
            "{:?}",
            report.violations
        );
        assert!(
            report.violations.iter().any(|v| v.contains("settlement record(s) match no stored row")),
            "{:?}",
            report.violations
        );
        let options = common::server_options(&pki, db.clone(), Default::default());
        let refused = micropay::server::spawn("127.0.0.1:0".parse().expect("addr"), options).await;
        assert!(refused.is_err(), "a server must not start on a rewritten log");
        drop((dir, pg));
    }
}

backend_test! {
    /// Deleting the last settled payment and giving its amount back, so
    /// that balances still equal grants plus payments, is found by audit:
    /// its logged record matches no stored row.
    async fn a_deleted_settled_payment_is_detected(backend) {
        let (server, _alice, la, _) = three_payments(&backend).await;
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        common::tamper(
            &db,
            "DELETE FROM payments WHERE seq = 3;
             UPDATE accounts SET balance = balance + 7 WHERE name = 'alice';
             UPDATE accounts SET balance = balance - 7 WHERE name = 'bob';",
        )
        .await;
        let report = audit_with_key(&db, &la).await;
        assert!(
            report.violations.iter().any(|v| v.contains("settlement record(s) match no stored row")),
            "{:?}",
            report.violations
        );
        drop((dir, pg));
    }
}

backend_test! {
    /// A client that saw a checkpoint of 7 leaves is told the history
    /// changed when the database is rolled back to its state after the
    /// first payment (the server starts on it, as on an old copy), and
    /// again when the rolled-back log then grows a different second
    /// entry (a fork); before that, a grown log checks consistent.
    async fn a_rolled_back_or_forked_log_is_detected_by_a_client(backend) {
        use micropay::person::log_state::{check_log, LogStateError};
        let (server, alice, bob, la, lb) = alice_and_bob(&backend).await;
        let pki = server.pki.clone();
        let state = server.dir.path().join("client").join("log-state.json");
        settle(&lb, &common::signed_payment(&alice, "bob", 5, "one")).await;
        let first = check_log(&la, &state).await.expect("first contact");
        assert_eq!((first.seen_size, first.now.size), (None, 5));
        for amount in [6, 7] {
            settle(&lb, &common::signed_payment(&alice, "bob", amount, "more")).await;
        }
        let grown = check_log(&la, &state).await.expect("consistent");
        assert_eq!((grown.seen_size, grown.now.size), (Some(5), 7));
        drop((la, lb));
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        roll_back_to_the_first_payment(&db).await;
        let options = common::server_options(&pki, db.clone(), Default::default());
        let server = common::start_server_at(pki.clone(), db, dir, pg, options).await;
        let (la, lb) = (link(&alice, &server).await, link(&bob, &server).await);
        let rolled_back = check_log(&la, &state).await;
        assert!(
            matches!(rolled_back, Err(LogStateError::HistoryChanged { seen_size: 7, now_size: 5, .. })),
            "{rolled_back:?}"
        );
        for amount in [8, 9, 10] {
            settle(&lb, &common::signed_payment(&alice, "bob", amount, "fork")).await;
        }
        let forked = check_log(&la, &state).await;
        assert!(
            matches!(forked, Err(LogStateError::HistoryChanged { seen_size: 7, now_size: 8, .. })),
            "{forked:?}"
        );
        let message = forked.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("rewritten, rolled back or forked"), "{message}");
        drop((la, lb));
        let _ = common::stop_keeping_ledger(server).await;
    }
}

backend_test! {
    /// Registrations are logged: the first checkpoint a registered person
    /// can ask for covers both accounts (4 records); `consistency` beyond
    /// the latest checkpoint or with from > to is `bad_request`; a valid
    /// request's proof verifies between the two checkpoints.
    async fn checkpoint_and_consistency_refuse_what_they_cannot_prove(backend) {
        use micropay::core::merkle::verify_consistency;
        use micropay::wire::{CheckpointJson, ConsistencyJson, ErrorCode};
        let (server, alice, _bob, la, lb) = alice_and_bob(&backend).await;
        let code = |r: Result<(), micropay::net::link::CallError>| match r {
            Err(micropay::net::link::CallError::Refused(e)) => e.code,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let key = la.server_key().expect("server key");
        let registered: CheckpointJson = la.call(&ServerRequest::Checkpoint {}).await.expect("checkpoint");
        let (parsed, _, _) = checkpoint::parse(&registered.checkpoint).expect("parses");
        assert_eq!(parsed.size, 4, "two keys and two grants");
        let mut heads = Vec::new();
        for amount in [1, 2, 3] {
            settle(&lb, &common::signed_payment(&alice, "bob", amount, "c")).await;
            let cp: CheckpointJson = la.call(&ServerRequest::Checkpoint {}).await.expect("checkpoint");
            let (parsed, _, _) = checkpoint::parse(&cp.checkpoint).expect("parses");
            heads.push(checkpoint::open(&cp.checkpoint, &parsed.origin, &key).expect("signed"));
        }
        for (from, to) in [(2, 8), (7, 6), (0, 99)] {
            let r = la
                .call::<ConsistencyJson>(&ServerRequest::Consistency { from_size: from, to_size: to })
                .await;
            assert_eq!(code(r.map(|_| ())), ErrorCode::BadRequest, "{from} -> {to}");
        }
        let proof: ConsistencyJson = la
            .call(&ServerRequest::Consistency { from_size: 5, to_size: 7 })
            .await
            .expect("consistency");
        let hashes = micropay::core::log_proof::decode_hashes(&proof.proof).expect("hex");
        assert_eq!(
            verify_consistency(5, 7, &heads[0].root, &heads[2].root, &hashes),
            Ok(())
        );
        assert!(verify_consistency(5, 7, &heads[1].root, &heads[2].root, &hashes).is_err());
        drop((la, lb));
        let _ = common::stop_keeping_ledger(server).await;
    }
}

/// `serve`'s options for `server`, remembering the log in `log_state`.
fn serve_options(
    server: &TestServer,
    log_state: Option<std::path::PathBuf>,
) -> micropay::person::ServeOptions {
    micropay::person::ServeOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        server: server.addr_string(),
        limits: Default::default(),
        reconnect: micropay::person::Reconnect::default(),
        channels_dir: None,
        log_state,
    }
}

/// Bob online as a payee (`serve`) until `stop` is sent.
async fn go_online(
    who: std::sync::Arc<Person>,
    server: &TestServer,
    log_state: Option<std::path::PathBuf>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), micropay::person::PeerError>>,
) {
    use micropay::person::ServeEvent;
    let (events_tx, mut events) =
        tokio::sync::mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = serve_options(server, log_state);
    let task = tokio::spawn(micropay::person::serve(
        who,
        options,
        events_tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    // Bounded: a payee that never comes online fails the test, not hangs it.
    for _ in 0..100 {
        match events.recv().await {
            Some(ServeEvent::Online { .. }) => break,
            Some(_) => continue,
            None => panic!("serve ended before going online"),
        }
    }
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (stop, task)
}

backend_test! {
    /// `send` through a payee verifies each receipt's log proof (payee and
    /// payer both check it), remembers the checkpoint in the state file,
    /// and after the ledger is rolled back it reports the changed history
    /// (the payment itself settled); the payee's `serve` checks the log
    /// at every connection and refuses to serve the rolled-back server.
    async fn send_remembers_the_log_and_reports_a_rolled_back_history(backend) {
        use micropay::person::{send, PeerError, SendOptions};
        let server = start_server_on(&backend).await;
        let pki = server.pki.clone();
        let alice = person(&pki, "alice");
        let bob = std::sync::Arc::new(person(&pki, "bob"));
        register(&link(&alice, &server).await).await;
        register(&link(&bob, &server).await).await;
        let state = server.dir.path().join("state").join("log-state.json");
        let options = |server: &TestServer, amount| SendOptions {
            log_state: Some(state.clone()),
            timeout_ms: 30_000,
            ..SendOptions::new(&server.addr_string(), bob.name.clone(), amount)
        };
        let bob_state = server.dir.path().join("bob").join("log-state.json");
        let (stop, task) = go_online(bob.clone(), &server, Some(bob_state.clone())).await;
        for amount in [5, 6, 7] {
            send(&alice, &options(&server, amount)).await.expect("send");
        }
        assert!(state.exists(), "send remembers the checkpoint");
        let _ = stop.send(());
        let _ = task.await;
        // bob's serve checks (and remembers) the log each time it connects.
        let (stop, task) = go_online(bob.clone(), &server, Some(bob_state.clone())).await;
        assert!(bob_state.exists(), "serve remembers the checkpoint");
        let _ = stop.send(());
        let _ = task.await;
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        roll_back_to_the_first_payment(&db).await;
        let server_options = common::server_options(&pki, db.clone(), Default::default());
        let server = common::start_server_at(pki.clone(), db, dir, pg, server_options).await;
        // The restarted server's log no longer extends what bob's serve
        // saw, so bob's serve refuses to go online there.
        let (events_tx, _events) = tokio::sync::mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            micropay::person::serve(bob.clone(), serve_options(&server, Some(bob_state.clone())), events_tx, std::future::pending()),
        )
        .await
        .expect("serve ends by itself");
        assert!(matches!(refused, Err(PeerError::ServerHistoryChanged(_))), "{refused:?}");
        let (stop, task) = go_online(bob.clone(), &server, None).await;
        let after = send(&alice, &options(&server, 1)).await;
        assert!(matches!(after, Err(PeerError::LogHistoryChanged(..))), "{after:?}");
        let _ = stop.send(());
        let _ = task.await;
        let _ = common::stop_keeping_ledger(server).await;
    }
}

backend_test! {
    /// Every change of state is a leaf, so rows written around the server
    /// are found even where money still adds up: a grant raised together
    /// with its account's balance (minting), a recorded refusal deleted,
    /// a key-history row's time moved. Audit names each, a server refuses
    /// to start on the ledger, and undoing the change makes both content.
    async fn rows_written_around_the_server_are_found_by_the_log(backend) {
        let (server, alice, _bob, la, lb) = alice_and_bob(&backend).await;
        let pki = server.pki.clone();
        settle(&lb, &common::signed_payment(&alice, "bob", 5, "ok")).await;
        let too_much = common::signed_payment(&alice, "bob", common::GRANT * 2, "too much");
        let refused = lb
            .call::<Settled>(&ServerRequest::Settle { payment: PaymentJson::from(&too_much) })
            .await;
        assert!(refused.is_err(), "refused for good");
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        let clean = audit_with_key(&db, &la).await;
        assert!(clean.violations.is_empty(), "{:?}", clean.violations);
        assert_eq!(clean.rejections, 1);
        assert!(clean.log_leaves >= 6, "two keys, two grants, a payment, a refusal");
        assert_eq!(clean.logs, 1);
        let cases = [
            (
                "UPDATE grants SET amount = amount + 500 WHERE name = 'alice';
                 UPDATE accounts SET balance = balance + 500 WHERE name = 'alice';",
                "UPDATE grants SET amount = amount - 500 WHERE name = 'alice';
                 UPDATE accounts SET balance = balance - 500 WHERE name = 'alice';",
                "grant row record(s) are in no log",
            ),
            (
                "CREATE TABLE saved AS SELECT * FROM rejections; DELETE FROM rejections;",
                "INSERT INTO rejections SELECT * FROM saved; DROP TABLE saved;",
                "refusal record(s) match no stored row",
            ),
            (
                "UPDATE key_history SET at_ms = at_ms + 1 WHERE name = 'bob';",
                "UPDATE key_history SET at_ms = at_ms - 1 WHERE name = 'bob';",
                "key-history row record(s) are in no log",
            ),
        ];
        for (change, undo, found) in cases {
            common::tamper(&db, change).await;
            let report = audit_with_key(&db, &la).await;
            assert!(
                report.violations.iter().any(|v| v.contains(found)),
                "{change}: {:?}",
                report.violations
            );
            let options = common::server_options(&pki, db.clone(), Default::default());
            let started = micropay::server::spawn("127.0.0.1:0".parse().expect("addr"), options).await;
            assert!(started.is_err(), "{change}: a server must not start on it");
            common::tamper(&db, undo).await;
            let report = audit_with_key(&db, &la).await;
            assert!(report.violations.is_empty(), "{undo}: {:?}", report.violations);
        }
        drop((dir, pg));
    }
}

backend_test! {
    /// Money minted together with a log of its own: a grant row, the
    /// balance raised by as much, the grant's record as leaf 0 of a made-up
    /// log, and a checkpoint over it signed by some other key. Every row
    /// is then in a log, so only the signature tells: a server refuses to
    /// start on the ledger, and audit with the server's key reports it.
    async fn a_log_nobody_trusted_signed_is_refused(backend) {
        use micropay::core::checkpoint::Checkpoint;
        use micropay::core::merkle::leaf_hash;
        use micropay::ledger::log_records::grant_record;
        let (server, _alice, _bob, la, _lb) = alice_and_bob(&backend).await;
        let pki = server.pki.clone();
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        let record = grant_record(&micropay::ledger::StoredGrant {
            seq: 0,
            name: "alice".into(),
            amount: 1_000_000,
            granted_at_ms: 1,
        });
        let origin = "micropay/forged";
        let root = leaf_hash(&record);
        let stranger = micropay::core::keys::SigningKey::ed25519_from_seed(&[9; 32]);
        let note = Checkpoint { origin: origin.into(), size: 1, root }.sign(&stranger);
        let blob = |b: &[u8]| match &db {
            DbLocation::Sqlite(_) => format!("X'{}'", hex::encode(b)),
            DbLocation::Postgres(_) => format!("'\\x{}'::bytea", hex::encode(b)),
        };
        common::tamper(
            &db,
            &format!(
                "INSERT INTO grants (name, amount, granted_at_ms) VALUES ('alice', 1000000, 1);
                 UPDATE accounts SET balance = balance + 1000000 WHERE name = 'alice';
                 INSERT INTO log_leaves (origin, leaf_index, record) VALUES ('{origin}', 0, {});
                 INSERT INTO checkpoints (origin, tree_size, root, note, created_at_ms)
                 VALUES ('{origin}', 1, {}, '{note}', 1);",
                blob(&record),
                blob(&root)
            ),
        )
        .await;
        let options = common::server_options(&pki, db.clone(), Default::default());
        let refused = micropay::server::spawn("127.0.0.1:0".parse().expect("addr"), options).await;
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("signed neither by this server's key"), "{message}");
        let report = audit_with_key(&db, &la).await;
        assert!(
            report.violations.iter().any(|v| v.contains("micropay/forged") && v.contains("not signed")),
            "{:?}",
            report.violations
        );
        drop((dir, pg));
    }
}
