//! micropay: person-to-person micropayments over mutual TLS 1.3, with
//! every payment signed by its payer and settled durably by a server.
//!
//! Module map, from the pure core outwards (data flows one way: binaries
//! → `server` / `person` → `net` and `ledger` → `wire` → `core`):
//!
//! | module | what lives there | may touch |
//! |---|---|---|
//! | [`core`] | the pure core: [`core::limits`] (every bound), [`core::name`], [`core::keys`] (Ed25519, P-256 via ring), [`core::payment`] (payments, receipts, canonical bytes), [`core::rotation`] (key-change statements: rotation, renewal, rebind), [`core::rules`] (the settlement rules: `decide`, `decide_key_change`), [`core::batch`] (deciding a commit batch in memory), [`core::refusal_budget`] (how many refusals a payer may have recorded per minute), [`core::memory_ledger`] (the reference ledger the rules are tested against and audit replays through), [`core::channel`] (payment channels: the PayWord hash chain, commitments, closes, open receipts), [`core::channel_rules`] (whether a channel opens, what a close pays, when a hold expires), the log's pure parts: [`core::merkle`] (RFC 9162 tree, inclusion and consistency proofs), [`core::log_record`] (the bytes of a leaf), [`core::checkpoint`] (C2SP signed-note checkpoints, the verified-checkpoint cache), [`core::log_proof`] (checking a receipt's place in the log) | nothing: no I/O, no clock, no tokio, no database |
//! | [`wire`] | the protocol: [`wire::request`] (`ServerRequest`, `PeerRequest`, decoding), [`wire::reply`], [`wire::messages`] (JSON forms), [`wire::errors`] (codes; refusals → codes in one place), [`wire::frame`] (bounded lines on async streams) | sockets (frame only) |
//! | [`ledger`] | the [`ledger::LedgerStore`] trait, [`ledger::handle::Ledger`] (what the server holds), [`ledger::group_commit`] (the single writer), [`ledger::log`] (the server's Merkle log: the writer seals each batch with a signed checkpoint), [`mod@ledger::audit`] (shared checks), and one backend each: [`ledger::sqlite`], [`ledger::postgres`] | the database |
//! | [`net`] | [`net::tls`] (rustls configurations), [`net::identity`] (a verified certificate → name, key, validity, serial), [`net::revocation`] (CRLs: the reloading verifier and the revocation set checked at every request), [`net::session`] (accept loop and per-connection request loop, shared by server and peer listener), [`net::link`] (a pipelined client connection) | sockets, files (certificates) |
//! | [`server`] | the server: listener and connections ([`server`]), one handler per operation ([`server::cmd`]), presence ([`server::presence`] in memory, [`server::pg_presence`] shared) | sockets, ledger |
//! | [`metrics`] | Prometheus metrics: [`metrics::ServerMetrics`] (what the server counts; it observes the ledger's commits and the listener's connections through their observer traits), [`metrics::PeerMetrics`] (what a payee's `serve` counts) and [`metrics::http`] (the bounded `/metrics` listener, hyper) | a socket (the metrics listener) |
//! | [`person`] | one person's side: [`person::send`] (pay a peer), [`person::serve`] (take payments) and [`person::log_state`] (the last checkpoint seen per server; `verify-log`), [`person::channel_payer`] and [`person::channel_payee`] (payment channels, each side; [`person::channel_serve`] is what `serve` does with them) | sockets |
//! | [`certs`] | making CA/server/person certificates with rcgen and writing them | files |
//! | [`system`] | [`system::clock`], [`system::logging`], [`system::signal`], [`system::terminal`] (escaping what peers control) | the clock, stderr, signals |
//!
//! The binaries in `src/bin/` parse flags and call into these modules;
//! the load generator lives only in `src/bin/micropay-bench/`.

pub mod certs;
pub mod core;
pub mod ledger;
pub mod metrics;
pub mod net;
pub mod person;
pub mod server;
pub mod system;
pub mod wire;
