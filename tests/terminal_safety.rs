//! What a peer controls never drives the terminal: memos, names and
//! error text are escaped in every human-readable output of the real
//! client, and stay exact in its JSON (issue 10, item 7).

mod cli_support;

use cli_support::World;

/// An OSC 52 clipboard write, a screen clear, a colour and a fake line.
const EVIL: &str = "\u{1b}]52;c;aGk=\u{7}\u{1b}[2J\u{1b}[31mfake\nrow";

#[track_caller]
fn assert_inert(what: &str, text: &str) {
    for c in ['\u{1b}', '\u{7}'] {
        assert!(!text.contains(c), "{what} printed a raw {c:?}:\n{text}");
    }
    assert!(
        text.contains("\\u{1b}]52;c;aGk=\\u{7}\\u{1b}[2J\\u{1b}[31mfake\\u{a}row"),
        "{what} does not show the memo escaped:\n{text}"
    );
}

#[test]
fn memos_reach_terminals_escaped_and_json_exactly() {
    let world = World::start();
    world.register(&["alice", "bob"]);
    let mut bob = world.serve("bob", &[], false);
    bob.online();

    let sent = world.run("alice", &["send", "bob", "5", "--memo", EVIL]);
    sent.expect(0);
    assert_inert("alice's send", &sent.stdout);
    let received = bob.line_where("received", |l| l.starts_with("received 5 from alice"));
    assert_inert("bob's serve", &received);
    for who in ["alice", "bob"] {
        let history = world.run(who, &["history"]);
        history.expect(0);
        assert_inert(&format!("{who}'s history"), &history.stdout);
    }
    let json = world.run("bob", &["--json", "history"]);
    assert_eq!(json.expect(0).json()["entries"][0]["memo"], EVIL);
}
