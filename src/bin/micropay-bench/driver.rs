//! Driving links: people and their registration, the progress bar, and
//! the pipelined send loop every payment mode shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use micropay::net::link::Link;
use micropay::person::Person;
use micropay::wire::{Registered, Reply, ServerRequest};
use tokio::sync::{mpsc, Semaphore};

use crate::error::BenchError;
use crate::report::{cpu_per_op, summarize, BenchOptions, Report, Sample};
use crate::server_process::ServerProcess;

/// One request of a run: its encoded body and the judge of its reply.
pub type Job = (Vec<u8>, Box<dyn FnOnce(Reply) -> bool + Send>);

/// A progress bar of `len` steps, hidden unless `show`.
pub fn progress(len: u64, show: bool) -> indicatif::ProgressBar {
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

/// Connects each person to a server (person `i` to server `i` modulo
/// the number of servers) and registers them.
pub async fn register_all(
    server: &ServerProcess,
    people: &[Arc<Person>],
) -> Result<Vec<Link>, BenchError> {
    let mut links = Vec::with_capacity(people.len());
    for (index, person) in people.iter().enumerate() {
        let link = person.connect_server(server.addr_for(index)).await?;
        let _: Registered = link.call(&ServerRequest::Register {}).await?;
        links.push(link);
    }
    Ok(links)
}

/// `n` people named `{prefix}0`, `{prefix}1`, ... from the server's CA.
pub fn make_people(
    server: &ServerProcess,
    prefix: &str,
    n: usize,
) -> Result<Vec<Arc<Person>>, BenchError> {
    (0..n)
        .map(|i| server.person(&format!("{prefix}{i}")).map(Arc::new))
        .collect()
}

/// The report of a finished run: the figures of `samples`, the server's
/// CPU per operation (from the `cpu_used_us` it spent) and its peak
/// memory.
pub fn finish_report(
    mode: &str,
    server: &ServerProcess,
    options: &BenchOptions,
    samples: &[Sample],
    measure_from: Instant,
    cpu_used_us: u64,
) -> Report {
    let mut report = Report {
        options: Some(options.clone()),
        ..Report::default()
    };
    summarize(mode, samples, measure_from, &mut report);
    report.server_cpu_us_per_op = cpu_per_op(cpu_used_us, report.ok_total);
    report.server_peak_rss_kib = server.peak_rss_kib();
    report
}

/// Sends jobs on each link with `window` in flight, until each source is
/// empty or the time is up. Returns the samples and when measuring began.
pub async fn drive<S>(
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
    for (link, next_job) in sources {
        let window = Arc::new(Semaphore::new(options.window.max(1)));
        tokio::spawn(send_loop(
            link,
            next_job,
            window,
            interval,
            deadline,
            tx.clone(),
        ));
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

/// One link's sender: keeps `window` requests in flight (on a schedule
/// when `interval` is set) until its source ends or `deadline` passes.
async fn send_loop<S>(
    link: Arc<Link>,
    mut next_job: S,
    window: Arc<Semaphore>,
    interval: Option<Duration>,
    deadline: Instant,
    tx: mpsc::UnboundedSender<Sample>,
) where
    S: FnMut() -> Option<Job> + Send + 'static,
{
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
}
