//! Helpers for the end-to-end tests in `tests/cli.rs`: run the real
//! `micropay-certs`, `micropay-server` and `micropay-client` binaries as
//! child processes, every wait bounded, every child killed on drop.
#![allow(dead_code)]

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub const SERVER: &str = env!("CARGO_BIN_EXE_micropay-server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_micropay-client");
pub const CERTS: &str = env!("CARGO_BIN_EXE_micropay-certs");

/// Environment variables the client reads; cleared so the caller's
/// environment cannot change what a test runs.
const CLIENT_ENV: [&str; 8] = [
    "MICROPAY_AS",
    "MICROPAY_CERTS",
    "MICROPAY_SERVER",
    "MICROPAY_CA",
    "MICROPAY_CERT",
    "MICROPAY_KEY",
    "MICROPAY_JSON",
    "RUST_LOG",
];

/// A child process that is killed and reaped when dropped, so no test
/// leaves a process behind, whether it passes or panics.
pub struct Guard {
    child: Child,
    what: String,
    status: Option<ExitStatus>,
}

impl Guard {
    pub fn spawn(cmd: &mut Command, what: impl Into<String>) -> Guard {
        let what = what.into();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Guard {
            child,
            what,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`INT`, `TERM`) with kill(1). The package
    /// forbids `unsafe`, so `libc::kill` is not available to tests. The
    /// child is not reaped until `wait`, so its pid cannot have been reused.
    pub fn signal(&self, signal: &str) {
        assert!(self.status.is_none(), "{} already exited", self.what);
        let status = Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -s {signal} {} failed", self.what);
    }

    /// Waits at most `limit` for the child to exit.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return self.status;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => return None,
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        }
    }

    /// Exited already (without waiting)?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.wait_for_exit(Duration::ZERO)
    }

    fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    fn take_stderr(&mut self) -> ChildStderr {
        self.child.stderr.take().expect("stderr is piped")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished command printed and how it exited.
pub struct Out {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// Asserts the exit code.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Out {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
        self
    }

    /// Asserts that stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Out {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}:\n{self}");
        self
    }

    /// Asserts that stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Out {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:\n{self}");
        self
    }

    /// stdout as exactly one JSON object on one line.
    #[track_caller]
    pub fn json(&self) -> Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "--json must print exactly one line:\n{self}"
        );
        let value: Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"));
        assert!(value.is_object(), "--json must print an object:\n{self}");
        value
    }
}

/// A command running in the background; `finish` collects its output.
pub struct Pending {
    guard: Guard,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Pending {
    pub fn spawn(cmd: &mut Command, what: impl Into<String>) -> Pending {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = Guard::spawn(cmd, what);
        let stdout = read_all(guard.take_stdout());
        let stderr = read_all(guard.take_stderr());
        Pending {
            guard,
            stdout,
            stderr,
        }
    }

    /// Waits (at most `WAIT`) for the command to exit; a command still
    /// running then is killed and the test fails.
    pub fn finish(mut self) -> Out {
        let status = self.guard.wait_for_exit(WAIT);
        let what = self.guard.what.clone();
        // Killing (on timeout) closes the pipes, so the readers end.
        drop(self.guard);
        let out = Out {
            what,
            code: status.and_then(|s| s.code()),
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        };
        assert!(
            status.is_some(),
            "still running after {WAIT:?}, killed:\n{out}"
        );
        out
    }
}

/// Runs a command to completion (bounded by `WAIT`).
pub fn run(cmd: &mut Command, what: impl Into<String>) -> Out {
    Pending::spawn(cmd, what).finish()
}

/// Makes a CA, the server's certificate and one per name in `dir`.
pub fn make_certs(dir: &Path, names: &[&str]) {
    let mut cmd = Command::new(CERTS);
    cmd.arg("--out").arg(dir).args(names);
    run(&mut cmd, format!("micropay-certs {names:?}")).expect(0);
}

/// A port on 127.0.0.1 with nothing listening on it (bound, then freed).
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// A client command: `micropay-client --as WHO --certs DIR --server ADDR ARGS`.
pub fn client(who: &str, certs: &Path, server: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(CLIENT);
    for var in CLIENT_ENV {
        cmd.env_remove(var);
    }
    cmd.arg("--as")
        .arg(who)
        .arg("--certs")
        .arg(certs)
        .arg("--server")
        .arg(server)
        .args(args);
    cmd
}

/// A running `micropay-client serve`, its stdout read line by line.
pub struct Serve {
    guard: Guard,
    lines: Receiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
    stderr: PathBuf,
    json: bool,
}

impl Serve {
    pub fn spawn(mut cmd: Command, what: String, stderr: PathBuf, json: bool) -> Serve {
        let err = File::create(&stderr).expect("serve stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err));
        let mut guard = Guard::spawn(&mut cmd, what);
        let stdout = guard.take_stdout();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            guard,
            lines,
            seen: Vec::new(),
            stderr,
            json,
        }
    }

    fn context(&self) -> String {
        format!(
            "{}\n--- stdout so far ---\n{}\n--- stderr ---\n{}",
            self.guard.what,
            self.seen.join("\n"),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// The next stdout line; fails the test after `WAIT` or at EOF.
    #[track_caller]
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("no output for {WAIT:?} from {}", self.context())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.guard.wait_for_exit(Duration::from_secs(1));
                panic!("serve ended ({status:?}) early: {}", self.context())
            }
        }
    }

    /// Skips lines until one satisfies `want` (bounded by `WAIT` in all).
    #[track_caller]
    pub fn line_where(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("never saw {what}: {}", self.context()),
            }
        }
    }

    /// The next line as a JSON event (one object per line).
    #[track_caller]
    pub fn next_event(&mut self) -> Value {
        let line = self.next_line();
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve --json printed non-JSON {line:?} ({e})"));
        assert!(
            value.is_object(),
            "serve --json event is not an object: {line}"
        );
        value
    }

    /// Waits for going online; returns (advertised address, listen address).
    #[track_caller]
    pub fn online(&mut self) -> (String, String) {
        if self.json {
            let event = self.next_event();
            assert_eq!(event["event"], "online", "first event: {event}");
            let field = |name: &str| {
                event[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("online event lacks {name}: {event}"))
                    .to_owned()
            };
            (field("address"), field("listen"))
        } else {
            let line = self.next_line();
            // online as ADDR (listening on LISTEN); waiting for payments, Ctrl-C to stop
            let rest = line
                .strip_prefix("online as ")
                .unwrap_or_else(|| panic!("first line is not `online as`: {line:?}"));
            let (address, rest) = rest.split_once(" (listening on ").expect("listening on");
            let (listen, _) = rest.split_once(')').expect("closing parenthesis");
            (address.to_owned(), listen.to_owned())
        }
    }

    /// Sends SIGINT, waits (bounded) for the exit and returns its status
    /// with every stdout line not read yet.
    #[track_caller]
    pub fn interrupt(self) -> (ExitStatus, Vec<String>) {
        self.guard.signal("INT");
        let (status, rest, _) = self.finish();
        (status, rest)
    }

    /// Waits (bounded) for serve to exit by itself; its status, the
    /// stdout lines not read yet and its stderr.
    #[track_caller]
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let Some(status) = self.guard.wait_for_exit(WAIT) else {
            panic!("serve still running after {WAIT:?}: {}", self.context());
        };
        let mut rest = Vec::new();
        // The process is gone; the reader sees EOF soon.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line.clone());
            rest.push(line);
        }
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        (status, rest, stderr)
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.guard.exited()
    }
}

/// Starts the real `micropay-server` on a free loopback port with the
/// certificates in `certs`, logging to `log`; `env` sets (`Some`) or
/// removes (`None`) environment variables and `args` are added to the
/// command line. Returns the guarded process and its address once the
/// ready file names it.
pub fn start_server(
    certs: &Path,
    db: &Path,
    ready: &Path,
    log: &Path,
    env: &[(&str, Option<&str>)],
    args: &[&str],
) -> (Guard, String) {
    start_server_at("127.0.0.1:0", certs, db, ready, log, env, args)
}

/// [`start_server`] listening on `listen` (say, the address of a server
/// that was stopped, to restart it in its place).
pub fn start_server_at(
    listen: &str,
    certs: &Path,
    db: &Path,
    ready: &Path,
    log: &Path,
    env: &[(&str, Option<&str>)],
    args: &[&str],
) -> (Guard, String) {
    let _ = std::fs::remove_file(ready);
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("server log");
    let mut cmd = Command::new(SERVER);
    for (key, value) in env {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.arg("--cert")
        .arg(certs.join("server.pem"))
        .arg("--key")
        .arg(certs.join("server.key"))
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--listen")
        .arg(listen)
        .arg("--db")
        .arg(db)
        .arg("--ready-file")
        .arg(ready)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone().expect("log")))
        .stderr(Stdio::from(log_file));
    let mut server = Guard::spawn(&mut cmd, "micropay-server");
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            let text = text.trim();
            if text.contains(':') {
                break text.to_owned();
            }
        }
        if let Some(status) = server.exited() {
            panic!(
                "the server exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no ready file after {WAIT:?}");
        thread::sleep(Duration::from_millis(10));
    };
    (server, addr)
}

/// A temporary directory with certificates for alice, bob and carol and
/// a real `micropay-server` on a free loopback port.
pub struct World {
    pub dir: tempfile::TempDir,
    pub certs: PathBuf,
    pub db: PathBuf,
    pub addr: String,
    server: Guard,
    log: PathBuf,
    ready: PathBuf,
    server_args: Vec<String>,
}

impl World {
    pub fn start() -> World {
        World::start_with(&[])
    }

    /// A world whose server runs with extra `args` (kept for restarts).
    pub fn start_with(args: &[&str]) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        make_certs(&certs, &["alice", "bob", "carol"]);
        let db = dir.path().join("ledger.db");
        let ready = dir.path().join("addr");
        let log = dir.path().join("server.log");
        let (server, addr) = start_server(&certs, &db, &ready, &log, &[("RUST_LOG", None)], args);
        World {
            dir,
            certs,
            db,
            addr,
            server,
            log,
            ready,
            server_args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Starts the server again, after [`World::stop_server`], on the same
    /// address and ledger, with the same arguments.
    pub fn restart_server(&mut self) {
        let args: Vec<&str> = self.server_args.iter().map(String::as_str).collect();
        let (server, addr) = start_server_at(
            &self.addr,
            &self.certs,
            &self.db,
            &self.ready,
            &self.log,
            &[("RUST_LOG", None)],
            &args,
        );
        assert_eq!(addr, self.addr, "the server came back elsewhere");
        self.server = server;
    }

    pub fn client(&self, who: &str, args: &[&str]) -> Command {
        client(who, &self.certs, &self.addr, args)
    }

    /// Runs `micropay-client --as WHO ... ARGS` to completion.
    pub fn run(&self, who: &str, args: &[&str]) -> Out {
        run(
            &mut self.client(who, args),
            format!("{who} {}", args.join(" ")),
        )
    }

    /// Starts `micropay-client --as WHO ... ARGS` in the background.
    pub fn spawn(&self, who: &str, args: &[&str]) -> Pending {
        Pending::spawn(
            &mut self.client(who, args),
            format!("{who} {}", args.join(" ")),
        )
    }

    pub fn register(&self, names: &[&str]) {
        for name in names {
            self.run(name, &["register"])
                .expect(0)
                .stdout_has(&format!("registered {name} with balance 10000"));
        }
    }

    /// `WHO [--json] serve EXTRA...`, running in the background.
    pub fn serve(&self, who: &str, extra: &[&str], json: bool) -> Serve {
        let mut args = Vec::new();
        if json {
            args.push("--json");
        }
        args.push("serve");
        args.extend_from_slice(extra);
        static SERVES: AtomicUsize = AtomicUsize::new(0);
        let n = SERVES.fetch_add(1, Ordering::Relaxed);
        let stderr = self.dir.path().join(format!("{who}-serve-{n}.err"));
        Serve::spawn(
            self.client(who, &args),
            format!("{who} {}", args.join(" ")),
            stderr,
            json,
        )
    }

    /// WHO's available balance, from the human `balance` output (the
    /// number, followed by what is held when something is).
    #[track_caller]
    pub fn balance(&self, who: &str) -> u64 {
        self.balance_and_held(who).0
    }

    /// WHO's available and held amounts, from the human `balance` output:
    /// `N` alone, or `N available, H held in open payment channels`.
    #[track_caller]
    pub fn balance_and_held(&self, who: &str) -> (u64, u64) {
        let out = self.run(who, &["balance"]);
        out.expect(0);
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        let number = |s: &str| {
            s.trim_end_matches(',')
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("not a number ({e}):\n{out}"))
        };
        match words.as_slice() {
            [available] => (number(available), 0),
            [available, "available,", held, "held", ..] => (number(available), number(held)),
            _ => panic!("unexpected balance output:\n{out}"),
        }
    }

    /// SIGTERM to the server; its exit status (bounded wait).
    #[track_caller]
    pub fn stop_server(&mut self) -> ExitStatus {
        self.server.signal("TERM");
        self.server.wait_for_exit(WAIT).unwrap_or_else(|| {
            panic!(
                "the server ignored SIGTERM for {WAIT:?}:\n{}",
                self.server_log()
            )
        })
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `micropay-server audit --db DB`.
    pub fn audit(&self) -> Out {
        let mut cmd = Command::new(SERVER);
        cmd.env_remove("RUST_LOG")
            .arg("audit")
            .arg("--db")
            .arg(&self.db);
        run(&mut cmd, "micropay-server audit")
    }
}
