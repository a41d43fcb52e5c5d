//! `send PAYEE AMOUNT`: pay a peer directly and show the receipt.

use micropay::core::limits::MEMO_BYTES_MAX;
use micropay::core::name::Name;
use micropay::core::payment::PaymentId;
use micropay::core::receipt_check::Evidence;
use micropay::person::{self, Person, SendOptions, Sent};
use micropay::system::localtime::local_datetime_ms;
use micropay::system::terminal::escape;
use micropay::wire::ReceiptJson;
use serde_json::json;

use crate::Failure;

/// What the command line asked for, before it is checked.
pub struct Request<'a> {
    /// Who to pay.
    pub payee: &'a str,
    /// The amount as typed.
    pub amount: &'a str,
    /// The memo.
    pub memo: &'a str,
    /// Seconds the whole payment may take.
    pub timeout_s: u64,
    /// The id and expiry of an earlier payment to retry.
    pub retry: Option<(&'a str, u64)>,
    /// The log state file (`verify-log`'s), checked after the receipt.
    pub log_state: std::path::PathBuf,
}

/// Checks the arguments, pays and prints the verified receipt.
pub async fn run(
    person: &Person,
    server: &str,
    request: &Request<'_>,
    json: bool,
) -> Result<(), Failure> {
    let options = options(person, server, request)?;
    let sent = person::send(person, &options).await?;
    let r = &sent.receipt;
    if json {
        println!("{}", json_line(&sent));
        return Ok(());
    }
    let memo = if request.memo.is_empty() {
        String::new()
    } else {
        format!(" (memo: {})", escape(request.memo))
    };
    println!(
        "paid {} {} at {}{memo}",
        r.payee,
        r.amount_minor,
        escape(&sent.payee_address)
    );
    println!(
        "receipt: payment {} settled as ledger seq {} at {}; {}",
        r.payment_id,
        r.seq,
        local_datetime_ms(r.settled_at_ms),
        proven_by(&sent.evidence)
    );
    println!("balance: {}", sent.balance);
    Ok(())
}

/// What verified the receipt, for people.
fn proven_by(evidence: &Evidence) -> String {
    match evidence {
        Evidence::Log(checkpoint) => format!(
            "in the server's log (inclusion proof verified against its signed checkpoint of {} entries)",
            checkpoint.size
        ),
        Evidence::Signature => "server signature verified (no log proof came with it)".to_owned(),
    }
}

/// The `--json` line: the receipt as the server gave it (signed only when
/// no log proof came with it) and the proof, so that it can be checked
/// again offline (docs/PROTOCOL.md §11.4).
fn json_line(sent: &Sent) -> serde_json::Value {
    let r = &sent.receipt;
    let mut receipt = ReceiptJson::from(r);
    receipt.signature = sent.signature.as_ref().map(hex::encode);
    let verified_by = match sent.evidence {
        Evidence::Log(_) => "log_proof",
        Evidence::Signature => "signature",
    };
    let mut line = json!({"ok": true, "payment_id": r.payment_id.to_hex(), "payee": r.payee.as_str(),
        "amount": r.amount_minor, "receipt": receipt, "receipt_verified": true,
        "verified_by": verified_by, "balance": sent.balance});
    if let Some(log) = &sent.log {
        line["log"] = json!(log);
    }
    line
}

/// The checked options, or a usage error that says what is wrong.
fn options(person: &Person, server: &str, request: &Request<'_>) -> Result<SendOptions, Failure> {
    let payee = Name::parse(request.payee)
        .map_err(|e| Failure::usage(format!("payee {:?}: {e}", escape(request.payee))))?;
    if payee == person.name {
        return Err(Failure::usage("you cannot pay yourself"));
    }
    let amount: u64 = request.amount.parse().map_err(|_| {
        Failure::usage(format!(
            "amount {:?} must be a whole number of minor units between 1 and {}",
            escape(request.amount),
            u64::MAX
        ))
    })?;
    if amount == 0 {
        return Err(Failure::usage("amount must be at least 1"));
    }
    if request.memo.len() > MEMO_BYTES_MAX {
        return Err(Failure::usage(format!(
            "memo has {} bytes; the limit is {MEMO_BYTES_MAX}",
            request.memo.len()
        )));
    }
    if request.timeout_s == 0 {
        return Err(Failure::usage("--timeout must be at least 1 second"));
    }
    let mut options = SendOptions::new(server, payee, amount);
    options.memo = request.memo.to_owned();
    options.timeout_ms = request.timeout_s.saturating_mul(1000);
    options.log_state = Some(request.log_state.clone());
    if let Some((id, expires_at_s)) = request.retry {
        // People may paste an id in capitals; the wire spelling is lowercase.
        let id = PaymentId::from_hex(&id.to_ascii_lowercase()).ok_or_else(|| {
            Failure::usage(format!(
                "--id {:?} is not a payment id (32 hex digits)",
                escape(id)
            ))
        })?;
        options.retry = Some((id, expires_at_s));
    }
    Ok(options)
}
