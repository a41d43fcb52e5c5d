//! Real `micropay-server` child processes on a private directory and one
//! ledger (several servers only on PostgreSQL), with their CPU time and
//! peak memory read from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use micropay::ledger::{audit_at, DbLocation};
use micropay::net::tls::Material;
use micropay::person::Person;

use crate::database::BenchDb;
use crate::error::{setup, BenchError};
use crate::pki::BenchPki;
use crate::report::Report;

/// Balance each bench account starts with, so that no payment fails for
/// lack of funds.
pub const BENCH_INITIAL_BALANCE: u64 = 1_000_000_000;

/// How long the bench waits for its server to come up.
pub const SERVER_START_TIMEOUT_MS: u64 = 20_000;

/// Most `micropay-server` processes one run starts.
pub const BENCH_SERVERS_MAX: usize = 16;

/// `micropay-server` child processes on a private directory, sharing one
/// ledger and one CA.
pub struct ServerProcess {
    children: Vec<Child>,
    /// `127.0.0.1:PORT` of the first server.
    pub addr: String,
    /// `127.0.0.1:PORT` of every server, in start order.
    pub addrs: Vec<String>,
    /// Private directory with certificates (and an SQLite ledger).
    pub dir: PathBuf,
    /// The ledger every server settles into.
    pub db: BenchDb,
    /// The PKI the servers trust.
    pub pki: BenchPki,
}

impl ServerProcess {
    /// Makes certificates and a fresh ledger (on the PostgreSQL server
    /// `db` names, or an SQLite file), starts `servers` copies of
    /// `server_bin` on 127.0.0.1:0 and waits until each listens. Several
    /// servers need PostgreSQL: an SQLite file has one writer.
    pub fn start(
        server_bin: &Path,
        db: Option<&DbLocation>,
        servers: usize,
    ) -> Result<ServerProcess, BenchError> {
        let postgres = db.is_some_and(DbLocation::is_postgres);
        if servers == 0 || servers > BENCH_SERVERS_MAX || (servers > 1 && !postgres) {
            return Err(BenchError::Setup(format!(
                "--servers must be 1 to {BENCH_SERVERS_MAX}, and more than 1 needs --db postgres://..."
            )));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("micropay-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(setup("creating the bench directory"))?;
        let pki = BenchPki::create(&dir)?;
        let db = BenchDb::create(&dir, db)?;
        let mut server = ServerProcess {
            children: Vec::with_capacity(servers),
            addr: String::new(),
            addrs: Vec::with_capacity(servers),
            dir,
            db,
            pki,
        };
        for index in 0..servers {
            let ready = server.dir.join(format!("addr{index}"));
            let child = spawn_server(server_bin, &server.dir, &server.db.location, index, &ready)?;
            server.children.push(child);
            let addr = server.wait_until_ready(index, &ready)?;
            server.addrs.push(addr);
        }
        server.addr = server.addrs[0].clone();
        Ok(server)
    }

    /// Waits for server `index`'s ready file to name its address.
    fn wait_until_ready(&mut self, index: usize, ready: &Path) -> Result<String, BenchError> {
        let deadline = Instant::now() + Duration::from_millis(SERVER_START_TIMEOUT_MS);
        loop {
            if let Ok(addr) = std::fs::read_to_string(ready) {
                return Ok(addr.trim().to_owned());
            }
            if let Ok(Some(status)) = self.children[index].try_wait() {
                return Err(BenchError::Setup(format!(
                    "server {index} exited early: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "server {index} did not start in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process ids of the servers.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The address of the server that link number `index` uses: links are
    /// spread round-robin over the servers.
    pub fn addr_for(&self, index: usize) -> &str {
        &self.addrs[index % self.addrs.len()]
    }

    /// User + system CPU time all the servers have used, µs.
    pub fn cpu_us(&self) -> u64 {
        self.pids().into_iter().map(process_cpu_us).sum()
    }

    /// Peak resident memory of all the servers together, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.pids().into_iter().map(process_peak_rss_kib).sum()
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

    /// Stops the servers with SIGTERM (a clean shutdown) and audits the
    /// ledger.
    pub fn stop_and_audit(mut self, report: &mut Report) -> Result<(), BenchError> {
        for child in &mut self.children {
            terminate(child.id());
            let _ = child.wait();
        }
        let audit = audit_at(&self.db.location).map_err(setup("auditing the ledger"))?;
        report.ledger_payments = audit.payments;
        report.audit_clean = audit.violations.is_empty();
        report.audit_violations = audit.violations;
        Ok(())
    }
}

/// Starts server number `index` on 127.0.0.1:0 with the certificates in
/// `dir`.
fn spawn_server(
    server_bin: &Path,
    dir: &Path,
    db: &DbLocation,
    index: usize,
    ready: &Path,
) -> Result<Child, BenchError> {
    let balance = BENCH_INITIAL_BALANCE.to_string();
    let db = match db {
        DbLocation::Sqlite(path) => path.display().to_string(),
        DbLocation::Postgres(url) => url.clone(),
    };
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
        .args(["--db", &db, "--server-id", &format!("bench{index}")])
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

/// User + system CPU time process `pid` has used, µs (0 once it is gone).
fn process_cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
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

/// Peak resident memory of process `pid`, KiB (0 once it is gone).
fn process_peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
