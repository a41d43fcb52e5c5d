//! The load generator behind `micropay-bench`.
//!
//! It starts a real `micropay-server` process (on certificates and a
//! database of its own, in a temporary directory), drives it over real
//! mutual-TLS connections with real signatures, and reports throughput,
//! latency, the server's CPU per operation and peak memory, next to the
//! crypto floor measured in the same run.
//!
//! Modes:
//! - `settle`: server capacity. K payee connections forward payments that
//!   were signed before the clock started, pipelined.
//! - `p2p`: the whole path. Payers sign and send to payees' peer
//!   listeners, payees forward, the server settles, payers verify receipts.
//! - `handshake`: new mutual-TLS connections per second (each followed by
//!   one request), with or without session resumption.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::certs::TestPki;
use crate::core::keys::{SigningKey, VerifyingKey};
use crate::core::limits::CONNECT_TIMEOUT_MS_DEFAULT;
use crate::core::payment::{Payment, PaymentId, SignedPayment, SignedReceipt};
use crate::ledger::audit;
use crate::net::link::Link;
use crate::net::session::SessionLimits;
use crate::net::tls::Material;
use crate::person::{Person, ServeOptions};
use crate::system::clock::now_s;
use crate::wire::{
    encode_body, Balance, PaymentJson, PeerRequest, Registered, Reply, ServerRequest, Settled,
    WireError,
};

/// Balance each bench account starts with, so that no payment fails for
/// lack of funds.
pub const BENCH_INITIAL_BALANCE: u64 = 1_000_000_000;

/// How long the bench waits for its server to come up.
pub const SERVER_START_TIMEOUT_MS: u64 = 20_000;

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up (certificates, files, processes) failed.
    #[error("{0}")]
    Setup(String),
    /// A call failed in a way that ends the run.
    #[error("{0}")]
    Call(#[from] crate::net::link::CallError),
    /// The server refused something during set-up.
    #[error("{0}")]
    Refused(#[from] WireError),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// Sizes and bounds of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOptions {
    /// Most operations to run (settle: pre-signed payments).
    pub count: usize,
    /// Most time to run, ms (after warm-up).
    pub duration_ms: u64,
    /// Time at the start not counted, ms.
    pub warmup_ms: u64,
    /// Connections: payee links (settle), payers (p2p), concurrent
    /// connectors (handshake).
    pub connections: usize,
    /// Requests in flight per connection.
    pub window: usize,
    /// Accounts (settle: payers and payees together; p2p: payees).
    pub accounts: usize,
    /// Handshake mode: allow TLS session resumption.
    pub resumption: bool,
    /// Offered load, operations per second over all connections; `None`
    /// sends as fast as the window allows (a closed loop).
    pub rate_per_s: Option<f64>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            count: 200_000,
            duration_ms: 10_000,
            warmup_ms: 1_000,
            connections: 4,
            window: 128,
            accounts: 64,
            resumption: true,
            rate_per_s: None,
        }
    }
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Latency {
    fn from_samples(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Latency {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: samples[samples.len() - 1],
        }
    }
}

/// The crypto floor measured on this machine.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CryptoFloor {
    /// ring Ed25519 verifications per second on one core.
    pub verify_per_s_core: f64,
    /// ring Ed25519 signatures per second on one core.
    pub sign_per_s_core: f64,
    /// Cores available.
    pub cores: usize,
    /// Settlements per second if each cost exactly one verify and one
    /// receipt signature, on all cores.
    pub settle_floor_per_s: f64,
    /// End-to-end payments per second if each cost what the p2p path
    /// spends on crypto: payer sign, payee verify, server verify, server
    /// sign, payer verifies the receipt.
    pub p2p_floor_per_s: f64,
}

/// Measures ring's Ed25519 sign and verify rates on one core.
pub fn measure_crypto_floor(budget_ms: u64) -> CryptoFloor {
    let key = SigningKey::ed25519_from_seed(&[42; 32]);
    let public = key.verifying_key().clone();
    let message = [7u8; 80];
    let half = Duration::from_millis(budget_ms.max(2) / 2);
    let start = Instant::now();
    let mut signs = 0u64;
    let mut sig = Vec::new();
    while start.elapsed() < half {
        sig = key.sign(&message);
        signs += 1;
    }
    let sign_per_s_core = signs as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut verifies = 0u64;
    while start.elapsed() < half {
        let ok = public.verify(&message, &sig).is_ok();
        assert!(ok, "a fresh signature must verify");
        verifies += 1;
    }
    let verify_per_s_core = verifies as f64 / start.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settle_cost_s = 1.0 / verify_per_s_core + 1.0 / sign_per_s_core;
    let p2p_cost_s = 3.0 / verify_per_s_core + 2.0 / sign_per_s_core;
    CryptoFloor {
        verify_per_s_core,
        sign_per_s_core,
        cores,
        settle_floor_per_s: cores as f64 / settle_cost_s,
        p2p_floor_per_s: cores as f64 / p2p_cost_s,
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `settle`, `p2p` or `handshake`.
    pub mode: String,
    /// The options used.
    pub options: Option<BenchOptions>,
    /// Operations that succeeded in the measured interval.
    pub ok: u64,
    /// Operations that failed in the measured interval.
    pub failed: u64,
    /// All operations that succeeded, warm-up included.
    pub ok_total: u64,
    /// Length of the measured interval, seconds.
    pub measured_s: f64,
    /// Successful operations per second in the measured interval.
    pub throughput_per_s: f64,
    /// Latency of successful operations in the measured interval.
    pub latency: Latency,
    /// Server CPU time (user + system) per successful operation, µs.
    pub server_cpu_us_per_op: f64,
    /// Server peak resident memory, KiB.
    pub server_peak_rss_kib: u64,
    /// The crypto floor of this machine.
    pub floor: CryptoFloor,
    /// throughput / the matching floor (settle or p2p); 0 for handshake.
    pub ratio_to_floor: f64,
    /// Handshakes that were resumptions (handshake mode).
    pub resumed: u64,
    /// Payments the ledger holds after the run (settle and p2p).
    pub ledger_payments: u64,
    /// Whether `audit` found the ledger sound after the run.
    pub audit_clean: bool,
    /// Audit violations, if any.
    pub audit_violations: Vec<String>,
}

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
    pub pki: TestPki,
}

impl ServerProcess {
    /// Makes certificates, starts `server_bin` on 127.0.0.1:0 and waits
    /// until it listens.
    pub fn start(server_bin: &Path, extra_args: &[&str]) -> Result<ServerProcess, BenchError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("micropay-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(setup("creating the bench directory"))?;
        let pki = TestPki::new().map_err(setup("making certificates"))?;
        pki.write_to(&dir, &[])
            .map_err(setup("writing certificates"))?;
        let db = dir.join("ledger.db");
        let ready = dir.join("addr");
        let balance = BENCH_INITIAL_BALANCE.to_string();
        let child = Command::new(server_bin)
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
            .arg(&db)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(setup(&format!("starting {}", server_bin.display())))?;
        let mut server = ServerProcess {
            child,
            addr: String::new(),
            dir,
            db,
            pki,
        };
        let deadline = Instant::now() + Duration::from_millis(SERVER_START_TIMEOUT_MS);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&ready) {
                server.addr = addr.trim().to_owned();
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
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
        let pem = self.pki.person(name).map_err(setup("making a person"))?;
        let material = Material::from_pem(&self.pki.ca.pem.cert_pem, &pem.cert_pem, &pem.key_pem)
            .map_err(setup("loading a person"))?;
        Person::from_material(material).map_err(setup("loading a person"))
    }

    /// Stops the server with SIGTERM (a clean shutdown) and audits the
    /// ledger.
    pub fn stop_and_audit(mut self, report: &mut Report) -> Result<(), BenchError> {
        let pid = i32::try_from(self.child.id()).map_err(setup("pid"))?;
        terminate(pid);
        let _ = self.child.wait();
        let audit = audit(&self.db).map_err(setup("auditing the ledger"))?;
        report.ledger_payments = audit.payments;
        report.audit_clean = audit.violations.is_empty();
        report.audit_violations = audit.violations;
        Ok(())
    }
}

/// Sends SIGTERM through kill(1), which keeps this crate free of unsafe.
fn terminate(pid: i32) {
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

/// One finished operation.
struct Sample {
    done: Instant,
    latency_us: u64,
    ok: bool,
}

/// Turns samples into the measured figures.
fn summarize(mode: &str, samples: &[Sample], measure_from: Instant, report: &mut Report) {
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.done >= measure_from).collect();
    report.mode = mode.to_owned();
    report.ok_total = samples.iter().filter(|s| s.ok).count() as u64;
    report.ok = measured.iter().filter(|s| s.ok).count() as u64;
    report.failed = measured.iter().filter(|s| !s.ok).count() as u64;
    let last = measured
        .iter()
        .map(|s| s.done)
        .max()
        .unwrap_or(measure_from);
    report.measured_s = last.saturating_duration_since(measure_from).as_secs_f64();
    report.throughput_per_s = if report.measured_s > 0.0 {
        report.ok as f64 / report.measured_s
    } else {
        0.0
    };
    let mut latencies: Vec<u64> = measured
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.latency_us)
        .collect();
    report.latency = Latency::from_samples(&mut latencies);
}

fn progress(len: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed:>4} [{bar:40}] {pos}/{len} {per_sec} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn register_all(
    server: &ServerProcess,
    people: &[Arc<Person>],
) -> Result<Vec<Link>, BenchError> {
    let mut links = Vec::with_capacity(people.len());
    for person in people {
        let link = person.connect_server(&server.addr).await?;
        let _: Registered = link.call(&ServerRequest::Register {}).await?;
        links.push(link);
    }
    Ok(links)
}

fn make_people(
    server: &ServerProcess,
    prefix: &str,
    n: usize,
) -> Result<Vec<Arc<Person>>, BenchError> {
    (0..n)
        .map(|i| server.person(&format!("{prefix}{i}")).map(Arc::new))
        .collect()
}

/// `settle`: server capacity with pre-signed, pipelined payments.
pub async fn run_settle(
    server: &ServerProcess,
    options: &BenchOptions,
    show_progress: bool,
) -> Result<Report, BenchError> {
    let accounts = options.accounts.max(options.connections + 1).max(2);
    let people = make_people(server, "acct", accounts)?;
    let links = register_all(server, &people).await?;
    // Payee i is served by link i; each payment is from a random other
    // account. All are signed before the clock starts.
    let connections = options.connections.clamp(1, accounts - 1);
    let per_conn = options.count.div_ceil(connections);
    let expires_at_s = now_s() + 3600;
    // One signing thread per payee connection, so that preparing a large
    // run takes seconds, not tens of seconds.
    let work: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
        let people = &people;
        let handles: Vec<_> = (0..connections)
            .map(|payee_index| {
                scope.spawn(move || presign(people, payee_index, per_conn, expires_at_s))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let links: Vec<Arc<Link>> = links.into_iter().take(connections).map(Arc::new).collect();
    let bar = progress((per_conn * connections) as u64, show_progress);
    let cpu_before = server.cpu_us();
    let sources = links
        .into_iter()
        .zip(work)
        .map(|(link, bodies)| {
            let mut bodies = bodies.into_iter();
            let source = move || {
                let judge: Box<dyn FnOnce(Reply) -> bool + Send> = Box::new(|r: Reply| r.ok);
                bodies.next().map(|body| (body, judge))
            };
            (link, source)
        })
        .collect();
    let (samples, measure_from) = drive(sources, options, &bar).await;
    let cpu_after = server.cpu_us();
    bar.finish_and_clear();
    let mut report = Report {
        options: Some(options.clone()),
        ..Report::default()
    };
    summarize("settle", &samples, measure_from, &mut report);
    report.server_cpu_us_per_op = cpu_per_op(cpu_after - cpu_before, report.ok_total);
    report.server_peak_rss_kib = server.peak_rss_kib();
    Ok(report)
}

/// `count` encoded `settle` requests to `people[payee_index]`, each from a
/// pseudo-random other account, amount 1.
fn presign(
    people: &[Arc<Person>],
    payee_index: usize,
    count: usize,
    expires_at_s: u64,
) -> Vec<Vec<u8>> {
    let accounts = people.len();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (payee_index as u64 + 1);
    (0..count)
        .map(|_| {
            // xorshift64: cheap, deterministic spread of payers.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut payer_index = (seed % accounts as u64) as usize;
            if payer_index == payee_index {
                payer_index = (payer_index + 1) % accounts;
            }
            let signed = Payment {
                id: PaymentId::random(),
                payer: people[payer_index].name.clone(),
                payee: people[payee_index].name.clone(),
                amount_minor: 1,
                expires_at_s,
                memo: String::new(),
            }
            .sign(&people[payer_index].key);
            encode_body(&ServerRequest::Settle {
                payment: PaymentJson::from(&signed),
            })
        })
        .collect()
}

fn cpu_per_op(cpu_us: u64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        cpu_us as f64 / ops as f64
    }
}

/// One request of a run: its encoded body and the judge of its reply.
type Job = (Vec<u8>, Box<dyn FnOnce(Reply) -> bool + Send>);

/// Sends jobs on each link with `window` in flight, until each source is
/// empty or the time is up. Returns the samples and when measuring began.
async fn drive<S>(
    sources: Vec<(Arc<Link>, S)>,
    options: &BenchOptions,
    bar: &indicatif::ProgressBar,
) -> (Vec<Sample>, Instant)
where
    S: FnMut() -> Option<Job> + Send + 'static,
{
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(options.warmup_ms);
    let deadline = measure_from + Duration::from_millis(options.duration_ms);
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    // With an offered rate, each connection sends on a fixed schedule (an
    // open loop), so latency is measured at that load, not at saturation.
    let link_count = sources.len().max(1) as f64;
    let interval = options
        .rate_per_s
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(link_count / r));
    for (link, mut next_job) in sources {
        let tx = tx.clone();
        let window = Arc::new(Semaphore::new(options.window.max(1)));
        tokio::spawn(async move {
            let mut next_send = tokio::time::Instant::now();
            while Instant::now() <= deadline {
                if let Some(interval) = interval {
                    next_send += interval;
                    tokio::time::sleep_until(next_send).await;
                }
                let Ok(permit) = window.clone().acquire_owned().await else {
                    break;
                };
                let sent = Instant::now();
                let Some((body, judge)) = next_job() else {
                    break;
                };
                let Ok(reply) = link.send_body(&body).await else {
                    break;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let ok = reply.await.is_ok_and(judge);
                    let done = Instant::now();
                    let _ = tx.send(Sample {
                        done,
                        latency_us: done.duration_since(sent).as_micros() as u64,
                        ok,
                    });
                    drop(permit);
                });
            }
        });
    }
    // Every in-flight request holds a sender; the channel ends when the
    // last reply is in.
    drop(tx);
    let mut samples = Vec::new();
    while let Some(sample) = rx.recv().await {
        samples.push(sample);
        bar.inc(1);
    }
    (samples, measure_from)
}

/// `p2p`: payers sign and pay payees' listeners; payees forward; the
/// server settles; payers verify each receipt.
pub async fn run_p2p(
    server: &ServerProcess,
    options: &BenchOptions,
    show_progress: bool,
) -> Result<Report, BenchError> {
    let payee_count = options.accounts.clamp(1, 64);
    let payer_count = options.connections.max(1);
    let payees = make_people(server, "payee", payee_count)?;
    let payers = make_people(server, "payer", payer_count)?;
    let _payee_links = register_all(server, &payees).await?;
    let payer_links = register_all(server, &payers).await?;
    let server_key: VerifyingKey = payer_links
        .first()
        .and_then(|l| l.peer_key())
        .ok_or_else(|| BenchError::Setup("no server key".into()))?;

    // Start the payees' listeners in this process.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut addresses = Vec::new();
    let mut serving = Vec::new();
    for payee in &payees {
        let (events_tx, mut events_rx) = mpsc::channel(crate::core::limits::SERVE_EVENTS_MAX);
        let mut stop = stop_rx.clone();
        let opts = ServeOptions {
            listen: "127.0.0.1:0".parse().map_err(setup("address"))?,
            advertise: None,
            server: server.addr.clone(),
            limits: SessionLimits::default(),
        };
        serving.push(tokio::spawn(crate::person::serve(
            payee.clone(),
            opts,
            events_tx,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        // The first event is Online with the listening address; later
        // events are drained so the channel does not grow.
        let address = match tokio::time::timeout(Duration::from_secs(10), events_rx.recv()).await {
            Ok(Some(crate::person::ServeEvent::Online { listen, .. })) => listen,
            _ => return Err(BenchError::Setup("a payee did not come online".into())),
        };
        tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
        addresses.push(address);
    }

    // Each payer holds one connection to one payee.
    let mut links = Vec::new();
    for (i, payer) in payers.iter().enumerate() {
        let payee = &payees[i % payee_count];
        let link = Link::connect(
            &addresses[i % payee_count],
            payee.name.as_str(),
            payer.payer_config(),
            CONNECT_TIMEOUT_MS_DEFAULT,
        )
        .await?;
        links.push((Arc::new(link), payer.clone(), payee.name.clone()));
    }

    let per_payer = options.count.div_ceil(payer_count);
    let bar = progress((per_payer * payer_count) as u64, show_progress);
    let server_key = Arc::new(server_key);
    // Each payer signs in the timed path, as a real payer does, and
    // verifies the server's signature on every receipt it gets back.
    let sources = links
        .into_iter()
        .map(|(link, payer, payee)| {
            let server_key = server_key.clone();
            let mut left = per_payer;
            let source = move || {
                left = left.checked_sub(1)?;
                let signed = Payment {
                    id: PaymentId::random(),
                    payer: payer.name.clone(),
                    payee: payee.clone(),
                    amount_minor: 1,
                    expires_at_s: now_s() + 600,
                    memo: String::new(),
                }
                .sign(&payer.key);
                let body = encode_body(&PeerRequest::Pay {
                    payment: PaymentJson::from(&signed),
                });
                let server_key = server_key.clone();
                let judge: Box<dyn FnOnce(Reply) -> bool + Send> = Box::new(move |r: Reply| {
                    receipt_ok(r.into_result::<Settled>(), &signed, &server_key)
                });
                Some((body, judge))
            };
            (link, source)
        })
        .collect();
    let cpu_before = server.cpu_us();
    let (samples, measure_from) = drive(sources, options, &bar).await;
    bar.finish_and_clear();
    let cpu_after = server.cpu_us();
    let _ = stop_tx.send(true);
    for task in serving {
        let _ = task.await;
    }
    let mut report = Report {
        options: Some(options.clone()),
        ..Report::default()
    };
    summarize("p2p", &samples, measure_from, &mut report);
    report.server_cpu_us_per_op = cpu_per_op(cpu_after - cpu_before, report.ok_total);
    report.server_peak_rss_kib = server.peak_rss_kib();
    Ok(report)
}

fn receipt_ok(
    settled: Result<Settled, WireError>,
    signed: &SignedPayment,
    server_key: &VerifyingKey,
) -> bool {
    let Ok(settled) = settled else {
        return false;
    };
    SignedReceipt::try_from(&settled.receipt)
        .is_ok_and(|r| r.verify(server_key).is_ok() && r.matches(signed))
}

/// `handshake`: new mutual-TLS connections per second, each followed by
/// one `balance` request so that the server has verified the client.
pub async fn run_handshake(
    server: &ServerProcess,
    options: &BenchOptions,
    show_progress: bool,
) -> Result<Report, BenchError> {
    // A fresh account per run: a name is bound to the key it registered
    // with, and every run makes a new key.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pem = server
        .pki
        .person(&format!("shaker{run}"))
        .map_err(setup("making a person"))?;
    let material = Material::from_pem(&server.pki.ca.pem.cert_pem, &pem.cert_pem, &pem.key_pem)
        .map_err(setup("loading a person"))?;
    let mut config =
        (*crate::net::tls::client_config(&material).map_err(setup("client config"))?).clone();
    if !options.resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let config = Arc::new(config);
    let host = crate::net::link::host_of(&server.addr).to_owned();
    let first = Link::connect(
        &server.addr,
        &host,
        config.clone(),
        CONNECT_TIMEOUT_MS_DEFAULT,
    )
    .await?;
    let _: Registered = first.call(&ServerRequest::Register {}).await?;
    drop(first);

    let concurrency = options.connections.max(1);
    let per_task = options.count.div_ceil(concurrency);
    let bar = progress((per_task * concurrency) as u64, show_progress);
    let cpu_before = server.cpu_us();
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(options.warmup_ms);
    let deadline = measure_from + Duration::from_millis(options.duration_ms);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Sample, bool)>();
    for _ in 0..concurrency {
        let (tx, config, addr, host) = (
            tx.clone(),
            config.clone(),
            server.addr.clone(),
            host.clone(),
        );
        tokio::spawn(async move {
            for _ in 0..per_task {
                if Instant::now() > deadline {
                    break;
                }
                let began = Instant::now();
                let outcome = async {
                    let link =
                        Link::connect(&addr, &host, config.clone(), CONNECT_TIMEOUT_MS_DEFAULT)
                            .await?;
                    let _: Balance = link.call(&ServerRequest::Balance {}).await?;
                    Ok::<bool, crate::net::link::CallError>(link.resumed())
                }
                .await;
                let done = Instant::now();
                let sample = Sample {
                    done,
                    latency_us: done.duration_since(began).as_micros() as u64,
                    ok: outcome.is_ok(),
                };
                let _ = tx.send((sample, matches!(outcome, Ok(true))));
            }
        });
    }
    drop(tx);
    let mut samples = Vec::new();
    let mut resumed = 0;
    while let Some((sample, was_resumed)) = rx.recv().await {
        if was_resumed && sample.done >= measure_from {
            resumed += 1;
        }
        samples.push(sample);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let cpu_after = server.cpu_us();
    let mut report = Report {
        options: Some(options.clone()),
        resumed,
        ..Report::default()
    };
    summarize("handshake", &samples, measure_from, &mut report);
    report.server_cpu_us_per_op = cpu_per_op(cpu_after - cpu_before, report.ok_total);
    report.server_peak_rss_kib = server.peak_rss_kib();
    Ok(report)
}
