//! `scripts/gen-certs.sh` and the `micropay-certs` binary behind it, run in
//! temporary directories: the files, their modes, the refusals, the CA
//! kept across runs, standard output that openssl accepts, and a
//! certificate issued by openssl from a CSR working everywhere an rcgen one
//! does (server, peer listener, payer, payment signatures, audit).
//!
//! The script is run for the main story (it is what people type); the
//! other cases call the built binary directly, which is the same program
//! without the `cargo build` step.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use micropay::core::name::Name;
use micropay::ledger::{self, LedgerConfig};
use micropay::net::session::SessionLimits;
use micropay::net::tls::{self, Material};
use micropay::person::{self, Person, SendOptions, ServeEvent, ServeOptions};
use micropay::server::{self, RunningServer, ServerLimits, ServerOptions};
use micropay::wire::{Balance, Registered, ServerRequest};
use tokio::sync::{mpsc, oneshot};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const CERTS_BIN: &str = env!("CARGO_BIN_EXE_micropay-certs");

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-certs.sh")
}

/// Held for reading while a test runs `micropay-certs`, for writing by the
/// one test whose real `cargo build` may replace that file.
static BINARY: RwLock<()> = RwLock::new(());

/// Runs `micropay-certs ARGS` in `cwd`.
fn certs(cwd: &Path, args: &[&str]) -> Output {
    let _reading = BINARY.read().unwrap_or_else(|p| p.into_inner());
    Command::new(CERTS_BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run micropay-certs")
}

/// The target directory this test suite was built in, taken from where
/// cargo put `micropay-certs` (`TARGET/release/micropay-certs`), when it is
/// a release build; `None` (with a note) otherwise, since the script always
/// runs the release binary.
fn release_target_dir() -> Option<PathBuf> {
    let dir = Path::new(CERTS_BIN)
        .parent()
        .filter(|profile| profile.file_name().is_some_and(|n| n == "release"))
        .and_then(Path::parent)
        .map(Path::to_owned);
    if dir.is_none() {
        eprintln!("note: not a release build; run `cargo test --release` to test gen-certs.sh");
    }
    dir
}

/// How the script's `cargo` step is served.
enum Cargo {
    /// A stand-in `cargo` first on PATH that records its arguments and
    /// succeeds: the script then runs the `micropay-certs` this test build
    /// made. (The real `cargo build --release` after `cargo test --release`
    /// is not free: dev-dependencies change features of shared crates, so
    /// it recompiles micropay, about a minute on a small machine.)
    Recorded,
    /// A stand-in `cargo` that fails, as a broken build would.
    Failing,
    /// The real cargo.
    Real,
}

struct ScriptRun {
    output: Output,
    /// The arguments the stand-in `cargo` was called with.
    cargo_args: Vec<String>,
}

/// Runs `scripts/gen-certs.sh ARGS` in `cwd` under umask 000, so that the
/// key modes are the tool's doing and not the umask's, with
/// `CARGO_TARGET_DIR` set to this test build's target directory.
fn script(cwd: &Path, cargo: Cargo, args: &[&str]) -> Option<ScriptRun> {
    let target_dir = release_target_dir()?;
    let shim = tempdir();
    let log = shim.path().join("cargo.args");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(script_path())
        .args(args)
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", &target_dir);
    let status = match cargo {
        Cargo::Recorded => Some(0),
        Cargo::Failing => Some(101),
        Cargo::Real => None,
    };
    if let Some(status) = status {
        let fake = shim.path().join("cargo");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexit {status}\n",
                log.display()
            ),
        )
        .expect("write stand-in cargo");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))
            .expect("chmod stand-in cargo");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![shim.path().to_owned()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    }
    let output = {
        // Exclusive only for the real build, which may relink the binary.
        let _lock = match cargo {
            Cargo::Real => Err(BINARY.write().unwrap_or_else(|p| p.into_inner())),
            _ => Ok(BINARY.read().unwrap_or_else(|p| p.into_inner())),
        };
        cmd.output().expect("run scripts/gen-certs.sh")
    };
    let cargo_args = std::fs::read_to_string(&log)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default();
    Some(ScriptRun { output, cargo_args })
}

/// Asserts the stand-in cargo was asked to build `micropay-certs` in
/// release mode from this repository.
fn assert_builds_micropay_certs(cargo_args: &[String]) {
    let at = |flag: &str| {
        cargo_args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| cargo_args.get(i + 1))
            .unwrap_or_else(|| panic!("cargo {cargo_args:?} lacks {flag}"))
    };
    assert_eq!(cargo_args.first().map(String::as_str), Some("build"));
    assert!(
        cargo_args.iter().any(|a| a == "--release"),
        "{cargo_args:?}"
    );
    assert_eq!(at("--bin"), "micropay-certs");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    assert_eq!(
        std::fs::canonicalize(at("--manifest-path")).expect("manifest exists"),
        std::fs::canonicalize(manifest).expect("our manifest"),
    );
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_success(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed:\n{}", text(output));
    assert_no_key_printed(output, what);
}

fn assert_refused(output: &Output, what: &str) -> String {
    assert!(
        !output.status.success(),
        "{what} should have been refused:\n{}",
        text(output)
    );
    assert_no_key_printed(output, what);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.trim().is_empty(),
        "{what}: a refusal explains itself"
    );
    stderr
}

fn assert_no_key_printed(output: &Output, what: &str) {
    for stream in [&output.stdout, &output.stderr] {
        let s = String::from_utf8_lossy(stream);
        assert!(!s.contains("PRIVATE KEY"), "{what} printed a private key");
    }
}

/// File names in `dir`.
fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn names(files: &[&str]) -> BTreeSet<String> {
    files.iter().map(|f| (*f).to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Asserts the files of a full run and their modes.
fn assert_layout(dir: &Path, people: &[&str]) {
    let mut expected = names(&["ca.pem", "ca.key", "server.pem", "server.key"]);
    for who in people {
        expected.insert(format!("{who}.pem"));
        expected.insert(format!("{who}.key"));
    }
    assert_eq!(listing(dir), expected);
    for file in &expected {
        let path = dir.join(file);
        let want = if file.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&path), want, "mode of {file}: {:o}", mode(&path));
        let body = String::from_utf8(read(&path)).expect("PEM is text");
        let marker = if file.ends_with(".key") {
            "-----BEGIN PRIVATE KEY-----"
        } else {
            "-----BEGIN CERTIFICATE-----"
        };
        assert!(body.starts_with(marker), "{file} starts with {marker}");
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

// ---------------------------------------------------------------------
// openssl, when present
// ---------------------------------------------------------------------

fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: `openssl` is not on PATH; skipping the openssl checks");
    }
    found
}

fn openssl(cwd: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run openssl")
}

/// `openssl verify -CAfile ca.pem [-purpose P] FILE` in `dir`.
fn openssl_verify(dir: &Path, file: &str, purpose: Option<&str>) -> Output {
    let mut args = vec!["verify", "-CAfile", "ca.pem"];
    if let Some(purpose) = purpose {
        args.extend(["-purpose", purpose]);
    }
    args.push(file);
    openssl(dir, &args)
}

fn assert_openssl_ok(dir: &Path, file: &str, purpose: Option<&str>) {
    let out = openssl_verify(dir, file, purpose);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == format!("{file}: OK"),
        "openssl verify {file} (purpose {purpose:?}):\n{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------
// Certificate contents, read with x509-parser
// ---------------------------------------------------------------------

struct CertFacts {
    cn: Vec<String>,
    dns: Vec<String>,
    ips: Vec<Vec<u8>>,
    client_auth: bool,
    server_auth: bool,
    is_ca: bool,
    digital_signature: bool,
    not_before: i64,
    not_after: i64,
    key_oid: String,
    issuer: String,
    subject: String,
}

fn facts(path: &Path) -> CertFacts {
    let pem = read(path);
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let (_, cert) = X509Certificate::from_der(&pem.contents).expect("X.509");
    let mut facts = CertFacts {
        cn: cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().expect("CN text").to_owned())
            .collect(),
        dns: Vec::new(),
        ips: Vec::new(),
        client_auth: false,
        server_auth: false,
        is_ca: false,
        digital_signature: false,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key_oid: cert.public_key().algorithm.algorithm.to_id_string(),
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for general_name in &san.general_names {
                    match general_name {
                        GeneralName::DNSName(dns) => facts.dns.push((*dns).to_owned()),
                        GeneralName::IPAddress(ip) => facts.ips.push(ip.to_vec()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                facts.client_auth = eku.client_auth;
                facts.server_auth = eku.server_auth;
            }
            ParsedExtension::BasicConstraints(bc) => facts.is_ca = bc.ca,
            ParsedExtension::KeyUsage(ku) => facts.digital_signature = ku.digital_signature(),
            _ => {}
        }
    }
    facts
}

const OID_ED25519: &str = "1.3.101.112";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// ---------------------------------------------------------------------
// The script
// ---------------------------------------------------------------------

#[test]
fn script_makes_the_files_with_the_right_modes() {
    let tmp = tempdir();
    // --out is relative to the caller's directory.
    let Some(run) = script(
        tmp.path(),
        Cargo::Recorded,
        &["--out", "certs", "alice", "bob"],
    ) else {
        return;
    };
    assert_success(&run.output, "gen-certs.sh alice bob");
    assert_builds_micropay_certs(&run.cargo_args);
    let dir = tmp.path().join("certs");
    assert_layout(&dir, &["alice", "bob"]);
    assert_eq!(listing(tmp.path()), names(&["certs"]));

    // The files load as TLS material for each party.
    for (cert, key) in [
        ("server.pem", "server.key"),
        ("alice.pem", "alice.key"),
        ("bob.pem", "bob.key"),
    ] {
        Material::from_files(&dir.join("ca.pem"), &dir.join(cert), &dir.join(key))
            .unwrap_or_else(|e| panic!("{cert} loads: {e}"));
    }
    let alice = Person::load(
        &dir.join("ca.pem"),
        &dir.join("alice.pem"),
        &dir.join("alice.key"),
    )
    .expect("alice loads");
    assert_eq!(alice.name.as_str(), "alice");

    if have_openssl() {
        for file in ["alice.pem", "bob.pem", "server.pem"] {
            assert_openssl_ok(&dir, file, None);
        }
    }

    // Without --out: certs/ in the caller's directory.
    let other = tempdir();
    let Some(run) = script(other.path(), Cargo::Recorded, &["carol"]) else {
        return;
    };
    assert_success(&run.output, "gen-certs.sh carol");
    assert_layout(&other.path().join("certs"), &["carol"]);
}

#[test]
fn script_refuses_a_bad_name_and_writes_nothing() {
    let tmp = tempdir();
    let Some(run) = script(
        tmp.path(),
        Cargo::Recorded,
        &["--out", "certs", "alice", "Bad_Name"],
    ) else {
        return;
    };
    let stderr = assert_refused(&run.output, "gen-certs.sh alice Bad_Name");
    assert!(stderr.contains("Bad_Name"), "names the culprit: {stderr}");
    assert!(listing(tmp.path()).is_empty(), "nothing written");

    // Refusing to overwrite, through the script too.
    let Some(run) = script(tmp.path(), Cargo::Recorded, &["--out", "certs", "alice"]) else {
        return;
    };
    assert_success(&run.output, "gen-certs.sh alice");
    let before = read(&tmp.path().join("certs/alice.pem"));
    let Some(run) = script(tmp.path(), Cargo::Recorded, &["--out", "certs", "alice"]) else {
        return;
    };
    let stderr = assert_refused(&run.output, "gen-certs.sh alice again");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(read(&tmp.path().join("certs/alice.pem")), before);
}

#[test]
fn script_stops_when_the_build_fails() {
    let tmp = tempdir();
    let Some(run) = script(tmp.path(), Cargo::Failing, &["--out", "certs", "alice"]) else {
        return;
    };
    assert!(
        !run.output.status.success(),
        "a failed build fails the script:\n{}",
        text(&run.output)
    );
    assert_builds_micropay_certs(&run.cargo_args);
    assert!(listing(tmp.path()).is_empty(), "nothing written");
}

#[test]
#[ignore = "slow: after `cargo test --release` the script's own `cargo build --release` \
            recompiles micropay without dev-dependency features (about a minute); \
            run with `cargo test --release --test gen_certs -- --ignored`"]
fn script_builds_for_real() {
    let tmp = tempdir();
    let Some(run) = script(tmp.path(), Cargo::Real, &["--out", "certs", "alice"]) else {
        return;
    };
    assert_success(&run.output, "gen-certs.sh alice with the real cargo");
    assert_layout(&tmp.path().join("certs"), &["alice"]);
}

// ---------------------------------------------------------------------
// The binary: names, overwriting, the CA
// ---------------------------------------------------------------------

#[test]
fn bad_names_are_refused_and_nothing_is_written() {
    let too_long = "a".repeat(33);
    let cases: Vec<Vec<&str>> = vec![
        vec!["Bad_Name"],
        vec!["Alice"],
        vec!["bob.smith"],
        vec!["-x"],
        vec!["--", "-x"],
        vec!["--", "-dash-first"],
        vec![too_long.as_str()],
        vec![""],
        vec!["caf\u{e9}"],
        vec!["has space"],
        vec!["../escape"],
        // One good name does not let a bad one through.
        vec!["alice", "Bad_Name"],
        vec!["alice", too_long.as_str()],
    ];
    for bad in cases {
        // Into a directory that does not exist yet ...
        let tmp = tempdir();
        let mut args = vec!["--out", "certs"];
        args.extend(&bad);
        let out = certs(tmp.path(), &args);
        let stderr = assert_refused(&out, &format!("{bad:?}"));
        let culprit = bad.last().expect("a name");
        if !culprit.is_empty() {
            assert!(
                stderr.contains(culprit),
                "{bad:?}: the message names {culprit:?}: {stderr}"
            );
        }
        assert!(listing(tmp.path()).is_empty(), "{bad:?}: nothing written");

        // ... and into one that already holds a CA.
        let dir = tmp.path().join("certs");
        assert_success(&certs(tmp.path(), &["--out", "certs"]), "CA only");
        let before = listing(&dir);
        let ca_before = read(&dir.join("ca.pem"));
        let out = certs(tmp.path(), &args);
        assert_refused(&out, &format!("{bad:?} with a CA"));
        assert_eq!(listing(&dir), before, "{bad:?}: nothing written");
        assert_eq!(read(&dir.join("ca.pem")), ca_before);
    }
}

#[test]
fn boundary_names_are_accepted() {
    let tmp = tempdir();
    // Digits first, inner hyphens, the longest name (32 characters).
    let longest = format!("z{}x", "-9".repeat(15));
    assert_eq!(longest.len(), 32);
    let out = certs(
        tmp.path(),
        &["--out", "c", "0a", "a-b", "a--b", longest.as_str()],
    );
    assert_success(&out, "boundary names");
    assert_layout(
        &tmp.path().join("c"),
        &["0a", "a-b", "a--b", longest.as_str()],
    );
    let facts = facts(&tmp.path().join("c").join(format!("{longest}.pem")));
    assert_eq!(facts.dns, vec![longest.clone()]);
}

#[test]
fn existing_person_is_not_overwritten_without_force() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(
        &certs(tmp.path(), &["--out", "certs", "alice"]),
        "first run",
    );
    let alice_pem = dir.join("alice.pem");
    let alice_key = dir.join("alice.key");
    let (cert_before, key_before) = (read(&alice_pem), read(&alice_key));
    let ca_before = (read(&dir.join("ca.pem")), read(&dir.join("ca.key")));

    // Again: refused, nothing changes.
    let out = certs(tmp.path(), &["--out", "certs", "alice"]);
    let stderr = assert_refused(&out, "second run without --force");
    assert!(stderr.contains("--force"), "says how: {stderr}");
    assert!(stderr.contains("alice."), "names the file: {stderr}");
    assert_eq!(read(&alice_pem), cert_before);
    assert_eq!(read(&alice_key), key_before);

    // A new person alongside an existing one: refused as a whole.
    let out = certs(tmp.path(), &["--out", "certs", "bob", "alice"]);
    assert_refused(&out, "bob alice without --force");
    assert_eq!(
        listing(&dir),
        names(&[
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "alice.pem",
            "alice.key"
        ]),
        "bob was not written either"
    );

    // Half a pair still counts as existing.
    std::fs::remove_file(&alice_pem).expect("remove alice.pem");
    assert_refused(
        &certs(tmp.path(), &["--out", "certs", "alice"]),
        "alice.key alone without --force",
    );
    assert_eq!(read(&alice_key), key_before);
    std::fs::write(&alice_pem, &cert_before).expect("restore alice.pem");

    // --force replaces certificate and key, keeps modes, keeps the CA.
    let out = certs(tmp.path(), &["--out", "certs", "--force", "alice"]);
    assert_success(&out, "--force");
    assert_ne!(read(&alice_pem), cert_before, "a new certificate");
    assert_ne!(read(&alice_key), key_before, "a new key");
    assert_layout(&dir, &["alice"]);
    assert_eq!(
        (read(&dir.join("ca.pem")), read(&dir.join("ca.key"))),
        ca_before,
        "--force never replaces the CA"
    );
    Material::from_files(&dir.join("ca.pem"), &alice_pem, &alice_key)
        .expect("the new pair matches");
}

#[test]
fn the_ca_is_reused_on_a_second_run() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(
        &certs(tmp.path(), &["--out", "certs", "alice"]),
        "first run",
    );
    let ca_pem = read(&dir.join("ca.pem"));
    let ca_key = read(&dir.join("ca.key"));
    let server_pem = read(&dir.join("server.pem"));

    let out = certs(tmp.path(), &["--out", "certs", "bob"]);
    assert_success(&out, "second run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kept") && stdout.contains("ca.pem"),
        "reports the CA kept: {stdout}"
    );
    assert_eq!(read(&dir.join("ca.pem")), ca_pem, "ca.pem unchanged");
    assert_eq!(read(&dir.join("ca.key")), ca_key, "ca.key unchanged");
    assert_eq!(
        read(&dir.join("server.pem")),
        server_pem,
        "server.pem unchanged"
    );
    assert_layout(&dir, &["alice", "bob"]);

    // Both people chain to the one CA.
    let ca_subject = facts(&dir.join("ca.pem")).subject;
    for who in ["alice", "bob"] {
        assert_eq!(facts(&dir.join(format!("{who}.pem"))).issuer, ca_subject);
    }
    if have_openssl() {
        assert_openssl_ok(&dir, "alice.pem", None);
        assert_openssl_ok(&dir, "bob.pem", None);
    }
}

#[test]
fn half_a_ca_is_refused() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(&certs(tmp.path(), &["--out", "certs"]), "CA");
    std::fs::remove_file(dir.join("ca.key")).expect("remove ca.key");
    let before = listing(&dir);
    let stderr = assert_refused(
        &certs(tmp.path(), &["--out", "certs", "alice"]),
        "ca.pem without ca.key",
    );
    assert!(stderr.contains("ca.pem"), "{stderr}");
    assert_eq!(listing(&dir), before, "nothing written");
}

#[test]
fn bad_days_are_refused() {
    for days in ["0", "3651", "-1", "many"] {
        let tmp = tempdir();
        assert_refused(
            &certs(tmp.path(), &["--out", "certs", "--days", days, "alice"]),
            &format!("--days {days}"),
        );
        assert!(
            listing(tmp.path()).is_empty(),
            "--days {days}: nothing written"
        );
    }
}

// ---------------------------------------------------------------------
// What the certificates say
// ---------------------------------------------------------------------

#[test]
fn certificates_have_the_promised_contents() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(&certs(tmp.path(), &["--out", "certs", "alice"]), "run");
    let now = now_s();
    const DAY: i64 = 86_400;

    let ca = facts(&dir.join("ca.pem"));
    assert!(ca.is_ca, "ca.pem is a CA");

    let alice = facts(&dir.join("alice.pem"));
    assert_eq!(alice.cn, vec!["alice"]);
    assert_eq!(alice.dns, vec!["alice"], "one DNS SAN, the name");
    assert!(alice.ips.is_empty());
    assert!(
        alice.client_auth && alice.server_auth,
        "ClientAuth and ServerAuth"
    );
    assert!(!alice.is_ca, "a person is not a CA");
    assert!(alice.digital_signature);
    assert_eq!(alice.key_oid, OID_ED25519, "Ed25519 by default");
    assert_eq!(alice.issuer, ca.subject);
    assert!(
        alice.not_before < now - 60 && alice.not_before > now - 3600,
        "starts a little in the past: {} vs now {now}",
        alice.not_before
    );
    assert!(
        (alice.not_after - (now + 365 * DAY)).abs() < DAY,
        "365 days by default"
    );

    let server = facts(&dir.join("server.pem"));
    assert_eq!(server.dns, vec!["localhost"]);
    assert_eq!(
        server.ips,
        vec![vec![127, 0, 0, 1], {
            let mut v6 = vec![0u8; 16];
            v6[15] = 1;
            v6
        }]
    );
    assert!(server.server_auth && !server.client_auth, "ServerAuth only");

    // --days, --server-name and --server-ip.
    let out = certs(
        tmp.path(),
        &[
            "--out",
            "other",
            "--days",
            "30",
            "--server-name",
            "pay.example",
            "--server-ip",
            "10.1.2.3",
            "bob",
        ],
    );
    assert_success(&out, "options");
    let other = tmp.path().join("other");
    let bob = facts(&other.join("bob.pem"));
    assert!((bob.not_after - (now + 30 * DAY)).abs() < DAY, "--days 30");
    let server = facts(&other.join("server.pem"));
    assert_eq!(server.dns, vec!["pay.example"]);
    assert_eq!(server.ips, vec![vec![10, 1, 2, 3]]);
}

#[test]
fn openssl_verifies_the_certificates() {
    if !have_openssl() {
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(
        &certs(tmp.path(), &["--out", "certs", "alice", "bob"]),
        "run",
    );
    for file in ["alice.pem", "bob.pem"] {
        assert_openssl_ok(&dir, file, None);
        assert_openssl_ok(&dir, file, Some("sslclient"));
        assert_openssl_ok(&dir, file, Some("sslserver"));
    }
    assert_openssl_ok(&dir, "server.pem", Some("sslserver"));
    let out = openssl_verify(&dir, "server.pem", Some("sslclient"));
    assert!(
        !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("server.pem: OK"),
        "the server certificate is not a client certificate:\n{}",
        text(&out)
    );
    // openssl reads the keys too.
    for key in ["alice.key", "server.key", "ca.key"] {
        let out = openssl(&dir, &["pkey", "-in", key, "-noout"]);
        assert!(out.status.success(), "openssl pkey {key}:\n{}", text(&out));
    }
}

#[test]
fn key_type_ecdsa_p256_works() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    let out = certs(
        tmp.path(),
        &["--out", "certs", "--key-type", "ecdsa-p256", "carol"],
    );
    assert_success(&out, "--key-type ecdsa-p256");
    assert_layout(&dir, &["carol"]);
    for file in ["ca.pem", "server.pem", "carol.pem"] {
        assert_eq!(facts(&dir.join(file)).key_oid, OID_EC_PUBLIC_KEY, "{file}");
    }
    let carol = Person::load(
        &dir.join("ca.pem"),
        &dir.join("carol.pem"),
        &dir.join("carol.key"),
    )
    .expect("carol loads");
    assert_eq!(carol.name.as_str(), "carol");
    // An Ed25519 person under the P-256 CA.
    assert_success(&certs(tmp.path(), &["--out", "certs", "dan"]), "dan");
    assert_eq!(facts(&dir.join("dan.pem")).key_oid, OID_ED25519);
    if have_openssl() {
        assert_openssl_ok(&dir, "carol.pem", None);
        assert_openssl_ok(&dir, "dan.pem", None);
    }
    assert_refused(
        &certs(tmp.path(), &["--out", "certs", "--key-type", "rsa", "erin"]),
        "--key-type rsa",
    );
}

// ---------------------------------------------------------------------
// A real server built from the tool's output
// ---------------------------------------------------------------------

async fn start_server_from(dir: &Path, db: &Path) -> RunningServer {
    let material = Material::from_files(
        &dir.join("ca.pem"),
        &dir.join("server.pem"),
        &dir.join("server.key"),
    )
    .expect("server material");
    let options = ServerOptions {
        tls: tls::server_config(&material).expect("server config"),
        signing_key: material.signing_key().expect("server key"),
        ledger: LedgerConfig {
            location: db.to_owned().into(),
            initial_balance: micropay::core::limits::INITIAL_BALANCE_DEFAULT,
        },
        limits: ServerLimits::default(),
        presence: Default::default(),
        refusals_per_minute: micropay::core::limits::REFUSALS_PER_WINDOW_DEFAULT,
        verify_batch_max: micropay::core::limits::VERIFY_BATCH_MAX_DEFAULT,
        crl: None,
    };
    server::spawn("127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("server starts")
}

fn load_person(dir: &Path, who: &str) -> Arc<Person> {
    Arc::new(
        Person::load(
            &dir.join("ca.pem"),
            &dir.join(format!("{who}.pem")),
            &dir.join(format!("{who}.key")),
        )
        .unwrap_or_else(|e| panic!("{who} loads: {e}")),
    )
}

async fn register(person: &Person, server: &str) {
    let link = person.connect_server(server).await.expect("connects");
    let registered: Registered = link
        .call(&ServerRequest::Register {})
        .await
        .unwrap_or_else(|e| panic!("{} registers: {e}", person.name));
    assert_eq!(registered.name, person.name.as_str());
    assert_eq!(registered.balance, 10_000);
}

async fn balance(person: &Person, server: &str) -> u64 {
    let link = person.connect_server(server).await.expect("connects");
    let balance: Balance = link
        .call(&ServerRequest::Balance {})
        .await
        .expect("balance");
    balance.balance
}

/// A person serving payments until the returned sender is dropped or
/// fires, with the serve task and its events.
struct Serving {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), person::PeerError>>,
    events: mpsc::Receiver<ServeEvent>,
}

async fn go_online(person: Arc<Person>, server: &str) -> Serving {
    let (events_tx, mut events) = mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        server: server.to_owned(),
        limits: SessionLimits::default(),
        reconnect: person::Reconnect::default(),
        channels_dir: None,
        log_state: None,
    };
    let task = tokio::spawn(person::serve(person, options, events_tx, async move {
        let _ = stop_rx.await;
    }));
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Some(ServeEvent::Online { .. })) => {}
        other => panic!("expected to go online, got {other:?}"),
    }
    Serving { stop, task, events }
}

impl Serving {
    async fn next_event(&mut self) -> ServeEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event in time")
            .expect("an event")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve stops in time")
            .expect("serve task")
            .expect("serve ends cleanly");
    }
}

async fn pay(payer: &Person, payee: &str, amount: u64, server: &str) -> u64 {
    let mut options = SendOptions::new(server, Name::parse(payee).expect("name"), amount);
    options.memo = format!("{} pays {payee}", payer.name);
    options.timeout_ms = 10_000;
    let sent = person::send(payer, &options)
        .await
        .unwrap_or_else(|e| panic!("{} pays {payee}: {e}", payer.name));
    sent.balance
}

/// Issues `who`'s certificate with openssl from a CSR, signed with the
/// tool's `ca.key`. `genpkey` is the openssl key algorithm arguments.
fn openssl_issue(dir: &Path, who: &str, genpkey: &[&str]) {
    let key = format!("{who}.key");
    let csr = format!("{who}.csr");
    let pem = format!("{who}.pem");
    let ext = format!("{who}.ext");
    let mut args = vec!["genpkey"];
    args.extend(genpkey);
    args.extend(["-out", key.as_str()]);
    let run = |args: &[&str]| {
        let out = openssl(dir, args);
        assert!(out.status.success(), "openssl {args:?}:\n{}", text(&out));
    };
    run(&args);
    let subj = format!("/CN={who}");
    let san = format!("subjectAltName=DNS:{who}");
    run(&[
        "req", "-new", "-key", &key, "-subj", &subj, "-addext", &san, "-out", &csr,
    ]);
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=DNS:{who}\n\
             extendedKeyUsage=clientAuth,serverAuth\n\
             keyUsage=critical,digitalSignature\n\
             basicConstraints=critical,CA:FALSE\n"
        ),
    )
    .expect("write extfile");
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "0x5eed0001cafe",
        "-days",
        "30",
        "-extfile",
        &ext,
        "-out",
        &pem,
    ]);
}

#[tokio::test]
async fn openssl_issued_certificate_works_like_an_rcgen_one() {
    if !have_openssl() {
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(&certs(tmp.path(), &["--out", "certs", "alice"]), "run");

    // dave: Ed25519 key and certificate made by openssl, signed with the
    // tool's CA key. erin: the same with a P-256 key.
    openssl_issue(&dir, "dave", &["-algorithm", "ed25519"]);
    openssl_issue(
        &dir,
        "erin",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    for who in ["dave", "erin"] {
        let file = format!("{who}.pem");
        assert_openssl_ok(&dir, &file, None);
        let f = facts(&dir.join(&file));
        assert_eq!(f.dns, vec![who]);
        assert!(f.client_auth && f.server_auth);
    }

    let db = tmp.path().join("ledger.db");
    let running = start_server_from(&dir, &db).await;
    let addr = running.addr.to_string();

    let alice = load_person(&dir, "alice");
    let dave = load_person(&dir, "dave");
    let erin = load_person(&dir, "erin");
    assert_eq!(dave.name.as_str(), "dave");
    assert_eq!(erin.name.as_str(), "erin");
    for person in [&alice, &dave, &erin] {
        register(person, &addr).await;
    }

    // alice (rcgen) pays dave (openssl): dave's certificate serves as his
    // peer listener's, under the name alice dials.
    let mut dave_online = go_online(dave.clone(), &addr).await;
    assert_eq!(pay(&alice, "dave", 250, &addr).await, 9_750);
    match dave_online.next_event().await {
        ServeEvent::Received { payer, amount, .. } => {
            assert_eq!((payer.as_str(), amount), ("alice", 250));
        }
        other => panic!("expected a payment, got {other:?}"),
    }
    // erin (openssl, P-256) pays dave too.
    assert_eq!(pay(&erin, "dave", 40, &addr).await, 9_960);
    dave_online.stop().await;

    // dave pays alice: dave's certificate as the payer's, his openssl key
    // signing the payment.
    let alice_online = go_online(alice.clone(), &addr).await;
    assert_eq!(
        pay(&dave, "alice", 100, &addr).await,
        10_000 + 250 + 40 - 100
    );
    alice_online.stop().await;

    assert_eq!(balance(&alice, &addr).await, 10_000 - 250 + 100);
    assert_eq!(balance(&dave, &addr).await, 10_190);
    assert_eq!(balance(&erin, &addr).await, 9_960);

    running.shutdown().await.expect("server shuts down");
    let report = ledger::audit(&db).expect("audit runs");
    assert!(
        report.violations.is_empty(),
        "audit: {:?}",
        report.violations
    );
    assert_eq!(report.accounts, 3);
    assert_eq!(report.payments, 3);
}

#[tokio::test]
async fn ecdsa_p256_people_register_and_pay() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(
        &certs(
            tmp.path(),
            &["--out", "certs", "--key-type", "ecdsa-p256", "carol", "dan"],
        ),
        "run",
    );
    let db = tmp.path().join("ledger.db");
    let running = start_server_from(&dir, &db).await;
    let addr = running.addr.to_string();
    let carol = load_person(&dir, "carol");
    let dan = load_person(&dir, "dan");
    register(&carol, &addr).await;
    register(&dan, &addr).await;
    let dan_online = go_online(dan.clone(), &addr).await;
    assert_eq!(pay(&carol, "dan", 7, &addr).await, 9_993);
    dan_online.stop().await;
    assert_eq!(balance(&dan, &addr).await, 10_007);
    running.shutdown().await.expect("server shuts down");
    let report = ledger::audit(&db).expect("audit runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

// ---------------------------------------------------------------------
// Names the deployment uses, and what --force may touch
// ---------------------------------------------------------------------

/// The CA's and the server's files, byte for byte.
fn deployment_files(dir: &Path) -> Vec<Vec<u8>> {
    ["ca.pem", "ca.key", "server.pem", "server.key"]
        .iter()
        .map(|f| read(&dir.join(f)))
        .collect()
}

#[test]
fn reserved_names_are_refused_and_nothing_is_written() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(
        &certs(
            tmp.path(),
            &["--out", "certs", "--server-name", "paybox", "alice"],
        ),
        "first run",
    );
    let before = deployment_files(&dir);
    let files = listing(&dir);
    // The tool's own files, the deployment's names and this server's
    // DNS name (read back from server.pem): never a person, --force or not.
    for who in ["ca", "server", "crl", "localhost", "paybox"] {
        for force in [false, true] {
            let mut args = vec!["--out", "certs"];
            if force {
                args.push("--force");
            }
            args.push(who);
            let stderr = assert_refused(&certs(tmp.path(), &args), &format!("{args:?}"));
            assert!(stderr.contains("reserved"), "{args:?}: says why: {stderr}");
            assert!(
                !stderr.contains("--force"),
                "{args:?}: does not suggest --force: {stderr}"
            );
            assert_eq!(
                deployment_files(&dir),
                before,
                "{args:?}: CA and server kept"
            );
            assert_eq!(listing(&dir), files, "{args:?}: nothing written");
        }
    }
    // A server name given on this very run is reserved too.
    let stderr = assert_refused(
        &certs(
            tmp.path(),
            &["--out", "fresh", "--server-name", "gateway", "gateway"],
        ),
        "a person named after this run's server",
    );
    assert!(stderr.contains("reserved"), "{stderr}");
    assert!(!tmp.path().join("fresh").exists(), "nothing written");
}

#[test]
fn force_replaces_only_the_named_people() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(
        &certs(
            tmp.path(),
            &[
                "--out",
                "certs",
                "--server-name",
                "paybox",
                "--server-ip",
                "10.0.0.5",
                "alice",
                "dave",
            ],
        ),
        "first run",
    );
    let before = deployment_files(&dir);
    let alice = (read(&dir.join("alice.pem")), read(&dir.join("alice.key")));
    let dave = read(&dir.join("dave.pem"));

    // --force dave, through the script: dave only.
    if let Some(run) = script(
        tmp.path(),
        Cargo::Recorded,
        &["--out", "certs", "--force", "dave"],
    ) {
        assert_success(&run.output, "gen-certs.sh --force dave");
    } else {
        assert_success(
            &certs(tmp.path(), &["--out", "certs", "--force", "dave"]),
            "--force dave",
        );
    }
    assert_ne!(read(&dir.join("dave.pem")), dave, "dave re-issued");
    assert_eq!(deployment_files(&dir), before, "CA and server untouched");
    assert_eq!(
        (read(&dir.join("alice.pem")), read(&dir.join("alice.key"))),
        alice,
        "alice untouched"
    );
    let server = facts(&dir.join("server.pem"));
    assert_eq!(server.dns, vec!["paybox"], "custom server name kept");
    assert_eq!(server.ips, vec![vec![10, 0, 0, 5]], "custom server IP kept");

    // A new server name without --renew-server: said to be not applied.
    let out = certs(
        tmp.path(),
        &["--out", "certs", "--server-name", "other", "erin"],
    );
    assert_success(&out, "--server-name on an existing directory");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("not applied") && said.contains("--renew-server"),
        "says the server name was not applied: {said}"
    );
    assert_eq!(deployment_files(&dir), before, "server kept");

    // --renew-server replaces the server's pair (and only it).
    let out = certs(
        tmp.path(),
        &["--out", "certs", "--renew-server", "--server-name", "other"],
    );
    assert_success(&out, "--renew-server");
    let after = deployment_files(&dir);
    assert_eq!(after[..2], before[..2], "CA kept");
    assert_ne!(after[2], before[2], "new server.pem");
    assert_ne!(after[3], before[3], "new server.key");
    assert_eq!(facts(&dir.join("server.pem")).dns, vec!["other"]);
    assert_eq!(
        (read(&dir.join("alice.pem")), read(&dir.join("alice.key"))),
        alice,
        "alice untouched"
    );
}

#[test]
fn help_describes_the_tool() {
    let out = certs(Path::new("."), &["--help"]);
    assert_success(&out, "--help");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "certificate",
        "--renew-server",
        "--force",
        "key_mismatch",
        "reserved",
    ] {
        assert!(help.contains(needle), "--help mentions {needle}:\n{help}");
    }
    assert!(
        !help.contains(env!("CARGO_PKG_DESCRIPTION")),
        "--help describes the tool, not the project:\n{help}"
    );
}

#[test]
fn only_the_server_certificate_carries_the_server_role() {
    use micropay::net::identity::{server_key_of_cert, SERVER_ROLE_POLICY_DER};
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    assert_success(&certs(tmp.path(), &["--out", "certs", "alice"]), "run");
    let der = |file: &str| {
        let pem = read(&dir.join(file));
        x509_parser::pem::parse_x509_pem(&pem)
            .expect("PEM")
            .1
            .contents
    };
    let policies = |file: &str| {
        let der = der(file);
        let (_, cert) = X509Certificate::from_der(&der).expect("X.509");
        let mut found = Vec::new();
        for ext in cert.extensions() {
            if let ParsedExtension::CertificatePolicies(p) = ext.parsed_extension() {
                assert!(!ext.critical, "{file}: the mark is not critical");
                found.extend(p.iter().map(|i| i.policy_id.as_bytes().to_vec()));
            }
        }
        found
    };
    assert_eq!(
        policies("server.pem"),
        vec![SERVER_ROLE_POLICY_DER.to_vec()]
    );
    assert!(server_key_of_cert(&der("server.pem")).is_ok());
    for file in ["alice.pem", "ca.pem"] {
        assert!(policies(file).is_empty(), "{file} carries no policy");
        assert!(
            server_key_of_cert(&der(file)).is_err(),
            "{file} is not the server"
        );
    }
    if have_openssl() {
        assert_openssl_ok(&dir, "server.pem", Some("sslserver"));
    }
}
