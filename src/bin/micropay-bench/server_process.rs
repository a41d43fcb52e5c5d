//! A real `micropay-server` child process on a private directory, with
//! its CPU time and peak memory read from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use micropay::ledger::audit;
use micropay::net::tls::Material;
use micropay::person::Person;

use crate::error::{setup, BenchError};
use crate::pki::BenchPki;
use crate::report::Report;

/// Balance each bench account starts with, so that no payment fails for
/// lack of funds.
pub const BENCH_INITIAL_BALANCE: u64 = 1_000_000_000;

/// How long the bench waits for its server to come up.
pub const SERVER_START_TIMEOUT_MS: u64 = 20_000;

/// A `micropay-server` child process on a private directory.
pub struct ServerProcess {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Private directory with certificates and the ledger.
    pub dir: PathBuf,
    /// The ledger file.
    pub db: PathBuf,
    /// The PKI the server trusts.
    pub pki: BenchPki,
}

impl ServerProcess {
    /// Makes certificates, starts `server_bin` on 127.0.0.1:0 and waits
    /// until it listens.
    pub fn start(server_bin: &Path) -> Result<ServerProcess, BenchError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("micropay-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(setup("creating the bench directory"))?;
        let pki = BenchPki::create(&dir)?;
        let db = dir.join("ledger.db");
        let ready = dir.join("addr");
        let child = spawn_server(server_bin, &dir, &db, &ready)?;
        let server = ServerProcess {
            child,
            addr: String::new(),
            dir,
            db,
            pki,
        };
        server.wait_until_ready(&ready)
    }

    /// Waits for the ready file to name the server's address.
    fn wait_until_ready(mut self, ready: &Path) -> Result<ServerProcess, BenchError> {
        let deadline = Instant::now() + Duration::from_millis(SERVER_START_TIMEOUT_MS);
        loop {
            if let Ok(addr) = std::fs::read_to_string(ready) {
                self.addr = addr.trim().to_owned();
                return Ok(self);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "the server exited early: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup("the server did not start in time".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time the server has used, µs.
    pub fn cpu_us(&self) -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return 0;
        };
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return 0;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // sysconf(_SC_CLK_TCK) is 100 on Linux for all practical purposes.
        (ticks(11) + ticks(12)) * 10_000
    }

    /// Peak resident memory, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// A person with a certificate from this server's CA.
    pub fn person(&self, name: &str) -> Result<Person, BenchError> {
        let material = self.material(name)?;
        Person::from_material(material).map_err(setup("loading a person"))
    }

    /// TLS material for a new certificate of `name` from this server's CA.
    pub fn material(&self, name: &str) -> Result<Material, BenchError> {
        let pem = self.pki.person(name)?;
        Material::from_pem(&self.pki.ca.pem.cert_pem, &pem.cert_pem, &pem.key_pem)
            .map_err(setup("loading a person"))
    }

    /// Stops the server with SIGTERM (a clean shutdown) and audits the
    /// ledger.
    pub fn stop_and_audit(mut self, report: &mut Report) -> Result<(), BenchError> {
        terminate(self.child.id());
        let _ = self.child.wait();
        let audit = audit(&self.db).map_err(setup("auditing the ledger"))?;
        report.ledger_payments = audit.payments;
        report.audit_clean = audit.violations.is_empty();
        report.audit_violations = audit.violations;
        Ok(())
    }
}

/// Starts `server_bin` on 127.0.0.1:0 with the certificates in `dir`.
fn spawn_server(
    server_bin: &Path,
    dir: &Path,
    db: &Path,
    ready: &Path,
) -> Result<Child, BenchError> {
    let balance = BENCH_INITIAL_BALANCE.to_string();
    Command::new(server_bin)
        .arg("--cert")
        .arg(dir.join("server.pem"))
        .arg("--key")
        .arg(dir.join("server.key"))
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--initial-balance",
            &balance,
            "-q",
        ])
        .arg("--db")
        .arg(db)
        .arg("--ready-file")
        .arg(ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(setup(&format!("starting {}", server_bin.display())))
}

/// Sends SIGTERM through kill(1), which keeps this crate free of unsafe.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
