//! `register`, `list`, `balance`, `status` and `rotate`: one request each.

use micropay::core::payment::PaymentId;
use micropay::person::Person;
use micropay::system::localtime::local_datetime_ms;
use micropay::system::terminal::escape;
use micropay::wire::{Balance, Listing, PaymentStatus, Registered, ServerRequest};
use serde_json::json;

use crate::Failure;

/// `register`: create my account.
pub async fn register(person: &Person, server: &str, json: bool) -> Result<(), Failure> {
    let link = person.connect_server(server).await?;
    let r: Registered = link.call(&ServerRequest::Register {}).await?;
    if json {
        println!(
            "{}",
            json!({"ok": true, "name": r.name, "balance": r.balance, "key_fingerprint": r.key_fingerprint})
        );
    } else {
        println!("registered {} with balance {}", escape(&r.name), r.balance);
        println!("account bound to key {}", escape(&r.key_fingerprint));
    }
    Ok(())
}

/// `rotate`: move my account to `new`'s key (or renew it).
pub async fn rotate(old: &Person, new: &Person, server: &str, json: bool) -> Result<(), Failure> {
    if old.name != new.name {
        return Err(Failure::usage(format!(
            "the new certificate is {}'s, not {}'s",
            new.name, old.name
        )));
    }
    let r = micropay::person::rotate(&old.key, new, server).await?;
    if json {
        println!(
            "{}",
            json!({"ok": true, "name": r.name, "kind": r.kind, "key_fingerprint": r.key_fingerprint, "not_after": r.not_after})
        );
    } else {
        let verb = if r.kind == "renew" {
            "renewed"
        } else {
            "rotated"
        };
        println!(
            "{verb} {}: account bound to key {}",
            escape(&r.name),
            escape(&r.key_fingerprint)
        );
        println!(
            "payments signed with it settle until {} (unix s)",
            r.not_after
        );
    }
    Ok(())
}

/// `list`: my balance and who is online.
pub async fn list(person: &Person, server: &str, json: bool) -> Result<(), Failure> {
    let link = person.connect_server(server).await?;
    let l: Listing = link.call(&ServerRequest::List {}).await?;
    if json {
        println!(
            "{}",
            json!({"ok": true, "name": person.name.as_str(), "balance": l.balance, "held": l.held, "server_key_fingerprint": l.server_key_fingerprint, "online_count": l.online_count, "online": l.online})
        );
        return Ok(());
    }
    if l.held == 0 {
        println!("{}'s balance: {}", person.name, l.balance);
    } else {
        println!(
            "{}'s balance: {} available, {} held in open payment channels",
            person.name, l.balance, l.held
        );
    }
    println!("server key:   {}", escape(&l.server_key_fingerprint));
    println!("online:       {}", l.online_count);
    if !l.online.is_empty() {
        let width = l
            .online
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!();
        println!("  {:<width$}  ADDRESS", "NAME");
        for p in &l.online {
            println!("  {:<width$}  {}", escape(&p.name), escape(&p.address));
        }
    }
    Ok(())
}

/// `balance`.
pub async fn balance(person: &Person, server: &str, json: bool) -> Result<(), Failure> {
    let link = person.connect_server(server).await?;
    let b: Balance = link.call(&ServerRequest::Balance {}).await?;
    if json {
        println!(
            "{}",
            json!({"ok": true, "name": b.name, "balance": b.balance, "held": b.held})
        );
    } else if b.held == 0 {
        // Just the number when nothing is held, for people and scripts.
        println!("{}", b.balance);
    } else {
        println!(
            "{} available, {} held in open payment channels",
            b.balance, b.held
        );
    }
    Ok(())
}

/// `status PAYMENT_ID`: the recorded outcome of one of my payments.
pub async fn status(
    person: &Person,
    server: &str,
    payment_id: &str,
    json: bool,
) -> Result<(), Failure> {
    // People may paste an id in capitals; the wire spelling is lowercase.
    let Some(id) = PaymentId::from_hex(&payment_id.to_ascii_lowercase()) else {
        return Err(Failure::usage(format!(
            "{:?} is not a payment id (32 hex digits, as `send` prints)",
            escape(payment_id)
        )));
    };
    let link = person.connect_server(server).await?;
    let s: PaymentStatus = link
        .call(&ServerRequest::Status {
            payment_id: id.to_hex(),
        })
        .await?;
    if json {
        println!("{}", json!({"ok": true, "status": s}));
        return Ok(());
    }
    match s {
        PaymentStatus::Settled { receipt, .. } => println!(
            "settled: {} paid {} {} (seq {}, at {})",
            escape(&receipt.payer),
            escape(&receipt.payee),
            receipt.amount,
            receipt.seq,
            local_datetime_ms(receipt.settled_at_ms)
        ),
        PaymentStatus::Rejected { error } => {
            println!("refused: {}: {}", error.code, escape(&error.message))
        }
    }
    Ok(())
}

/// `verify-log`: the server's log is consistent with what this client saw
/// before (exit 5 and a clear message when it is not).
pub async fn verify_log(
    person: &Person,
    server: &str,
    state: std::path::PathBuf,
    json: bool,
) -> Result<(), Failure> {
    use micropay::person::log_state::{check_log, LogStateError};
    let link = person.connect_server(server).await?;
    let check = check_log(&link, &state).await.map_err(|e| match e {
        LogStateError::Call(c) => Failure::from(c),
        LogStateError::HistoryChanged { .. } => {
            Failure::new(5, "log_history_changed", e.to_string())
        }
        LogStateError::File { .. } => Failure::usage(e.to_string()),
        other => Failure::new(1, "bad_log", other.to_string()),
    })?;
    let origin = escape(&check.now.origin);
    if json {
        println!(
            "{}",
            json!({"ok": true, "origin": origin, "size": check.now.size,
                   "previous_size": check.seen_size})
        );
        return Ok(());
    }
    match check.seen_size {
        Some(seen) => println!(
            "log {origin}: {} entries, consistent with the {seen} seen before",
            check.now.size
        ),
        None => println!(
            "log {origin}: {} entries (first contact; remembered)",
            check.now.size
        ),
    }
    Ok(())
}
