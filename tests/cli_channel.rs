//! Payment channels from the command line, with the real binaries: bob
//! serves with a channel directory, alice opens a channel, streams units
//! and bob closes it; exactly the paid links move and the ledger audits
//! clean.

mod cli_support;

use cli_support::World;

#[test]
fn two_people_open_stream_and_close_a_channel_from_the_command_line() {
    let world = World::start();
    world.register(&["alice", "bob"]);
    let bob_dir = world.dir.path().join("bob-channels");
    let alice_dir = world.dir.path().join("alice-channels");
    let (bob_dir, alice_dir) = (
        bob_dir.to_str().expect("utf-8 path"),
        alice_dir.to_str().expect("utf-8 path"),
    );
    let mut bob = world.serve("bob", &["--channels-dir", bob_dir], false);
    bob.online();
    let opened = world.run(
        "alice",
        &[
            "--json", "channel", "--dir", alice_dir, "open", "bob", "--links", "100", "--value",
            "2",
        ],
    );
    opened.expect(0);
    let id = opened.json()["channel_id"]
        .as_str()
        .expect("a channel id")
        .to_owned();
    assert_eq!(
        world.balance_and_held("alice"),
        (10_000 - 200, 200),
        "the hold left alice's balance and shows as held"
    );
    world
        .run(
            "alice",
            &[
                "channel", "--dir", alice_dir, "pay", &id, "--units", "3", "--repeat", "4",
            ],
        )
        .expect(0)
        .stdout_has("12 of 100 links paid");
    // Both sides list the channel with the links paid.
    world
        .run("alice", &["channel", "--dir", alice_dir, "list"])
        .expect(0)
        .stdout_has(&id)
        .stdout_has("payer")
        .stdout_has("12/100");
    let listed = world.run("bob", &["--json", "channel", "--dir", bob_dir, "list"]);
    listed.expect(0);
    let channel = &listed.json()["channels"][0];
    assert_eq!(channel["role"], "payee");
    assert_eq!(channel["peer"], "alice");
    assert_eq!(
        (channel["paid"].as_u64(), channel["links"].as_u64()),
        (Some(12), Some(100))
    );
    // More than the channel has: exhausted, nothing sent.
    world
        .run(
            "alice",
            &["channel", "--dir", alice_dir, "pay", &id, "--units", "1000"],
        )
        .expect(1)
        .stderr_has("exhausted");
    let (status, _) = bob.interrupt();
    assert!(status.success(), "serve after SIGINT: {status}");
    world
        .run("bob", &["channel", "--dir", bob_dir, "close"])
        .expect(0)
        .stdout_has("closed 1 channel(s)");
    assert_eq!(world.balance("bob"), 10_000 + 24);
    assert_eq!(world.balance("alice"), 10_000 - 24);
    world.audit().expect(0);
}
