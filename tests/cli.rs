//! End-to-end tests of the real binaries: certificates from
//! `micropay-certs`, a `micropay-server` child process on a free loopback
//! port, and people as `micropay-client` child processes, exactly as a
//! person would run them (issue 4).
//!
//! Every wait is bounded (`cli_support::WAIT`) and every child process is
//! killed when its guard drops, so a failing test leaves nothing running.

mod cli_support;

use std::io::Read;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use cli_support::{client, dead_port, make_certs, run, Out, World, WAIT};
use serde_json::Value;

/// The payment id in `receipt: payment ID settled as ...` of a human `send`.
#[track_caller]
fn payment_id_of(sent: &Out) -> String {
    let id = sent
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("receipt: payment "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no receipt line:\n{sent}"))
        .to_owned();
    assert!(is_payment_id(&id), "not a payment id: {id:?}");
    id
}

fn is_payment_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether three whitespace-separated fields read as a local date-time
/// with its offset: `2026-11-25 19:04:05 +01:00`.
fn is_local_datetime(fields: &[&str]) -> bool {
    let shape = |s: &str, pattern: &str| {
        s.len() == pattern.len()
            && s.bytes().zip(pattern.bytes()).all(|(c, p)| {
                if p == b'9' {
                    c.is_ascii_digit()
                } else {
                    c == p || (p == b'+' && c == b'-')
                }
            })
    };
    matches!(fields, [date, time, offset]
        if shape(date, "9999-99-99") && shape(time, "99:99:99") && shape(offset, "+99:99"))
}

/// Whitespace-separated fields of each line of `text`.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

#[track_caller]
fn assert_balances(world: &World, expected: &[(&str, u64)]) {
    for (who, balance) in expected {
        assert_eq!(world.balance(who), *balance, "{who}'s balance");
    }
}

#[test]
fn the_whole_story_from_register_to_audit() {
    let mut world = World::start();
    world.register(&["alice", "bob"]);

    let mut bob = world.serve("bob", &[], false);
    let (bob_addr, bob_listen) = bob.online();
    assert_eq!(
        bob_addr, bob_listen,
        "on loopback the server sees the listen address"
    );

    let list = world.run("alice", &["list"]);
    list.expect(0)
        .stdout_has("alice's balance: 10000")
        .stdout_has("online:       1");
    assert!(
        rows(&list.stdout).contains(&vec!["bob", bob_addr.as_str()]),
        "bob is not listed online at {bob_addr}:\n{list}"
    );

    let sent = world.run(
        "alice",
        &["send", "bob", "250", "--memo", "coffee and cake"],
    );
    sent.expect(0)
        .stdout_has(&format!(
            "paid bob 250 at {bob_addr} (memo: coffee and cake)"
        ))
        .stdout_has("in the server's log (inclusion proof verified")
        .stdout_has("balance: 9750");
    let id = payment_id_of(&sent);

    let received = bob.line_where("bob's `received` line", |l| l.starts_with("received"));
    assert!(
        received.starts_with("received 250 from alice memo: coffee and cake (seq ")
            && received.ends_with(&format!("payment {id})")),
        "bob's line: {received:?}"
    );

    assert_balances(&world, &[("alice", 9750), ("bob", 10250)]);

    let alice_history = world.run("alice", &["history"]);
    alice_history.expect(0);
    let row = rows(&alice_history.stdout);
    assert!(
        row.iter().any(|r| r.get(4..)
            == Some(&["out", "bob", "-250", id.as_str(), "coffee", "and", "cake"][..])
            && is_local_datetime(&r[1..4])),
        "alice's history lacks the payment:\n{alice_history}"
    );
    let bob_history = world.run("bob", &["history"]);
    bob_history.expect(0);
    let row = rows(&bob_history.stdout);
    assert!(
        row.iter().any(|r| r.get(4..)
            == Some(&["in", "alice", "+250", id.as_str(), "coffee", "and", "cake"][..])
            && is_local_datetime(&r[1..4])),
        "bob's history lacks the payment:\n{bob_history}"
    );

    world
        .run("alice", &["status", &id])
        .expect(0)
        .stdout_has("settled: alice paid bob 250");

    let (status, rest) = bob.interrupt();
    assert_eq!(
        status.code(),
        Some(0),
        "serve after SIGINT: {status}; {rest:?}"
    );
    assert_eq!(rest.last().map(String::as_str), Some("offline"), "{rest:?}");

    let status = world.stop_server();
    assert_eq!(
        status.code(),
        Some(0),
        "the server after SIGTERM: {status}\n{}",
        world.server_log()
    );

    world
        .audit()
        .expect(0)
        .stdout_has("accounts    2")
        .stdout_has("payments    1")
        .stdout_has("audit: OK");
}

#[test]
fn send_to_someone_offline_or_unregistered_is_refused_and_pays_nothing() {
    let world = World::start();
    world.register(&["alice", "bob"]);

    // Registered, never online.
    world
        .run("alice", &["send", "bob", "10"])
        .expect(1)
        .stderr_has("payee_offline")
        .stderr_has("bob is not online");
    // No account at all, with or without a certificate.
    for nobody in ["dave", "carol"] {
        world
            .run("alice", &["send", nobody, "10"])
            .expect(1)
            .stderr_has("unknown_payee")
            .stderr_has(&format!("{nobody} has no account"));
    }
    // The same in JSON: the code is machine-readable.
    let out = world.run("alice", &["--json", "send", "bob", "10"]);
    let v = out.expect(1).json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["code"], "payee_offline", "{v}");
    assert_eq!(v["exit_code"], 1, "{v}");

    // Registering twice is refused too, and changes nothing.
    world
        .run("bob", &["register"])
        .expect(1)
        .stderr_has("already_registered");

    assert_balances(&world, &[("alice", 10000), ("bob", 10000)]);
    world
        .run("alice", &["history"])
        .expect(0)
        .stdout_has("no payments yet");
}

#[test]
fn send_to_a_listener_with_someone_elses_certificate_is_refused() {
    let world = World::start();
    world.register(&["alice", "bob", "carol"]);

    // carol listens; bob goes online announcing carol's listener as his,
    // so the server sends alice, who wants to pay bob, to carol.
    let mut carol = world.serve("carol", &[], true);
    let (_, carol_listen) = carol.online();
    let mut bob = world.serve("bob", &["--advertise", &carol_listen], true);
    let (bob_addr, _) = bob.online();
    assert_eq!(bob_addr, carol_listen);

    let out = world.run("alice", &["send", "bob", "100", "--memo", "for bob only"]);
    out.expect(3)
        .stderr_has(&format!("the listener at {carol_listen} is not bob's"))
        .stderr_has("not valid for name \"bob\"")
        .stderr_has("nothing was paid");

    let out = world.run("alice", &["--json", "send", "bob", "100"]);
    let v = out.expect(3).json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["exit_code"], 3, "{v}");
    assert_eq!(v["error"]["code"], "wrong_listener", "{v}");

    assert_balances(
        &world,
        &[("alice", 10000), ("bob", 10000), ("carol", 10000)],
    );
    world
        .run("alice", &["history"])
        .expect(0)
        .stdout_has("no payments yet");

    // Neither listener took (or even saw) a payment.
    for serve in [carol, bob] {
        let (status, rest) = serve.interrupt();
        assert_eq!(status.code(), Some(0), "{status}");
        let events: Vec<Value> = rest
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON event"))
            .collect();
        assert_eq!(events, vec![serde_json::json!({"event": "offline"})]);
    }
}

#[test]
fn send_more_than_the_balance_is_refused_and_moves_nothing() {
    let world = World::start();
    world.register(&["alice", "bob"]);
    let mut bob = world.serve("bob", &[], false);
    bob.online();

    world
        .run("alice", &["send", "bob", "10001"])
        .expect(1)
        .stderr_has("insufficient_funds")
        .stderr_has("alice's balance does not cover 10001");
    let refused = bob.line_where("bob's `refused` line", |l| l.starts_with("refused"));
    // The payee learns that the payment was refused, not alice's balance.
    assert!(!refused.contains("10000"), "{refused:?}");
    assert!(
        refused.starts_with("refused a payment from alice: insufficient_funds"),
        "{refused:?}"
    );
    assert_balances(&world, &[("alice", 10000), ("bob", 10000)]);
    for who in ["alice", "bob"] {
        world
            .run(who, &["history"])
            .expect(0)
            .stdout_has("no payments yet");
    }

    // Exactly everything is fine; after that, not even 1.
    world
        .run("alice", &["send", "bob", "10000"])
        .expect(0)
        .stdout_has("balance: 0");
    world
        .run("alice", &["send", "bob", "1"])
        .expect(1)
        .stderr_has("insufficient_funds");
    assert_balances(&world, &[("alice", 0), ("bob", 20000)]);
}

#[test]
fn two_payers_pay_one_payee_at_the_same_time() {
    let mut world = World::start();
    world.register(&["alice", "bob", "carol"]);
    let mut bob = world.serve("bob", &[], true);
    bob.online();

    // Three payments from each payer, all six in flight at once.
    let mut pending = Vec::new();
    for round in 0..3 {
        let memo_a = format!("alice {round}");
        let memo_c = format!("carol {round}");
        pending.push((
            "alice",
            300,
            world.spawn(
                "alice",
                &["--json", "send", "bob", "300", "--memo", &memo_a],
            ),
        ));
        pending.push((
            "carol",
            200,
            world.spawn(
                "carol",
                &["--json", "send", "bob", "200", "--memo", &memo_c],
            ),
        ));
    }
    let mut ids = Vec::new();
    for (payer, amount, p) in pending {
        let out = p.finish();
        let v = out.expect(0).json();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["amount"], amount, "{v}");
        assert_eq!(v["receipt"]["payer"], payer, "{v}");
        assert_eq!(v["receipt_verified"], true, "{v}");
        ids.push(v["payment_id"].as_str().expect("payment_id").to_owned());
    }

    let mut received = Vec::new();
    while received.len() < ids.len() {
        let event = bob.next_event();
        assert_eq!(event["event"], "received", "{event}");
        received.push(event["payment_id"].as_str().expect("payment_id").to_owned());
    }
    ids.sort();
    received.sort();
    assert_eq!(ids, received, "bob received exactly the six payments");

    assert_balances(
        &world,
        &[
            ("alice", 10000 - 900),
            ("carol", 10000 - 600),
            ("bob", 10000 + 1500),
        ],
    );

    let (status, _) = bob.interrupt();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        world.stop_server().code(),
        Some(0),
        "{}",
        world.server_log()
    );
    world
        .audit()
        .expect(0)
        .stdout_has("payments    6")
        .stdout_has("audit: OK");
}

#[test]
fn json_output_of_every_command_parses() {
    let world = World::start();

    let v = world.run("alice", &["--json", "register"]).expect(0).json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["name"], "alice");
    assert_eq!(v["balance"], 10000);
    assert_eq!(v["key_fingerprint"].as_str().map(str::len), Some(64), "{v}");
    world.register(&["bob"]);

    let mut bob = world.serve("bob", &[], true);
    let (bob_addr, _) = bob.online();

    let list = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(list["ok"], true);
    assert_eq!(list["name"], "alice");
    assert_eq!(list["balance"], 10000);
    assert_eq!(list["online_count"], 1);
    assert_eq!(
        list["online"],
        serde_json::json!([{"name": "bob", "address": bob_addr}])
    );
    assert!(list["server_key_fingerprint"].is_string(), "{list}");

    let sent = world
        .run(
            "alice",
            &["--json", "send", "bob", "250", "--memo", "lunch"],
        )
        .expect(0)
        .json();
    assert_eq!(sent["ok"], true, "{sent}");
    assert_eq!(sent["receipt_verified"], true, "{sent}");
    assert_eq!(sent["payee"], "bob");
    assert_eq!(sent["amount"], 250);
    assert_eq!(sent["balance"], 9750);
    let id = sent["payment_id"].as_str().expect("payment_id").to_owned();
    assert!(is_payment_id(&id), "{sent}");
    let receipt = &sent["receipt"];
    assert_eq!(receipt["payment_id"], id.as_str(), "{sent}");
    assert_eq!(receipt["payer"], "alice");
    assert_eq!(receipt["payee"], "bob");
    assert_eq!(receipt["amount"], 250);
    let seq = receipt["seq"].as_u64().expect("seq");
    assert!(
        receipt["settled_at_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{sent}"
    );
    // Proven by the server's log, so not signed: the line carries the
    // proof for checking again offline.
    assert_eq!(sent["verified_by"], "log_proof", "{sent}");
    assert!(receipt.get("signature").is_none(), "{sent}");
    assert!(sent["log"]["leaf_index"].as_u64().is_some(), "{sent}");
    assert!(sent["log"]["inclusion_proof"].is_array(), "{sent}");
    assert!(
        sent["log"]["checkpoint"]
            .as_str()
            .is_some_and(|c| c.starts_with("micropay/")),
        "{sent}"
    );
    assert!(
        receipt["payment_hash"]
            .as_str()
            .is_some_and(|s| s.len() == 64),
        "{sent}"
    );

    let event = bob.next_event();
    assert_eq!(
        event,
        serde_json::json!({"event": "received", "payment_id": id, "payer": "alice",
                           "amount": 250, "memo": "lunch", "seq": seq, "replay": false})
    );

    let balance = world.run("bob", &["--json", "balance"]).expect(0).json();
    assert_eq!(
        balance,
        serde_json::json!({"ok": true, "name": "bob", "balance": 10250, "held": 0})
    );

    for who in ["alice", "bob"] {
        let history = world.run(who, &["--json", "history"]).expect(0).json();
        assert_eq!(history["ok"], true, "{history}");
        let entries = history["entries"].as_array().expect("entries");
        assert_eq!(entries.len(), 1, "{history}");
        let e = &entries[0];
        assert_eq!(e["payment_id"], id.as_str(), "{history}");
        assert_eq!(e["payer"], "alice");
        assert_eq!(e["payee"], "bob");
        assert_eq!(e["amount"], 250);
        assert_eq!(e["memo"], "lunch");
        assert_eq!(e["seq"], seq);

        // Payer and payee can both ask for the payment's status.
        let status = world.run(who, &["--json", "status", &id]).expect(0).json();
        assert_eq!(status["ok"], true, "{status}");
        assert_eq!(status["status"]["state"], "settled", "{status}");
        assert_eq!(status["status"]["receipt"], *receipt, "{status}");
    }

    // A refusal: one JSON object on stdout, and one event at bob's.
    let refused = world
        .run("alice", &["--json", "send", "bob", "100000"])
        .expect(1)
        .json();
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "insufficient_funds", "{refused}");
    assert_eq!(refused["exit_code"], 1);
    let event = bob.next_event();
    assert_eq!(event["event"], "refused", "{event}");
    assert_eq!(event["payer"], "alice", "{event}");
    assert_eq!(event["code"], "insufficient_funds", "{event}");

    let (status, rest) = bob.interrupt();
    assert_eq!(status.code(), Some(0));
    assert_eq!(rest, vec![r#"{"event":"offline"}"#.to_owned()]);
}

#[test]
fn serve_stops_on_sigint_and_leaves_the_list() {
    let world = World::start();
    world.register(&["alice", "bob"]);

    let mut bob = world.serve("bob", &[], false);
    let (first, _) = bob.online();
    let listed = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(
        listed["online"],
        serde_json::json!([{"name": "bob", "address": first}])
    );

    let (status, rest) = bob.interrupt();
    assert_eq!(status.code(), Some(0), "serve after SIGINT: {status}");
    assert_eq!(rest, vec!["offline".to_owned()]);

    let listed = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(listed["online_count"], 0, "{listed}");
    assert_eq!(listed["online"], serde_json::json!([]), "{listed}");
    world
        .run("alice", &["list"])
        .expect(0)
        .stdout_has("online:       0");
    world
        .run("alice", &["send", "bob", "5"])
        .expect(1)
        .stderr_has("payee_offline");

    // Back online, at a new address, and payable again.
    let mut bob = world.serve("bob", &[], false);
    let (second, _) = bob.online();
    let listed = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(
        listed["online"],
        serde_json::json!([{"name": "bob", "address": second}])
    );
    world.run("alice", &["send", "bob", "5"]).expect(0);
    assert_balances(&world, &[("alice", 9995), ("bob", 10005)]);
    let (status, _) = bob.interrupt();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    make_certs(&certs, &["alice"]);
    // Nothing listens here: exit 2 (not 3) proves nothing was dialled.
    let server = format!("127.0.0.1:{}", dead_port());
    let usage = |who: &str, certs: &std::path::Path, args: &[&str]| {
        let out = run(
            &mut client(who, certs, &server, args),
            format!("{who} {args:?}"),
        );
        out.expect(2);
        out
    };

    // A missing certificate: the message names the file and what to run.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = usage("alice", &empty, &["balance"]);
    let missing = empty.join("alice.pem");
    out.stderr_has(&format!("no file at {}", missing.display()))
        .stderr_has("gen-certs")
        .stderr_has("alice");
    let out = usage("bob", &certs, &["list"]);
    out.stderr_has(&certs.join("bob.pem").display().to_string())
        .stderr_has("gen-certs");

    for amount in ["abc", "0", "1.5", "18446744073709551616", "", "-5"] {
        let out = usage("alice", &certs, &["send", "bob", amount]);
        // `-5` too is refused by the amount rule, not with clap's `-- -5` tip.
        assert!(out.stderr.contains("amount"), "{out}");
        assert!(!out.stderr.contains("-- -5"), "{out}");
    }
    // A server address without a port is a usage error: nothing is dialled.
    for server in ["127.0.0.1", "::1", "host:0", ":7443"] {
        let out = run(
            &mut client("alice", &certs, server, &["balance"]),
            format!("--server {server}"),
        );
        out.expect(2).stderr_has("--server");
    }
    usage("alice", &certs, &["send", "bob", "0"]).stderr_has("at least 1");
    usage("alice", &certs, &["send", "Bob!", "5"]).stderr_has("payee");
    let long_memo = "x".repeat(141);
    usage("alice", &certs, &["send", "bob", "5", "--memo", &long_memo]).stderr_has("memo");
    usage("alice", &certs, &["send", "bob"]);
    usage("alice", &certs, &["frobnicate"]);
    usage("Alice", &certs, &["balance"]).stderr_has("--as");
    usage("alice", &certs, &["send", "alice", "5"]).stderr_has("cannot pay yourself");
    usage("alice", &certs, &["status", "xyz"]).stderr_has("not a payment id");
    // Even a parse error comes out as one JSON object when --json is given.
    let out = usage("alice", &certs, &["--json", "send", "bob"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(v["error"]["code"], "usage", "{v}");

    // In JSON too, with the exit code in the object.
    let out = usage("alice", &certs, &["--json", "send", "bob", "abc"]);
    let v = out.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 2);
}

#[test]
fn nothing_listening_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    make_certs(&certs, &["alice"]);
    let server = format!("127.0.0.1:{}", dead_port());
    for args in [
        &["balance"][..],
        &["list"],
        &["register"],
        &["send", "bob", "5"],
        &["serve"],
    ] {
        let started = Instant::now();
        let out = run(
            &mut client("alice", &certs, &server, args),
            format!("alice {args:?}"),
        );
        out.expect(3)
            .stderr_has(&format!("cannot connect to {server}"));
        assert!(started.elapsed() < WAIT, "{out}");
    }
}

/// A payee who takes the payment and never answers: `send --timeout 1`
/// gives up with exit 3, names the payment id, and `status` finds it was
/// never settled; nothing moved.
#[test]
fn a_payee_who_vanishes_after_taking_the_payment() {
    use micropay::net::tls::{self, Material};

    let world = World::start();
    world.register(&["alice", "bob"]);

    // A listener with bob's real certificate that completes the handshake,
    // reads the payment and says nothing.
    let material = Material::from_files(
        &world.certs.join("ca.pem"),
        &world.certs.join("bob.pem"),
        &world.certs.join("bob.key"),
    )
    .expect("bob's material");
    let config = tls::peer_listener_config(&material).expect("listener config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = listener.local_addr().expect("addr").to_string();
    let took = thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(WAIT)).expect("read timeout");
        let conn = rustls::ServerConnection::new(config).expect("server connection");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Until alice gives up and closes (or WAIT passes).
        while let Ok(n) = tls.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    });

    let mut bob = world.serve("bob", &["--advertise", &silent], false);
    bob.online();

    let started = Instant::now();
    let out = world.run("alice", &["send", "bob", "40", "--timeout", "1"]);
    // Issue 11, item 7: "the payment may have gone through" has its own
    // exit code, and says how to find out or retry.
    out.expect(4)
        .stderr_has("bob took payment")
        .stderr_has("status")
        .stderr_has("--expires-at");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "--timeout 1 took {:?}",
        started.elapsed()
    );
    let id = out
        .stderr
        .split("took payment ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("payment id in the message")
        .to_owned();
    assert!(is_payment_id(&id), "{out}");

    let took = took.join().expect("silent listener");
    assert!(
        took.contains(&id),
        "the silent payee got the payment: {took:?}"
    );

    world
        .run("alice", &["status", &id])
        .expect(1)
        .stderr_has("not_found");
    assert_balances(&world, &[("alice", 10000), ("bob", 10000)]);
    let (status, _) = bob.interrupt();
    assert_eq!(status.code(), Some(0));

    // The same payment, retried by id and expiry once bob is really
    // online, settles once; a second retry returns the same receipt.
    let expires_at = out
        .stderr
        .split("--expires-at ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .expect("expiry in the message")
        .to_owned();
    let mut bob = world.serve("bob", &[], false);
    bob.online();
    let retry = [
        "send",
        "bob",
        "40",
        "--id",
        &id,
        "--expires-at",
        &expires_at,
    ];
    let first = world.run("alice", &retry);
    first.expect(0);
    assert_eq!(payment_id_of(&first), id);
    let again = world.run("alice", &retry);
    again.expect(0);
    assert_eq!(payment_id_of(&again), id);
    // bob's serve tells the first (money moved) from the replay (issue
    // 10, item 9).
    let received = bob.line_where("received", |l| l.starts_with("received 40 from alice"));
    assert!(received.contains(&id), "{received}");
    let replayed = bob.line_where("replayed", |l| l.starts_with("replayed: payment"));
    assert!(
        replayed.contains("nothing moved") && replayed.contains(&id),
        "{replayed}"
    );
    assert_balances(&world, &[("alice", 10000 - 40), ("bob", 10000 + 40)]);
    let (status, _) = bob.interrupt();
    assert_eq!(status.code(), Some(0));
}

/// bob goes online twice (say, laptop then phone): the second announcement
/// wins, and stopping the first must not take the second offline.
#[test]
fn stopping_an_older_serve_keeps_the_newer_one_online() {
    let world = World::start();
    world.register(&["alice", "bob"]);

    let mut first = world.serve("bob", &[], false);
    first.online();
    let mut second = world.serve("bob", &[], false);
    let (newer, _) = second.online();
    let listed = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(
        listed["online"],
        serde_json::json!([{"name": "bob", "address": newer}])
    );

    let (status, _) = first.interrupt();
    assert_eq!(status.code(), Some(0));
    let listed = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(
        listed["online"],
        serde_json::json!([{"name": "bob", "address": newer}]),
        "the older serve's offline took the newer one's presence away"
    );
    world.run("alice", &["send", "bob", "7"]).expect(0);
    second.line_where("the newer serve's `received` line", |l| {
        l.starts_with("received 7 from alice")
    });

    let (status, _) = second.interrupt();
    assert_eq!(status.code(), Some(0));
    let listed = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(listed["online_count"], 0, "{listed}");
}

/// Issue 10 item 13: an idle `serve` keeps its server connection alive
/// past the server's idle timeout, stays listed and takes a payment
/// without ever losing the server.
#[test]
fn serve_stays_online_past_the_servers_idle_timeout() {
    let world = World::start_with(&["--idle-timeout-ms", "600"]);
    world.register(&["alice", "bob"]);
    let mut bob = world.serve("bob", &["--keepalive-ms", "150"], true);
    let (address, _) = bob.online();

    // Three idle timeouts without any payment traffic.
    std::thread::sleep(Duration::from_millis(1800));
    let listed = world.run("alice", &["--json", "list"]).expect(0).json();
    assert_eq!(
        listed["online"],
        serde_json::json!([{"name": "bob", "address": address}]),
        "bob was dropped: {:?}",
        bob.seen
    );
    world.run("alice", &["send", "bob", "5"]).expect(0);
    bob.line_where("the received event", |l| {
        l.contains(r#""event":"received""#)
    });
    assert!(
        !bob.seen.iter().any(|l| l.contains("reconnecting")),
        "serve lost the server while idle: {:?}",
        bob.seen
    );
    let (status, _) = bob.interrupt();
    assert_eq!(status.code(), Some(0));
}

/// Issue 10 item 13, issue 11: the server restarting under a running
/// `serve`: serve says it lost the server, reconnects (with backoff) on
/// the same listener, says it is online again, and takes payments again.
#[test]
fn serve_reconnects_after_the_server_restarts() {
    let mut world = World::start();
    world.register(&["alice", "bob"]);
    let mut bob = world.serve("bob", &[], true);
    let (address, listen) = bob.online();

    assert_eq!(
        world.stop_server().code(),
        Some(0),
        "{}",
        world.server_log()
    );
    let line = bob.line_where("a reconnecting event", |l| l.contains("reconnecting"));
    let event: Value = serde_json::from_str(&line).expect("JSON event");
    assert_eq!(event["event"], "reconnecting", "{event}");
    assert!(event["retry_in_ms"].as_u64().is_some(), "{event}");
    assert!(event["reason"].is_string(), "{event}");
    // A few attempts fail (and back off) while the server is down.
    std::thread::sleep(Duration::from_millis(700));
    assert!(bob.exited().is_none(), "serve gave up: {:?}", bob.seen);

    world.restart_server();
    let line = bob.line_where("online again", |l| l.contains(r#""event":"online""#));
    let event: Value = serde_json::from_str(&line).expect("JSON event");
    assert_eq!(event["address"], address, "{event}");
    assert_eq!(event["listen"], listen, "{event}");
    assert_eq!(event["replaced"], false, "{event}");
    let waits: Vec<u64> = bob
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "reconnecting")
        .filter_map(|e| e["retry_in_ms"].as_u64())
        .collect();
    assert!(waits.len() >= 2, "{waits:?}");
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");

    world.run("alice", &["send", "bob", "9"]).expect(0);
    bob.line_where("the received event", |l| {
        l.contains(r#""event":"received""#)
    });
    let (status, rest) = bob.interrupt();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some(r#"{"event":"offline"}"#)
    );
}

/// Issue 11: a second `serve` of the same person takes over; it says so,
/// and the first learns (by its keep-alive) that payers no longer reach it.
#[test]
fn a_second_serve_takes_over_and_both_are_told() {
    let world = World::start();
    world.register(&["alice", "bob"]);
    let mut first = world.serve("bob", &["--keepalive-ms", "100"], true);
    let line = first.next_line();
    assert!(line.contains(r#""replaced":false"#), "{line}");
    let mut second = world.serve("bob", &[], false);
    let line = second.next_line();
    assert!(
        line.starts_with("online as ") && line.contains("took over from an earlier serve of yours"),
        "{line}"
    );
    let (newer, _) = {
        let listed = world.run("alice", &["--json", "list"]).expect(0).json();
        let address = listed["online"][0]["address"]
            .as_str()
            .expect("bob listed")
            .to_owned();
        (address, ())
    };
    assert!(line.starts_with(&format!("online as {newer} ")), "{line}");
    let line = first.line_where("superseded", |l| l.contains("superseded"));
    let event: Value = serde_json::from_str(&line).expect("JSON event");
    assert_eq!(
        event,
        serde_json::json!({"event": "superseded", "address": newer})
    );
    // Only once, however many keep-alives follow.
    std::thread::sleep(Duration::from_millis(400));
    let (status, rest) = first.interrupt();
    assert_eq!(status.code(), Some(0));
    assert!(
        !rest.iter().any(|l| l.contains("superseded")),
        "superseded reported twice: {rest:?}"
    );
    let (status, _) = second.interrupt();
    assert_eq!(status.code(), Some(0));
}

/// Issue 11, item 3: a second server on a ledger file another server is
/// using refuses to start, naming the file; the first goes on settling.
#[test]
fn a_second_server_on_the_same_ledger_refuses_to_start() {
    let world = World::start();
    world.register(&["alice", "bob"]);
    let mut bob = world.serve("bob", &[], false);
    bob.online();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut second = std::process::Command::new(cli_support::SERVER);
    second
        .env_remove("RUST_LOG")
        .arg("--cert")
        .arg(world.certs.join("server.pem"))
        .arg("--key")
        .arg(world.certs.join("server.key"))
        .arg("--ca")
        .arg(world.certs.join("ca.pem"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(&world.db)
        .arg("--ready-file")
        .arg(dir.path().join("ready"));
    let out = run(&mut second, "a second micropay-server");
    out.expect(1).stderr_has(&format!(
        "{} is in use by another micropay-server",
        world.db.display()
    ));
    world.run("alice", &["send", "bob", "5"]).expect(0);
    assert_eq!(world.balance("bob"), 10005);
}

/// Issue 10, item 14: the ledger holds every payment and memo, so only
/// its owner may read it.
#[test]
fn the_ledger_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::start();
    world.register(&["alice"]);
    let mode = std::fs::metadata(&world.db)
        .expect("ledger")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{:o}", mode & 0o777);
}

/// `MICROPAY_JSON` takes the usual boolean spellings; anything else is a
/// usage error that names the accepted ones.
#[test]
fn micropay_json_takes_the_usual_boolean_spellings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    make_certs(&certs, &["alice"]);
    let server = format!("127.0.0.1:{}", dead_port());
    let with_env = |value: &str| {
        let mut cmd = client("alice", &certs, &server, &["balance"]);
        cmd.env("MICROPAY_JSON", value);
        run(&mut cmd, format!("MICROPAY_JSON={value}"))
    };
    for yes in ["1", "true", "TRUE", "yes", "on"] {
        let out = with_env(yes);
        out.expect(3);
        assert_eq!(out.json()["error"]["code"], "connect_failed", "{out}");
    }
    for no in ["0", "false", "no", "off"] {
        let out = with_env(no);
        out.expect(3).stderr_has("cannot connect");
        assert!(out.stdout.trim().is_empty(), "{out}");
    }
    with_env("maybe").expect(2).stderr_has("maybe");
}

/// An address in use: `serve --listen` exits 3 (not a usage error), the
/// server exits 3; unusable certificate files make the server exit 2.
#[test]
fn addresses_in_use_and_bad_files_have_their_exit_codes() {
    let world = World::start();
    world.register(&["alice"]);
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    world
        .run("alice", &["serve", "--listen", &taken_addr])
        .expect(3)
        .stderr_has("cannot listen");

    let server = |args: &[&str]| {
        let mut cmd = std::process::Command::new(cli_support::SERVER);
        cmd.args(args).env_remove("RUST_LOG");
        run(&mut cmd, format!("micropay-server {args:?}"))
    };
    let cert = world.certs.join("server.pem");
    let key = world.certs.join("server.key");
    let ca = world.certs.join("ca.pem");
    let db = world.dir.path().join("other.db");
    let files = |cert: &std::path::Path| {
        vec![
            "--cert".to_owned(),
            cert.display().to_string(),
            "--key".to_owned(),
            key.display().to_string(),
            "--ca".to_owned(),
            ca.display().to_string(),
            "--db".to_owned(),
            db.display().to_string(),
        ]
    };
    let mut in_use = files(&cert);
    in_use.extend(["--listen".to_owned(), taken_addr.clone()]);
    let args: Vec<&str> = in_use.iter().map(String::as_str).collect();
    server(&args).expect(3).stderr_has("cannot listen");
    let mut missing = files(&world.dir.path().join("nope.pem"));
    missing.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let args: Vec<&str> = missing.iter().map(String::as_str).collect();
    server(&args).expect(2).stderr_has("nope.pem");
}

/// `history` shows local date-times and stays aligned for the longest
/// names (32 characters); `status` shows a local date-time too.
#[test]
fn history_is_aligned_for_long_names_and_shows_local_times() {
    let world = World::start();
    let long = "a".repeat(32);
    make_certs(&world.certs, &[long.as_str()]);
    world.register(&["alice", long.as_str()]);
    let mut serve = world.serve(&long, &[], false);
    serve.online();
    let sent = world.run("alice", &["send", &long, "7", "--memo", "m"]);
    sent.expect(0);
    let id = payment_id_of(&sent);
    world.run("alice", &["send", "bob", "1"]).expect(1);
    let history = world.run("alice", &["history"]);
    history.expect(0);
    let lines: Vec<&str> = history.stdout.lines().collect();
    let header = lines.first().expect("a header");
    let row = lines
        .iter()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{history}"));
    // Every column after WITH starts where its header starts.
    for column in ["AMOUNT", "PAYMENT ID"] {
        let at = header.find(column).expect("column");
        let end = at + column.len();
        match column {
            "AMOUNT" => assert_eq!(row.get(end - 2..end), Some("-7"), "{history}"),
            _ => assert_eq!(row.get(at..at + 32), Some(id.as_str()), "{history}"),
        }
    }
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert!(is_local_datetime(&fields[1..4]), "{row}");
    let status = world.run("alice", &["status", &id]);
    status.expect(0);
    let words: Vec<&str> = status.stdout.split_whitespace().collect();
    assert!(
        words
            .windows(3)
            .any(|w| is_local_datetime(&[w[0], w[1], w[2].trim_end_matches(')')])),
        "{status}"
    );
    drop(serve);
}

/// Certificates of another deployment: both ends say so in words. The
/// client that trusts another CA names it (exit 3); the client whose own
/// certificate is another CA's hears that it was refused (exit 1); the
/// server logs both at the default level.
#[test]
fn another_deployments_certificates_are_named_on_both_sides() {
    let world = World::start();
    let other = world.dir.path().join("other");
    make_certs(&other, &["alice"]);
    let out = run(
        &mut client("alice", &other, &world.addr, &["balance"]),
        "alice of another deployment",
    );
    out.expect(3).stderr_has("not issued by the CA you trust");

    let mut cmd = client("alice", &other, &world.addr, &["balance"]);
    cmd.arg("--ca").arg(world.certs.join("ca.pem"));
    let out = run(&mut cmd, "alice with another deployment's certificate");
    // In TLS 1.3 the server judges the client's certificate after the
    // client's handshake is done: its alert names the reason when it is
    // read before the socket closes; a reset can beat it, and then the
    // client only knows the connection closed.
    match out.code {
        Some(1) => {
            out.stderr_has("refused your certificate")
                .stderr_has("not issued by the CA");
        }
        _ => {
            out.expect(3).stderr_has("connection closed");
        }
    }

    let deadline = Instant::now() + WAIT;
    loop {
        let log = world.server_log();
        if log.contains("not issued by this server's CA")
            && log.contains("does not trust this server's certificate")
        {
            break;
        }
        assert!(Instant::now() < deadline, "server log:\n{log}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A payee whose advertised address takes no connections: `send` names
/// the payee and the address, exits 3, and nothing moves.
#[test]
fn an_unreachable_payee_is_named() {
    let world = World::start();
    world.register(&["alice", "bob"]);
    let dead = format!("127.0.0.1:{}", dead_port());
    let mut serve = world.serve("bob", &["--advertise", &dead], false);
    serve.online();
    let out = world.run("alice", &["send", "bob", "5"]);
    out.expect(3)
        .stderr_has(&format!("cannot reach bob at {dead}"))
        .stderr_has("nothing was paid");
    let json = world.run("alice", &["--json", "send", "bob", "5"]);
    json.expect(3);
    assert_eq!(json.json()["error"]["code"], "connect_failed", "{json}");
    assert_balances(&world, &[("alice", 10000), ("bob", 10000)]);
    drop(serve);
}

/// Every program's `--help` opens with what that program does, never the
/// crate's tagline, and names its value placeholders (no `<AS_NAME>`).
#[test]
fn every_help_says_what_its_program_does() {
    let tagline = env!("CARGO_PKG_DESCRIPTION");
    for (program, says) in [
        (cli_support::SERVER, "The micropay server"),
        (cli_support::CLIENT, "micropay command line"),
        (cli_support::CERTS, "certificates"),
        (env!("CARGO_BIN_EXE_micropay-bench"), "Measure micropay"),
    ] {
        let out = run(std::process::Command::new(program).arg("--help"), program);
        out.expect(0);
        let first = out.stdout.lines().next().unwrap_or_default();
        assert!(first.contains(says), "{program}: {first:?}");
        assert!(!out.stdout.contains(tagline), "{program} shows the tagline");
        assert!(!out.stdout.contains("<AS_NAME>"), "{program}:\n{out}");
    }
}

/// `scripts/crash-test.sh` refuses a round count that is not a whole
/// number from 1, before building anything.
#[test]
fn crash_test_script_refuses_a_bad_round_count() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/crash-test.sh");
    for bad in ["abc", "0", "-3", "1.5"] {
        let out = run(
            std::process::Command::new("bash").arg(script).arg(bad),
            format!("crash-test.sh {bad}"),
        );
        out.expect(2).stderr_has("usage");
    }
}
