//! Key lifecycle through the real binaries: `micropay-certs --next`,
//! `micropay-client rotate` (rotation and renewal) and
//! `micropay-server rebind`, exactly as README.md tells people to run them.
//!
//! Every child process is bounded by `WAIT` and killed when its guard
//! drops.

mod cli_support;

use std::path::Path;
use std::process::Command;

use cli_support::{run, World, CERTS, SERVER};

fn certs(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new(CERTS);
    cmd.arg("--out").arg(dir).args(args);
    run(&mut cmd, format!("micropay-certs {args:?}")).expect(0);
}

/// Moves NAME.next.pem (and NAME.next.key, when there is one) over the
/// current files, as README.md says to after a rotation.
fn promote(dir: &Path, name: &str) {
    for ext in ["pem", "key"] {
        let next = dir.join(format!("{name}.next.{ext}"));
        if next.exists() {
            std::fs::rename(&next, dir.join(format!("{name}.{ext}"))).expect("rename");
        }
    }
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

#[test]
fn rotate_renew_and_rebind_through_the_binaries() {
    let mut world = World::start();
    world.register(&["alice", "bob"]);
    let dir = world.certs.clone();

    // Rotation: a new key in alice.next.*, signed over by alice.key.
    certs(&dir, &["--next", "alice"]);
    let (next_pem, next_key) = (path(&dir, "alice.next.pem"), path(&dir, "alice.next.key"));
    world
        .run(
            "alice",
            &["rotate", "--new-cert", &next_pem, "--new-key", &next_key],
        )
        .expect(0)
        .stdout_has("rotated alice: account bound to key");
    world
        .run("alice", &["balance"])
        .expect(1)
        .stderr_has("key_mismatch");
    promote(&dir, "alice");
    assert_eq!(world.balance("alice"), 10_000);

    // Renewal: a new certificate for the key alice has now.
    certs(&dir, &["--days", "400", "--next", "--keep-key", "alice"]);
    assert!(
        !dir.join("alice.next.key").exists(),
        "a renewal keeps the key"
    );
    let key = path(&dir, "alice.key");
    world
        .run(
            "alice",
            &[
                "--json",
                "rotate",
                "--new-cert",
                &next_pem,
                "--new-key",
                &key,
            ],
        )
        .expect(0)
        .stdout_has("\"kind\":\"renew\"");
    promote(&dir, "alice");
    assert_eq!(world.balance("alice"), 10_000);

    // Rebind: bob lost his key; the operator binds his account to a new
    // certificate, with the server stopped (SQLite's lock says so otherwise).
    certs(&dir, &["--next", "bob"]);
    let db = world.db.clone();
    let rebind = |who: &str, cert: &str| {
        let mut cmd = Command::new(SERVER);
        cmd.env_remove("RUST_LOG")
            .args(["rebind", who, "--cert", cert, "--ca"])
            .arg(dir.join("ca.pem"))
            .arg("--db")
            .arg(&db)
            .arg("--key")
            .arg(dir.join("server.key"));
        run(&mut cmd, format!("micropay-server rebind {who}"))
    };
    let bob_next = path(&dir, "bob.next.pem");
    rebind("bob", &bob_next)
        .expect(1)
        .stderr_has("stop that server first");
    world.stop_server();
    rebind("alice", &bob_next)
        .expect(1)
        .stderr_has("not alice's");
    rebind("bob", &bob_next)
        .expect(0)
        .stdout_has("rebound bob to key");
    world.audit().expect(0).stdout_has("audit: OK");
    world.restart_server();
    world
        .run("bob", &["balance"])
        .expect(1)
        .stderr_has("key_mismatch");
    promote(&dir, "bob");
    assert_eq!(world.balance("bob"), 10_000);
}
