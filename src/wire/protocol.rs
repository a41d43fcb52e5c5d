//! The wire protocol: requests, replies, error codes and their JSON forms.
//! Pure data; no tokio, no I/O, so it can be unit-tested and fuzzed alone.
//!
//! Every message is one JSON object on one line. A request is
//! `{"id": N, "op": "...", ...fields}`; its reply echoes `id` and carries
//! either `"ok": true` with the op's fields under `result`, or
//! `"ok": false` with `error: {code, message}`. `docs/PROTOCOL.md` is the
//! contract; this module is its implementation.

use serde::{Deserialize, Serialize};

use crate::core::keys::SIGNATURE_BYTES_MAX;
use crate::core::name::Name;
use crate::core::payment::{
    Payment, PaymentError, PaymentId, Receipt, SignedPayment, SignedReceipt,
};
use crate::core::rules::{Refusal, RefusalKind};

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The caller (or the named person) has no account.
    NotRegistered,
    /// The caller already has an account.
    AlreadyRegistered,
    /// The caller's certificate key differs from the registered key.
    KeyMismatch,
    /// A payment's signature does not verify with the payer's key.
    BadSignature,
    /// The payer's balance does not cover the amount.
    InsufficientFunds,
    /// The payment is past its expiry.
    Expired,
    /// The payment id was used before with different content.
    Conflict,
    /// The payee has no account.
    UnknownPayee,
    /// The payer has no account.
    UnknownPayer,
    /// The payee is not online.
    PayeeOffline,
    /// Payer and payee are the same person.
    SelfPayment,
    /// The caller may not do this (e.g. settle a payment not addressed to it).
    Forbidden,
    /// No such payment (or not one the caller may see).
    NotFound,
    /// The caller's certificate has expired since the connection began.
    CertificateExpired,
    /// The request is malformed: bad JSON, unknown op, missing or extra
    /// fields, a value out of range.
    BadRequest,
    /// The line is longer than the frame limit; the connection closes.
    TooLarge,
    /// The server is at a limit; try again later.
    Busy,
    /// The server failed; nothing was moved.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::KeyMismatch => "key_mismatch",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::Expired => "expired",
            ErrorCode::Conflict => "conflict",
            ErrorCode::UnknownPayee => "unknown_payee",
            ErrorCode::UnknownPayer => "unknown_payer",
            ErrorCode::PayeeOffline => "payee_offline",
            ErrorCode::SelfPayment => "self_payment",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::CertificateExpired => "certificate_expired",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }

    /// Parses a wire code (for stored rejections).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reply: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
#[serde(deny_unknown_fields)]
pub struct WireError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl WireError {
    /// Builds an error from a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl From<Refusal> for WireError {
    /// The one place where the rules' refusals become wire codes.
    fn from(r: Refusal) -> WireError {
        let code = match r.kind {
            RefusalKind::AlreadyRegistered => ErrorCode::AlreadyRegistered,
            RefusalKind::LedgerFull => ErrorCode::Busy,
            RefusalKind::Conflict => ErrorCode::Conflict,
            RefusalKind::Expired => ErrorCode::Expired,
            RefusalKind::ExpiryTooFar
            | RefusalKind::ZeroAmount
            | RefusalKind::MemoTooLong
            | RefusalKind::SignatureTooLong => ErrorCode::BadRequest,
            RefusalKind::SelfPayment => ErrorCode::SelfPayment,
            RefusalKind::UnknownPayer => ErrorCode::UnknownPayer,
            RefusalKind::UnknownPayee => ErrorCode::UnknownPayee,
            RefusalKind::InsufficientFunds => ErrorCode::InsufficientFunds,
            RefusalKind::Overflow => ErrorCode::Internal,
            RefusalKind::KeyChanged => ErrorCode::KeyMismatch,
        };
        WireError::new(code, r.message)
    }
}

impl From<PaymentError> for WireError {
    fn from(e: PaymentError) -> WireError {
        let code = match e {
            PaymentError::Expired { .. } => ErrorCode::Expired,
            PaymentError::SelfPayment => ErrorCode::SelfPayment,
            PaymentError::ZeroAmount
            | PaymentError::MemoTooLong(_)
            | PaymentError::ExpiryTooFar
            | PaymentError::SignatureTooLong => ErrorCode::BadRequest,
        };
        WireError::new(code, e.to_string())
    }
}

/// A payment as JSON. Transport only: the signature covers the canonical
/// bytes, never this text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentJson {
    /// 32 hex digits.
    pub id: String,
    /// Payer's name.
    pub payer: String,
    /// Payee's name.
    pub payee: String,
    /// Minor units, a JSON integer.
    pub amount: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// Optional memo.
    #[serde(default)]
    pub memo: String,
    /// Hex signature over the canonical bytes.
    pub signature: String,
}

impl From<&SignedPayment> for PaymentJson {
    fn from(s: &SignedPayment) -> PaymentJson {
        PaymentJson {
            id: s.payment.id.to_hex(),
            payer: s.payment.payer.to_string(),
            payee: s.payment.payee.to_string(),
            amount: s.payment.amount_minor,
            expires_at: s.payment.expires_at_s,
            memo: s.payment.memo.clone(),
            signature: hex::encode(&s.signature),
        }
    }
}

impl TryFrom<&PaymentJson> for SignedPayment {
    type Error = WireError;

    /// Decodes and checks every field that needs no clock, key or ledger.
    fn try_from(j: &PaymentJson) -> Result<SignedPayment, WireError> {
        let bad = |m: String| WireError::new(ErrorCode::BadRequest, m);
        let id = PaymentId::from_hex(&j.id)
            .ok_or_else(|| bad("payment id must be 32 hex digits".into()))?;
        let payer = Name::parse(&j.payer).map_err(|e| bad(format!("payer: {e}")))?;
        let payee = Name::parse(&j.payee).map_err(|e| bad(format!("payee: {e}")))?;
        if j.signature.len() > 2 * SIGNATURE_BYTES_MAX {
            return Err(PaymentError::SignatureTooLong.into());
        }
        let signature =
            hex::decode(&j.signature).map_err(|_| bad("signature must be hex".into()))?;
        let payment = Payment {
            id,
            payer,
            payee,
            amount_minor: j.amount,
            expires_at_s: j.expires_at,
            memo: j.memo.clone(),
        };
        payment.check_fields()?;
        Ok(SignedPayment { payment, signature })
    }
}

/// A receipt as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptJson {
    /// The payment id, 32 hex digits.
    pub payment_id: String,
    /// Payer's name.
    pub payer: String,
    /// Payee's name.
    pub payee: String,
    /// Minor units.
    pub amount: u64,
    /// Ledger sequence number.
    pub seq: u64,
    /// Unix milliseconds.
    pub settled_at_ms: u64,
    /// SHA-256 of the payment's canonical bytes, hex.
    pub payment_hash: String,
    /// The server's signature over the receipt's canonical bytes, hex.
    pub signature: String,
}

impl From<&SignedReceipt> for ReceiptJson {
    fn from(s: &SignedReceipt) -> ReceiptJson {
        let r = &s.receipt;
        ReceiptJson {
            payment_id: r.payment_id.to_hex(),
            payer: r.payer.to_string(),
            payee: r.payee.to_string(),
            amount: r.amount_minor,
            seq: r.seq,
            settled_at_ms: r.settled_at_ms,
            payment_hash: hex::encode(r.payment_hash),
            signature: hex::encode(&s.signature),
        }
    }
}

impl TryFrom<&ReceiptJson> for SignedReceipt {
    type Error = WireError;

    fn try_from(j: &ReceiptJson) -> Result<SignedReceipt, WireError> {
        let bad = |m: &str| WireError::new(ErrorCode::BadRequest, m);
        let mut payment_hash = [0u8; 32];
        hex::decode_to_slice(&j.payment_hash, &mut payment_hash)
            .map_err(|_| bad("payment_hash must be 64 hex digits"))?;
        Ok(SignedReceipt {
            receipt: Receipt {
                payment_id: PaymentId::from_hex(&j.payment_id)
                    .ok_or_else(|| bad("payment_id must be 32 hex digits"))?,
                payer: Name::parse(&j.payer).map_err(|_| bad("bad payer name"))?,
                payee: Name::parse(&j.payee).map_err(|_| bad("bad payee name"))?,
                amount_minor: j.amount,
                seq: j.seq,
                settled_at_ms: j.settled_at_ms,
                payment_hash,
            },
            signature: hex::decode(&j.signature).map_err(|_| bad("signature must be hex"))?,
        })
    }
}

/// Every operation a client can ask of the server or of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create my account, bound to my certificate's key.
    Register {},
    /// I accept peer connections at `port` (and `address`, which defaults
    /// to the connection's source address).
    Online {
        /// Listening port.
        port: u16,
        /// Host or IP to advertise; default: the connection's source IP.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// I no longer accept payments.
    Offline {},
    /// My balance and who is online.
    List {},
    /// Where is `name` online?
    Locate {
        /// The person to find.
        name: String,
    },
    /// My balance.
    Balance {},
    /// My payments, newest first.
    History {
        /// Page size, default 20, at most 500.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// Only payments with a ledger seq below this (the next page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
    },
    /// The outcome of a payment I am payer or payee of.
    Status {
        /// 32 hex digits.
        payment_id: String,
    },
    /// Settle a signed payment (sent by its payee, or by its payer).
    Settle {
        /// The payment.
        payment: PaymentJson,
    },
    /// Peer to peer: a payer hands a payment to its payee.
    Pay {
        /// The payment.
        payment: PaymentJson,
    },
}

impl Request {
    /// The op name, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Register {} => "register",
            Request::Online { .. } => "online",
            Request::Offline {} => "offline",
            Request::List {} => "list",
            Request::Locate { .. } => "locate",
            Request::Balance {} => "balance",
            Request::History { .. } => "history",
            Request::Status { .. } => "status",
            Request::Settle { .. } => "settle",
            Request::Pay { .. } => "pay",
        }
    }
}

/// A decoded request line: the echoed id and the request or why it is bad.
#[derive(Debug)]
pub struct DecodedRequest {
    /// The client's request id, echoed in the reply (absent: `null`).
    pub id: Option<u64>,
    /// The request, or the error to answer with.
    pub request: Result<Request, WireError>,
}

/// Decodes one request line (without its newline). Never panics: anything
/// that is not a well-formed request becomes a `bad_request` error that
/// still echoes the id when one could be read.
pub fn decode_request(line: &[u8]) -> DecodedRequest {
    decode_request_fast(line).unwrap_or_else(|| decode_request_general(line))
}

/// Longest request id in decimal digits (u64::MAX has 20).
const ID_DIGITS_MAX: usize = 20;

/// The shape micropay's own clients send, `{"id":N,` followed by the other
/// members, decoded straight into a [`Request`] without building a JSON
/// tree first. Returns `None` whenever the line is not exactly that shape
/// or does not decode, and the general path then gives the answer (so a
/// line decodes the same either way, errors included).
fn decode_request_fast(line: &[u8]) -> Option<DecodedRequest> {
    let rest = line.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // JSON forbids leading zeros; leave such lines to the general path.
    if digits == 0 || digits > ID_DIGITS_MAX || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let id: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let members = rest[digits..].strip_prefix(b",")?;
    let mut body = Vec::with_capacity(members.len() + 1);
    body.push(b'{');
    body.extend_from_slice(members);
    // Any other "id" member is an unknown field here, so a line with two
    // ids falls through to the general path as well.
    let request = serde_json::from_slice::<Request>(&body).ok()?;
    Some(DecodedRequest {
        id: Some(id),
        request: Ok(request),
    })
}

/// Decodes any line: parse to a JSON tree, take out `id`, decode the rest.
/// [`decode_request`] tries a faster path first and agrees with this one
/// on every line (a property test checks it).
pub fn decode_request_general(line: &[u8]) -> DecodedRequest {
    let bad = |m: String| WireError::new(ErrorCode::BadRequest, m);
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return DecodedRequest {
                id: None,
                request: Err(bad(format!("not valid JSON: {e}"))),
            }
        }
    };
    let serde_json::Value::Object(mut map) = value else {
        return DecodedRequest {
            id: None,
            request: Err(bad("a request is a JSON object".into())),
        };
    };
    let id = match map.remove("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(id) => Some(id),
            None => {
                return DecodedRequest {
                    id: None,
                    request: Err(bad("id must be an unsigned 64-bit integer".into())),
                }
            }
        },
        Some(_) => {
            return DecodedRequest {
                id: None,
                request: Err(bad("id must be an unsigned 64-bit integer".into())),
            }
        }
    };
    let request = serde_json::from_value::<Request>(serde_json::Value::Object(map))
        .map_err(|e| bad(format!("bad request: {e}")));
    DecodedRequest { id, request }
}

/// Encodes a request line (with its newline).
pub fn encode_request(id: u64, request: &Request) -> Vec<u8> {
    encode_request_body(id, &encode_body(request))
}

/// Serializes a request without its id: `{"op":...}`. Encode once, then
/// give it an id with [`encode_request_body`] (what a pipelining client
/// that prepares its requests ahead does).
pub fn encode_body(request: &Request) -> Vec<u8> {
    match serde_json::to_vec(request) {
        Ok(body) => body,
        // A Request is plain data; serializing it cannot fail.
        Err(_) => unreachable!("requests always serialize"),
    }
}

/// Puts `"id":N` at the front of an encoded request object and ends the
/// line.
pub fn encode_request_body(id: u64, body: &[u8]) -> Vec<u8> {
    // Requests serialize as objects; the tag makes them non-empty.
    assert!(body.first() == Some(&b'{') && body.len() > 2);
    let mut line = Vec::with_capacity(body.len() + 24);
    line.extend_from_slice(b"{\"id\":");
    line.extend_from_slice(id.to_string().as_bytes());
    line.push(b',');
    line.extend_from_slice(&body[1..]);
    line.push(b'\n');
    line
}

/// A result as JSON text, serialized once and written as is.
pub type ResultJson = Box<serde_json::value::RawValue>;

/// Serializes an op's result.
pub fn to_result_json<T: Serialize>(value: &T) -> Result<ResultJson, WireError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
}

/// A reply as it travels: the echoed id and a result or an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The request's id (`null` when the request had none or was unreadable).
    pub id: Option<u64>,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The op's result, when `ok`, as JSON text (parsed on demand by
    /// [`Reply::into_result`]).
    #[serde(default)]
    pub result: Option<ResultJson>,
    /// The error, when not `ok`.
    #[serde(default)]
    pub error: Option<WireError>,
}

#[derive(Serialize)]
struct ReplyOk<'a, T> {
    id: Option<u64>,
    ok: bool,
    result: &'a T,
}

#[derive(Serialize)]
struct ReplyErr<'a> {
    id: Option<u64>,
    ok: bool,
    error: &'a WireError,
}

impl Reply {
    /// Encodes an outcome as a reply line (with its newline).
    pub fn encode<T: Serialize>(id: Option<u64>, outcome: &Result<T, WireError>) -> Vec<u8> {
        let encoded = match outcome {
            Ok(result) => serde_json::to_vec(&ReplyOk {
                id,
                ok: true,
                result,
            }),
            Err(error) => serde_json::to_vec(&ReplyErr {
                id,
                ok: false,
                error,
            }),
        };
        let mut line = match encoded {
            Ok(line) => line,
            Err(e) => {
                let error = WireError::new(ErrorCode::Internal, e.to_string());
                match serde_json::to_vec(&ReplyErr {
                    id,
                    ok: false,
                    error: &error,
                }) {
                    Ok(line) => line,
                    Err(_) => unreachable!("an error reply always serializes"),
                }
            }
        };
        line.push(b'\n');
        line
    }

    /// Decodes a reply line.
    pub fn decode(line: &[u8]) -> Result<Reply, WireError> {
        serde_json::from_slice(line)
            .map_err(|e| WireError::new(ErrorCode::BadRequest, format!("bad reply: {e}")))
    }

    /// The result as `T`, or the error.
    pub fn into_result<T: serde::de::DeserializeOwned>(self) -> Result<T, WireError> {
        if self.ok {
            let text = self.result.as_deref().map_or("null", |r| r.get());
            serde_json::from_str(text).map_err(|e| {
                WireError::new(ErrorCode::BadRequest, format!("unexpected reply: {e}"))
            })
        } else {
            Err(self.error.unwrap_or_else(|| {
                WireError::new(ErrorCode::BadRequest, "a failed reply without an error")
            }))
        }
    }
}

/// `register`: the new account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// Your name.
    pub name: String,
    /// Your opening balance.
    pub balance: u64,
    /// The fingerprint of the key your account is bound to.
    pub key_fingerprint: String,
}

/// `online`: where others will reach you.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Online {
    /// `host:port` as advertised.
    pub address: String,
}

/// One person online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlinePeer {
    /// Their name.
    pub name: String,
    /// `host:port` of their peer listener.
    pub address: String,
}

/// `list`: your balance and who is online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Your balance.
    pub balance: u64,
    /// SHA-256 fingerprint of the server's receipt-signing key.
    pub server_key_fingerprint: String,
    /// How many people are online.
    pub online_count: usize,
    /// Who is online (at most 1000 entries), sorted by name.
    pub online: Vec<OnlinePeer>,
}

/// `balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Your name.
    pub name: String,
    /// Your balance in minor units.
    pub balance: u64,
}

/// One settled payment as history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Ledger sequence number.
    pub seq: u64,
    /// Payment id.
    pub payment_id: String,
    /// Who paid.
    pub payer: String,
    /// Who was paid.
    pub payee: String,
    /// Minor units.
    pub amount: u64,
    /// Memo.
    pub memo: String,
    /// Unix milliseconds.
    pub settled_at_ms: u64,
}

/// `history`: a page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The entries.
    pub entries: Vec<HistoryEntry>,
    /// Pass as `before_seq` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before_seq: Option<u64>,
}

/// `status`: a payment's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Settled; here is the receipt.
    Settled {
        /// The server-signed receipt.
        receipt: ReceiptJson,
    },
    /// Refused for good; the same payment will always be refused so.
    Rejected {
        /// Why.
        error: WireError,
    },
}

/// `settle` and `pay`: the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// The server-signed receipt.
    pub receipt: ReceiptJson,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_requests_and_keeps_the_id() {
        let d = decode_request(br#"{"id":7,"op":"register"}"#);
        assert_eq!(d.id, Some(7));
        assert_eq!(d.request, Ok(Request::Register {}));
        let d = decode_request(br#"{"op":"online","port":9000}"#);
        assert_eq!(d.id, None);
        assert_eq!(
            d.request,
            Ok(Request::Online {
                port: 9000,
                address: None
            })
        );
    }

    #[test]
    fn refuses_malformed_requests_with_bad_request() {
        for line in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"id":1}"#,
            br#"{"id":1,"op":"fly"}"#,
            br#"{"id":1,"op":"register","extra":1}"#,
            br#"{"id":1,"op":"online"}"#,
            br#"{"id":1,"op":"online","port":70000}"#,
            br#"{"id":-1,"op":"register"}"#,
            br#"{"id":"x","op":"register"}"#,
            b"\xff\xfe",
        ] {
            let d = decode_request(line);
            let err = d.request.expect_err("must be refused");
            assert_eq!(
                err.code,
                ErrorCode::BadRequest,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // The id is echoed even when the op is bad.
        assert_eq!(decode_request(br#"{"id":5,"op":"fly"}"#).id, Some(5));
    }

    #[test]
    fn payment_json_validation() {
        let good = r#"{"id":"00112233445566778899aabbccddeeff","payer":"alice","payee":"bob","amount":1,"expires_at":5,"signature":"00"}"#;
        let j: PaymentJson = serde_json::from_str(good).expect("parses");
        assert!(SignedPayment::try_from(&j).is_ok());
        let too_big = good.replace("\"amount\":1", "\"amount\":18446744073709551616");
        assert!(serde_json::from_str::<PaymentJson>(&too_big).is_err());
        let negative = good.replace("\"amount\":1", "\"amount\":-1");
        assert!(serde_json::from_str::<PaymentJson>(&negative).is_err());
        let float = good.replace("\"amount\":1", "\"amount\":1.5");
        assert!(serde_json::from_str::<PaymentJson>(&float).is_err());
        let zero: PaymentJson =
            serde_json::from_str(&good.replace("\"amount\":1", "\"amount\":0")).expect("parses");
        assert_eq!(
            SignedPayment::try_from(&zero).map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
        let selfpay: PaymentJson =
            serde_json::from_str(&good.replace("\"bob\"", "\"alice\"")).expect("parses");
        assert_eq!(
            SignedPayment::try_from(&selfpay).map_err(|e| e.code),
            Err(ErrorCode::SelfPayment)
        );
        let bad_id: PaymentJson =
            serde_json::from_str(&good.replace("00112233", "zz112233")).expect("parses");
        assert!(SignedPayment::try_from(&bad_id).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let line = Reply::encode(
            Some(3),
            &Ok(Balance {
                name: "a".into(),
                balance: 9,
            }),
        );
        let reply = Reply::decode(&line[..line.len() - 1]).expect("decodes");
        assert_eq!(reply.id, Some(3));
        let b: Balance = reply.into_result().expect("ok");
        assert_eq!(b.balance, 9);
        let line = Reply::encode::<Balance>(
            None,
            &Err(WireError::new(ErrorCode::InsufficientFunds, "no")),
        );
        let reply = Reply::decode(&line[..line.len() - 1]).expect("decodes");
        assert_eq!(
            reply.into_result::<Balance>().map_err(|e| e.code),
            Err(ErrorCode::InsufficientFunds)
        );
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_path() {
        let lines: &[&[u8]] = &[
            br#"{"id":7,"op":"register"}"#,
            br#"{"id":0,"op":"balance"}"#,
            br#"{"id":18446744073709551615,"op":"list"}"#,
            br#"{"id":18446744073709551616,"op":"list"}"#,
            br#"{"id":007,"op":"list"}"#,
            br#"{"id":1,"op":"register","id":2}"#,
            br#"{"id":1,"op":"register","op":"balance"}"#,
            br#"{"id":1,"op":"balance","op":"register"}"#,
            br#"{"id":1,"op":"online","port":5,"port":6}"#,
            br#"{"id":1,"op":"fly"}"#,
            br#"{"id":1,}"#,
            br#"{"id":1,"op":"register"} trailing"#,
            br#"{"id":1,"op":"history","limit":3}"#,
        ];
        for line in lines {
            let general = decode_request_general(line);
            let both = decode_request(line);
            assert_eq!(general.id, both.id, "{}", String::from_utf8_lossy(line));
            assert_eq!(
                general.request.as_ref().map_err(|e| e.code),
                both.request.as_ref().map_err(|e| e.code),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn request_encoding_round_trips() {
        let r = Request::History {
            limit: Some(3),
            before_seq: None,
        };
        let line = encode_request(9, &r);
        let d = decode_request(&line[..line.len() - 1]);
        assert_eq!(d.id, Some(9));
        assert_eq!(d.request, Ok(r));
    }

    #[test]
    fn error_codes_round_trip() {
        for code in [
            ErrorCode::NotRegistered,
            ErrorCode::TooLarge,
            ErrorCode::SelfPayment,
        ] {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }
}
