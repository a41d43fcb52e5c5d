//! `settle`: server capacity. K payee connections forward payments that
//! were signed before the clock started, pipelined.

use std::sync::Arc;

use micropay::core::payment::{Payment, PaymentId};
use micropay::net::link::Link;
use micropay::person::Person;
use micropay::system::clock::now_s;
use micropay::wire::{encode_body, PaymentJson, Reply, ServerRequest};

use crate::driver::{drive, finish_report, make_people, progress, register_all, Job};
use crate::error::BenchError;
use crate::report::{BenchOptions, Report};
use crate::server_process::ServerProcess;

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
    let work = presign_all(&people, connections, per_conn);
    let links: Vec<Arc<Link>> = links.into_iter().take(connections).map(Arc::new).collect();
    let bar = progress((per_conn * connections) as u64, show_progress);
    let cpu_before = server.cpu_us();
    let sources = links
        .into_iter()
        .zip(work)
        .map(|(link, bodies)| {
            let mut bodies = bodies.into_iter();
            let source = move || -> Option<Job> {
                let judge: Box<dyn FnOnce(Reply) -> bool + Send> = Box::new(|r: Reply| r.ok);
                bodies.next().map(|body| (body, judge))
            };
            (link, source)
        })
        .collect();
    let (samples, measure_from) = drive(sources, options, &bar).await;
    let cpu_after = server.cpu_us();
    bar.finish_and_clear();
    Ok(finish_report(
        "settle",
        server,
        options,
        &samples,
        measure_from,
        cpu_after - cpu_before,
    ))
}

/// `per_conn` encoded requests for each of the first `connections`
/// payees, signed on one thread per payee connection, so that preparing a
/// large run takes seconds, not tens of seconds.
fn presign_all(people: &[Arc<Person>], connections: usize, per_conn: usize) -> Vec<Vec<Vec<u8>>> {
    let expires_at_s = now_s() + 3600;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|payee_index| {
                scope.spawn(move || presign(people, payee_index, per_conn, expires_at_s))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    })
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
