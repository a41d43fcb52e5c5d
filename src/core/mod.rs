//! The pure core: limits, names, keys, payments and the settlement rules.
//! Nothing here does I/O, reads the clock or knows about tokio or a
//! database; time is always passed in.

pub mod batch;
pub mod channel;
pub mod channel_rules;
pub mod checkpoint;
pub mod ed25519;
pub mod keys;
pub mod limits;
pub mod log_proof;
pub mod log_record;
pub mod memory_ledger;
pub mod merkle;
pub mod name;
pub mod payment;
pub mod receipt_check;
pub mod refusal_budget;
pub mod rotation;
pub mod rules;

#[cfg(test)]
mod tests;
