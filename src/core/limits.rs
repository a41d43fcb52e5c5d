//! Every bound micropay enforces, named in one place.
//!
//! Limits that an operator may want to change are also flags of the
//! programs; the constants here are their defaults or hard ceilings.

/// Largest request or response line, newline excluded. A line longer than
/// this is answered with `too_large` and the connection is closed, because
/// the reader cannot know where the next message starts.
pub const FRAME_BYTES_MAX: usize = 16 * 1024;

/// Largest reply line a client accepts. Replies are bounded by what the
/// server sends (a `history` page of 500 entries with 140-byte memos, each
/// character possibly escaped to six bytes, or a `list` of 1000 people),
/// which stays well below this.
pub const REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Longest memo, in bytes of UTF-8.
pub const MEMO_BYTES_MAX: usize = 140;

/// Longest person name, in bytes (the name grammar is ASCII).
pub const NAME_BYTES_MAX: usize = 32;

/// A payment may not expire further than this in the future, so that a
/// signed payment cannot be held back and cashed much later.
pub const PAYMENT_LIFETIME_MAX_S: u64 = 24 * 60 * 60;

/// Default lifetime a payer gives a new payment.
pub const PAYMENT_LIFETIME_DEFAULT_S: u64 = 120;

/// Default number of concurrent connections a server accepts.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;

/// Default number of requests one connection may have in flight.
pub const IN_FLIGHT_PER_CONNECTION_DEFAULT: usize = 256;

/// Default time allowed for a TLS handshake.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Default time a connection may stay silent (or take to finish a line, or
/// to accept a response) before it is closed.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;

/// Default balance granted to a new account, in minor units.
pub const INITIAL_BALANCE_DEFAULT: u64 = 10_000;

/// Largest initial balance an operator may configure. Together with
/// [`ACCOUNTS_MAX`] it keeps the total money supply below `i64::MAX`, which
/// is what SQLite's INTEGER can hold.
pub const INITIAL_BALANCE_MAX: u64 = 1_000_000_000_000;

/// Most accounts a ledger will hold.
pub const ACCOUNTS_MAX: u64 = 1_000_000;

/// Most settlements the ledger writer applies in one transaction.
pub const GROUP_COMMIT_BATCH_MAX: usize = 4096;

/// Most history entries one `history` request returns.
pub const HISTORY_PAGE_MAX: u32 = 500;

/// Default page size of `history`.
pub const HISTORY_PAGE_DEFAULT: u32 = 20;

/// Longest host name a person may advertise for their peer listener.
pub const ADVERTISED_HOST_BYTES_MAX: usize = 253;

/// Most people a `list` reply names.
pub const LIST_ENTRIES_MAX: usize = 1000;

/// Depth of the queue in front of the ledger writer. When it is full,
/// requests get `busy` instead of piling up memory.
pub const LEDGER_QUEUE_MAX: usize = 65_536;

/// How long a ledger connection waits for a lock held by another
/// connection of the same file before it reports the database busy.
pub const LEDGER_BUSY_TIMEOUT_MS: u64 = 5_000;

/// Read connections the SQLite ledger keeps open for reuse; more are
/// opened when reads overlap and closed afterwards.
pub const LEDGER_READERS_MAX: usize = 8;

/// Default of refused payments one payer may have decided (and so
/// recorded for good) per [`REFUSAL_WINDOW_MS`] (`--refusals-per-minute`).
/// Beyond it the server decides nothing more for that payer until the
/// window passes (`busy`), so one account can make the ledger store at
/// most this many refusals a minute (about 0.4 KiB each: 14 MiB an hour)
/// rather than as many as a connection can send (7 GB an hour measured).
pub const REFUSALS_PER_WINDOW_DEFAULT: u32 = 600;

/// Most payment signatures the server checks in one batch
/// (`--verify-batch-max`). A verifier takes whatever is waiting, up to
/// this, so batches grow with load and a lone payment is checked alone;
/// past a few dozen the gain per signature flattens (docs/BENCHMARKS.md).
pub const VERIFY_BATCH_MAX_DEFAULT: usize = 64;

/// The window of [`REFUSALS_PER_WINDOW_DEFAULT`].
pub const REFUSAL_WINDOW_MS: u64 = 60_000;

/// Permissions of a new ledger file: owner only, since it holds every
/// payment and memo.
pub const LEDGER_FILE_MODE: u32 = 0o600;

/// How many times an online backup retries when SQLite reports the
/// ledger busy or locked (rare with WAL: a reader waits only for recovery).
pub const BACKUP_BUSY_RETRIES_MAX: u32 = 100;

/// The wait between those retries, ms.
pub const BACKUP_BUSY_WAIT_MS: u64 = 50;

/// Payments written per statement by `migrate` (and held in memory
/// until then).
pub const MIGRATE_PAYMENT_BATCH_ROWS: usize = 1_000;

/// Default time allowed to connect and finish the TLS handshake.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Default time a request waits for its reply.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Default time `send` waits for the receipt.
pub const SEND_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Time `send` gives the server to say what became of a payment after
/// the payee failed to hand back a receipt.
pub const STATUS_AFTER_FAILURE_TIMEOUT_MS: u64 = 5_000;

/// Requests a client link queues for its writer before `send` waits.
pub const LINK_QUEUE_REQUESTS_MAX: usize = 1024;

/// Largest batch of queued lines a writer coalesces into one write.
pub const WRITE_COALESCE_BYTES_MAX: usize = 64 * 1024;

/// How long shutdown waits for connections to finish what they started.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;

/// Events `serve` queues for its printer; a printer that falls this far
/// behind slows the listener down rather than growing memory.
pub const SERVE_EVENTS_MAX: usize = 1024;

/// Default interval of `serve`'s keep-alive request on its server
/// connection, ms: well below the server's idle timeout
/// ([`IDLE_TIMEOUT_MS_DEFAULT`]), so an idle payee is never dropped. The
/// keep-alive is a `locate` of oneself, which also tells `serve` when
/// another `serve` of the same person has taken over.
pub const SERVE_KEEPALIVE_MS_DEFAULT: u64 = 60_000;

/// The shortest keep-alive interval `serve` accepts, ms.
pub const SERVE_KEEPALIVE_MS_MIN: u64 = 10;

/// `serve`'s first wait before reconnecting to a lost server, ms; each
/// failed attempt doubles it up to [`SERVE_RECONNECT_MS_MAX`].
pub const SERVE_RECONNECT_MS_MIN: u64 = 100;

/// `serve`'s longest wait between reconnection attempts, ms.
pub const SERVE_RECONNECT_MS_MAX: u64 = 5_000;

/// Page cache of the SQLite writer connection, KiB.
pub const SQLITE_WRITER_CACHE_KIB: i64 = 64 * 1024;

/// WAL size, in 4 KiB pages, at which SQLite folds it into the main file.
pub const SQLITE_WAL_CHECKPOINT_PAGES: i64 = 16 * 1024;

/// Bytes of replies one connection may have waiting to be written. A
/// peer that reads slower than it asks stalls its own connection here.
pub const REPLY_QUEUE_BYTES_MAX: usize = 1024 * 1024;

/// Time one coalesced write of replies (at most [`REPLY_QUEUE_BYTES_MAX`]
/// plus one reply) may take as a whole before the connection is closed;
/// the idle timeout applies when it is shorter.
pub const REPLY_WRITE_TIMEOUT_MS: u64 = 30_000;

// The supply bound: every grant fits, summed, in SQLite's signed integer.
const _: () = assert!((INITIAL_BALANCE_MAX as u128) * (ACCOUNTS_MAX as u128) < i64::MAX as u128);

/// How long connecting to PostgreSQL may take before the database counts
/// as unavailable, ms (unless the URL sets `connect_timeout`).
pub const PG_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// How many times a PostgreSQL commit that failed for a transient reason
/// (serialization failure, deadlock, lost connection before COMMIT) is
/// run again before the batch is answered with an error.
pub const PG_COMMIT_ATTEMPTS: u32 = 4;

/// Default presence lease on a shared database, ms: a server renews its
/// people's presence every third of it; a server that stops renewing has
/// its people disappear within it (`--presence-lease-ms`).
pub const PRESENCE_LEASE_MS_DEFAULT: u64 = 10_000;

/// The shortest presence lease allowed, ms.
pub const PRESENCE_LEASE_MS_MIN: u64 = 300;

/// Default interval at which a listener with a CRL (`--crl`) looks at the
/// file's modification time, size and inode, and reloads it when one of
/// them changed, ms (`--crl-poll-ms`). SIGHUP reloads at once.
pub const CRL_POLL_MS_DEFAULT: u64 = 5_000;

/// While the CRL in force is past its next-update time, the listener
/// warns about it in the log at most this often, ms.
pub const CRL_STALE_WARN_MS: u64 = 60_000;

/// Default time until the next update of a CRL that `micropay-certs
/// --revoke` signs, days (`--crl-days`).
pub const CRL_NEXT_UPDATE_DAYS_DEFAULT: u32 = 30;

/// Longest next-update time `micropay-certs` puts in a CRL, days.
pub const CRL_NEXT_UPDATE_DAYS_MAX: u32 = 365;
// The metrics listener (`--metrics-listen`): plain HTTP for a Prometheus
// scraper, bounded like every other listener.

/// Most connections the metrics listener serves at once; more are closed
/// at once. A scraper needs one.
pub const METRICS_CONNECTIONS_MAX: usize = 8;

/// Time one metrics connection may take as a whole (reading the request,
/// building and writing the reply), ms; it serves one request and closes.
pub const METRICS_CONNECTION_TIMEOUT_MS: u64 = 5_000;

/// Largest request head (request line and headers) the metrics listener
/// reads, bytes; a larger one is answered 431. This is also the smallest
/// read buffer hyper accepts.
pub const METRICS_REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// Time a scrape gives the gauges it reads on demand (people online, which
/// on PostgreSQL is a query) before it leaves them at their last value, ms.
pub const METRICS_REFRESH_TIMEOUT_MS: u64 = 2_000;

/// Most links one payment channel may have. It bounds the hashing a close
/// costs the server (at most this many SHA-256 steps to go from the
/// revealed link back to the committed root) and the payee's forward check
/// of one payment.
pub const CHANNEL_LINKS_MAX: u64 = 1_000_000;

/// Furthest a channel may expire after it opens: funds are held no longer.
pub const CHANNEL_LIFETIME_MAX_S: u64 = 7 * 24 * 60 * 60;

/// Default lifetime of a new channel.
pub const CHANNEL_LIFETIME_DEFAULT_S: u64 = 60 * 60;

/// Time after a channel's expiry during which the payee's close is still
/// accepted (its request may be in flight, clocks may differ); only after
/// it does the hold return to the payer, so a close and an expiry can never
/// both be possible at one instant.
pub const CHANNEL_CLOSE_GRACE_S: u64 = 5 * 60;

/// The payer keeps one link of its chain in memory every this many links
/// and recomputes the others from the next kept one, so a link costs at
/// most this many hashes and a chain of [`CHANNEL_LINKS_MAX`] links keeps
/// under a thousand links in memory.
pub const CHANNEL_CHECKPOINT_LINKS: u64 = 1024;

/// The most hashes a payee spends checking one channel link on the async
/// runtime's worker thread (about 0.6 ms); a longer check moves the
/// worker's other tasks elsewhere first (`block_in_place`).
pub const CHANNEL_INLINE_HASHES_MAX: u64 = 4096;

/// How often the server looks for channels past expiry plus grace whose
/// hold must return to the payer.
pub const CHANNEL_EXPIRY_POLL_MS: u64 = 5_000;

/// Most channels one expiry pass returns (the rest wait for the next).
pub const CHANNEL_EXPIRY_BATCH_MAX: u32 = 1_000;

/// How often `serve` looks for channels it must close before they expire.
pub const CHANNEL_AUTOCLOSE_POLL_MS: u64 = 1_000;

/// `serve` closes a channel it holds links of once its expiry is less than
/// this far away (well inside the server's grace, so the close lands in
/// time even after a few failed attempts).
pub const CHANNEL_AUTOCLOSE_MARGIN_S: u64 = 120;

/// Most payment channels the first page of `history` lists.
pub const CHANNEL_HISTORY_MAX: u32 = 20;

// The tamper-evident log (docs/PROTOCOL.md, "The log").

/// Largest signed checkpoint note a client accepts, bytes: an origin, a
/// size, a root and a few signature lines fit far below this.
pub const CHECKPOINT_NOTE_BYTES_MAX: usize = 4 * 1024;

/// Longest log origin (the first line of a checkpoint), bytes.
pub const LOG_ORIGIN_BYTES_MAX: usize = 128;

/// Log records written by one PostgreSQL statement: a whole ledger
/// adopted into a log at once goes in chunks of this many.
pub const LOG_INSERT_CHUNK_RECORDS: usize = 8 * 1024;

/// Longest log name (`--log-name`), bytes: `micropay/`, 16 hex digits,
/// `/` and the name stay within [`LOG_ORIGIN_BYTES_MAX`].
pub const LOG_NAME_BYTES_MAX: usize = 64;

/// Most hashes an inclusion or consistency proof may carry: a tree of
/// 2^63 leaves needs at most 2 × 63.
pub const PROOF_HASHES_MAX: usize = 128;

/// Distinct verified checkpoints a client remembers, so that the receipts
/// of one batch cost one signature check (least recently used goes first).
pub const CHECKPOINT_CACHE_MAX: usize = 64;
