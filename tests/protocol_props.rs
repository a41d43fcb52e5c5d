//! Property tests on the protocol core: no sockets, no clock, no ledger.
//!
//! - Any byte string, and any JSON-ish line built from a grammar of the
//!   protocol's own keys and values, given to `decode_request` yields a
//!   request or a `bad_request` error, never a panic; whatever it accepts
//!   re-encodes to the same request.
//! - `Reply::decode` never panics.
//! - Canonical bytes round-trip through a decoder written here from the
//!   layout in `docs/PROTOCOL.md` §4.2 and §5 (so the encoder is injective
//!   and matches the document), and moving bytes between adjacent
//!   variable-length fields always changes them.
//! - A payment or receipt signature never verifies once any single field
//!   (or the signature itself) changes, for Ed25519 and ECDSA P-256 keys.
//! - The JSON forms of payments and receipts round-trip, and
//!   `SignedPayment::try_from` accepts exactly the documented valid set.
//!
//! Case counts are modest (256, or 1024 for the cheap decoders) so the
//! file runs in a few seconds in release.

use std::sync::OnceLock;

use micropay::core::keys::{SigningKey, SIGNATURE_BYTES_MAX};
use micropay::core::limits::MEMO_BYTES_MAX;
use micropay::core::name::Name;
use micropay::core::payment::{
    content_hash, Payment, PaymentId, Receipt, SignedPayment, SignedReceipt, PAYMENT_TAG,
    RECEIPT_TAG,
};
use micropay::wire::{
    decode_request, encode_request, Balance, ErrorCode, PaymentJson, PeerRequest, ReceiptJson,
    Reply, ServerRequest, WireError,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---------------------------------------------------------------------------
// A decoder for the canonical layouts, written from docs/PROTOCOL.md alone.
// ---------------------------------------------------------------------------

/// Reads the big-endian, length-prefixed fields of §4.2 and §5.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!("wanted {n} bytes, {} left", self.rest.len()));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    /// One length byte, then that many bytes.
    fn short(&mut self) -> Result<&'a [u8], String> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    fn name(&mut self) -> Result<Name, String> {
        let raw = self.short()?;
        let s = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
        Name::parse(s).map_err(|e| e.to_string())
    }

    fn tag(&mut self, expected: &[u8]) -> Result<(), String> {
        // Row 1: the tag's length is 0x13; row 2: the ASCII tag.
        if self.u8()? != 0x13 {
            return Err("the tag length is not 0x13".into());
        }
        let tag = self.take(19)?;
        if tag != expected {
            return Err(format!("wrong tag {:?}", String::from_utf8_lossy(tag)));
        }
        Ok(())
    }

    fn end(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.rest.len()))
        }
    }
}

/// docs/PROTOCOL.md §4.2, row by row.
fn decode_payment_canonical(bytes: &[u8]) -> Result<Payment, String> {
    let mut r = Reader { rest: bytes };
    r.tag(b"micropay/payment/v1")?;
    let id = PaymentId(r.array::<16>()?);
    let payer = r.name()?;
    let payee = r.name()?;
    let amount_minor = r.u64()?;
    let expires_at_s = r.u64()?;
    let memo_len = usize::from(r.u16()?);
    let memo = String::from_utf8(r.take(memo_len)?.to_vec()).map_err(|e| e.to_string())?;
    r.end()?;
    Ok(Payment {
        id,
        payer,
        payee,
        amount_minor,
        expires_at_s,
        memo,
    })
}

/// docs/PROTOCOL.md §5, row by row.
fn decode_receipt_canonical(bytes: &[u8]) -> Result<Receipt, String> {
    let mut r = Reader { rest: bytes };
    r.tag(b"micropay/receipt/v1")?;
    let payment_id = PaymentId(r.array::<16>()?);
    let payer = r.name()?;
    let payee = r.name()?;
    let amount_minor = r.u64()?;
    let seq = r.u64()?;
    let settled_at_ms = r.u64()?;
    let payment_hash = r.array::<32>()?;
    r.end()?;
    Ok(Receipt {
        payment_id,
        payer,
        payee,
        amount_minor,
        seq,
        settled_at_ms,
        payment_hash,
    })
}

// ---------------------------------------------------------------------------
// Strategies for valid values.
// ---------------------------------------------------------------------------

const NAME_REGEX: &str = "[a-z0-9][a-z0-9-]{0,31}";

/// The person-name rule of docs/PROTOCOL.md §1, stated here rather than
/// borrowed from `micropay::core::name`: the regex, and a valid TLS server name,
/// so not ending in `-` and not looking like a number (all digits, or
/// `0x` and hex digits).
fn is_person_name(s: &str) -> bool {
    let b = s.as_bytes();
    let grammar = !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    let all_digits = b.iter().all(u8::is_ascii_digit);
    let hex_number = s
        .strip_prefix("0x")
        .is_some_and(|rest| rest.bytes().all(|c| c.is_ascii_hexdigit()));
    grammar && !s.ends_with('-') && !all_digits && !hex_number
}

/// Names from the regex, kept when they are also TLS server names.
fn name_string() -> impl Strategy<Value = String> {
    NAME_REGEX.prop_filter("a TLS server name", |s| is_person_name(s))
}

fn name() -> impl Strategy<Value = Name> {
    name_string().prop_map(|s| Name::parse(&s).expect("the documented rule is the name rule"))
}

/// Two different names.
fn two_names() -> impl Strategy<Value = (Name, Name)> {
    (name(), name()).prop_filter("payer and payee differ", |(a, b)| a != b)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut_to_bytes(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

/// A memo of at most `max` bytes of UTF-8: any characters (control,
/// multi-byte, NUL), printable ASCII, or the multi-byte edge cases.
fn memo_up_to(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter),
        1 => "[ -~]{0,200}",
        1 => "[é€😀\u{0}\u{7f}\u{ffff}a]{0,80}",
    ]
    .prop_map(move |s| cut_to_bytes(s, max))
}

fn memo() -> impl Strategy<Value = String> {
    memo_up_to(MEMO_BYTES_MAX)
}

/// A payment that passes `check_fields`.
fn payment() -> impl Strategy<Value = Payment> {
    (
        any::<[u8; 16]>(),
        two_names(),
        1..=u64::MAX,
        any::<u64>(),
        memo(),
    )
        .prop_map(
            |(id, (payer, payee), amount_minor, expires_at_s, memo)| Payment {
                id: PaymentId(id),
                payer,
                payee,
                amount_minor,
                expires_at_s,
                memo,
            },
        )
}

fn receipt() -> impl Strategy<Value = Receipt> {
    (
        any::<[u8; 16]>(),
        two_names(),
        1..=u64::MAX,
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(id, (payer, payee), amount_minor, seq, settled_at_ms, payment_hash)| Receipt {
                payment_id: PaymentId(id),
                payer,
                payee,
                amount_minor,
                seq,
                settled_at_ms,
                payment_hash,
            },
        )
}

/// The two key types micropay accepts. Ed25519 keys come from a seed;
/// the P-256 key is generated once (ECDSA signing is randomized, so a
/// fixed key is enough to exercise verification).
#[derive(Debug, Clone, Copy)]
enum KeyChoice {
    Ed25519([u8; 32]),
    P256,
}

fn p256_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .expect("P-256 key generation");
        SigningKey::from_pkcs8_der(pkcs8.as_ref()).expect("a fresh PKCS#8 key parses")
    })
}

fn key_choice() -> impl Strategy<Value = KeyChoice> {
    prop_oneof![
        3 => any::<[u8; 32]>().prop_map(KeyChoice::Ed25519),
        1 => Just(KeyChoice::P256),
    ]
}

fn with_key<T>(choice: KeyChoice, f: impl FnOnce(&SigningKey) -> T) -> T {
    match choice {
        KeyChoice::Ed25519(seed) => f(&SigningKey::ed25519_from_seed(&seed)),
        KeyChoice::P256 => f(p256_key()),
    }
}

// ---------------------------------------------------------------------------
// Single-field changes.
// ---------------------------------------------------------------------------

/// A name that differs from `old` (the replacement itself when it does).
fn other_name(old: &Name, new: Name) -> Name {
    if &new != old {
        return new;
    }
    // Ending in a letter beyond `f` keeps it a name: not `-`, not a number.
    let mut s = old.as_str().to_owned();
    let last = s.pop().expect("names are never empty");
    s.push(if last == 'z' { 'y' } else { 'z' });
    Name::parse(&s).expect("still a name")
}

fn other_u64(old: u64, new: u64) -> u64 {
    if new != old {
        new
    } else {
        old ^ 1
    }
}

/// An amount ≥ 1 that differs from `old`.
fn other_amount(old: u64, new: u64) -> u64 {
    if new != old {
        new
    } else if old == u64::MAX {
        1
    } else {
        old + 1
    }
}

#[derive(Debug, Clone)]
enum PaymentChange {
    IdBit(usize),
    Payer(Name),
    Payee(Name),
    Amount(u64),
    ExpiresAt(u64),
    Memo(String),
    SwapPayerPayee,
    SignatureBit(usize),
}

fn payment_change() -> impl Strategy<Value = PaymentChange> {
    prop_oneof![
        (0..128usize).prop_map(PaymentChange::IdBit),
        name().prop_map(PaymentChange::Payer),
        name().prop_map(PaymentChange::Payee),
        (1..=u64::MAX).prop_map(PaymentChange::Amount),
        any::<u64>().prop_map(PaymentChange::ExpiresAt),
        memo().prop_map(PaymentChange::Memo),
        Just(PaymentChange::SwapPayerPayee),
        (0..SIGNATURE_BYTES_MAX * 8).prop_map(PaymentChange::SignatureBit),
    ]
}

/// Applies `change` so that the result is guaranteed to differ from `s`.
fn apply_payment_change(s: &SignedPayment, change: &PaymentChange) -> SignedPayment {
    let mut c = s.clone();
    let p = &mut c.payment;
    match change {
        PaymentChange::IdBit(bit) => p.id.0[bit / 8] ^= 1 << (bit % 8),
        PaymentChange::Payer(n) => p.payer = other_name(&p.payer, n.clone()),
        PaymentChange::Payee(n) => p.payee = other_name(&p.payee, n.clone()),
        PaymentChange::Amount(a) => p.amount_minor = other_amount(p.amount_minor, *a),
        PaymentChange::ExpiresAt(t) => p.expires_at_s = other_u64(p.expires_at_s, *t),
        PaymentChange::Memo(m) => {
            if *m != p.memo {
                p.memo = m.clone();
            } else if p.memo.is_empty() {
                p.memo.push('x');
            } else {
                p.memo.pop();
            }
        }
        PaymentChange::SwapPayerPayee => std::mem::swap(&mut p.payer, &mut p.payee),
        PaymentChange::SignatureBit(bit) => {
            let bit = bit % (c.signature.len() * 8);
            c.signature[bit / 8] ^= 1 << (bit % 8);
        }
    }
    c
}

#[derive(Debug, Clone)]
enum ReceiptChange {
    IdBit(usize),
    Payer(Name),
    Payee(Name),
    Amount(u64),
    Seq(u64),
    SettledAt(u64),
    HashBit(usize),
    SignatureBit(usize),
}

fn receipt_change() -> impl Strategy<Value = ReceiptChange> {
    prop_oneof![
        (0..128usize).prop_map(ReceiptChange::IdBit),
        name().prop_map(ReceiptChange::Payer),
        name().prop_map(ReceiptChange::Payee),
        (1..=u64::MAX).prop_map(ReceiptChange::Amount),
        any::<u64>().prop_map(ReceiptChange::Seq),
        any::<u64>().prop_map(ReceiptChange::SettledAt),
        (0..256usize).prop_map(ReceiptChange::HashBit),
        (0..SIGNATURE_BYTES_MAX * 8).prop_map(ReceiptChange::SignatureBit),
    ]
}

fn apply_receipt_change(s: &SignedReceipt, change: &ReceiptChange) -> SignedReceipt {
    let mut c = s.clone();
    let r = &mut c.receipt;
    match change {
        ReceiptChange::IdBit(bit) => r.payment_id.0[bit / 8] ^= 1 << (bit % 8),
        ReceiptChange::Payer(n) => r.payer = other_name(&r.payer, n.clone()),
        ReceiptChange::Payee(n) => r.payee = other_name(&r.payee, n.clone()),
        ReceiptChange::Amount(a) => r.amount_minor = other_amount(r.amount_minor, *a),
        ReceiptChange::Seq(n) => r.seq = other_u64(r.seq, *n),
        ReceiptChange::SettledAt(t) => r.settled_at_ms = other_u64(r.settled_at_ms, *t),
        ReceiptChange::HashBit(bit) => r.payment_hash[bit / 8] ^= 1 << (bit % 8),
        ReceiptChange::SignatureBit(bit) => {
            let bit = bit % (c.signature.len() * 8);
            c.signature[bit / 8] ^= 1 << (bit % 8);
        }
    }
    c
}

// ---------------------------------------------------------------------------
// A grammar of JSON-ish request and reply lines.
// ---------------------------------------------------------------------------

const OPS: &[&str] = &[
    "register", "online", "offline", "list", "locate", "balance", "history", "status", "settle",
    "pay", "fly", "", "Register", "settle ",
];

const REQUEST_KEYS: &[&str] = &[
    "id",
    "op",
    "payment",
    "port",
    "address",
    "name",
    "limit",
    "before_seq",
    "payment_id",
    "extra",
    "",
    "ID",
];

const PAYMENT_KEYS: &[&str] = &[
    "id",
    "payer",
    "payee",
    "amount",
    "expires_at",
    "memo",
    "signature",
];

const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::NotRegistered,
    ErrorCode::AlreadyRegistered,
    ErrorCode::KeyMismatch,
    ErrorCode::BadSignature,
    ErrorCode::InsufficientFunds,
    ErrorCode::Expired,
    ErrorCode::Conflict,
    ErrorCode::UnknownPayee,
    ErrorCode::UnknownPayer,
    ErrorCode::PayeeOffline,
    ErrorCode::SelfPayment,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::CertificateExpired,
    ErrorCode::BadRequest,
    ErrorCode::TooLarge,
    ErrorCode::Busy,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// A JSON string literal: escaped properly, or (rarely) raw text between
/// quotes, which may itself be invalid JSON.
fn json_string(inner: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    inner.prop_flat_map(|s| {
        let escaped = serde_json::to_string(&s).expect("strings serialize");
        let raw = format!("\"{s}\"");
        let unicode = format!("\"{}\"", s.escape_unicode());
        prop_oneof![38 => Just(escaped), 1 => Just(raw), 1 => Just(unicode)]
    })
}

/// Number literals, including those the protocol must refuse.
fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<u64>().prop_map(|n| n.to_string()),
        2 => (0u64..70_000).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => select(&[
            "0", "-0", "1", "-1", "1.0", "1.5", "1e3", "1E400", "-1e-400",
            "18446744073709551615", "18446744073709551616", "99999999999999999999999",
            "65535", "65536", "0x10", "01", "+1", "NaN", "Infinity", ".5",
        ][..])
        .prop_map(str::to_owned),
    ]
}

/// Leaves of the JSON grammar.
fn json_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("null".to_owned()),
        1 => Just("true".to_owned()),
        1 => Just("false".to_owned()),
        3 => json_number(),
        3 => json_string(prop_oneof![
            select(OPS).prop_map(str::to_owned),
            name_string(),
            "[0-9a-fA-F]{0,40}",
            any::<String>(),
        ]),
    ]
}

fn render_object(entries: &[(String, String)]) -> String {
    let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// Any JSON value, nested a few levels, with the protocol's keys.
fn json_value() -> impl Strategy<Value = String> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        let key = json_string(prop_oneof![
            select(REQUEST_KEYS).prop_map(str::to_owned),
            select(PAYMENT_KEYS).prop_map(str::to_owned),
            any::<String>(),
        ]);
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            proptest::collection::vec((key, inner), 0..6)
                .prop_map(|entries| render_object(&entries)),
        ]
    })
}

/// A value for a payment field: mostly plausible, sometimes not.
fn payment_field_value(key: &'static str) -> BoxedStrategy<String> {
    let plausible: BoxedStrategy<String> = match key {
        "id" => json_string("[0-9a-f]{32}").boxed(),
        "payer" | "payee" => json_string(prop_oneof![
            4 => select(&["alice", "bob", "carol", "dave", "0", "x-1"][..]).prop_map(str::to_owned),
            1 => name_string(),
            1 => "[a-zA-Z0-9_-]{0,34}",
        ])
        .boxed(),
        "amount" => prop_oneof![
            4 => (1..=u64::MAX).prop_map(|n| n.to_string()),
            1 => json_number(),
        ]
        .boxed(),
        "expires_at" => prop_oneof![
            4 => any::<u64>().prop_map(|n| n.to_string()),
            1 => json_number(),
        ]
        .boxed(),
        "memo" => json_string(prop_oneof![
            4 => memo(),
            1 => memo_up_to(MEMO_BYTES_MAX + 20),
        ])
        .boxed(),
        "signature" => json_string(prop_oneof![
            4 => "([0-9a-f]{2}){64}",
            1 => "[0-9a-fA-F]{0,160}",
        ])
        .boxed(),
        _ => json_leaf().boxed(),
    };
    prop_oneof![19 => plausible, 1 => json_value()].boxed()
}

/// A `payment` object: each field present with high probability, in any
/// order, sometimes with an extra key.
fn payment_object() -> impl Strategy<Value = String> {
    let fields: Vec<BoxedStrategy<Option<(String, String)>>> = PAYMENT_KEYS
        .iter()
        .map(|&k| {
            proptest::option::weighted(
                0.97,
                payment_field_value(k).prop_map(move |v| (format!("\"{k}\""), v)),
            )
            .boxed()
        })
        .collect();
    let extra = proptest::option::weighted(0.05, (json_string(any::<String>()), json_leaf()));
    (fields, extra)
        .prop_flat_map(|(fields, extra)| {
            let mut entries: Vec<(String, String)> = fields.into_iter().flatten().collect();
            entries.extend(extra);
            Just(entries).prop_shuffle()
        })
        .prop_map(|entries| render_object(&entries))
}

/// A value for a top-level request field.
fn request_field_value(key: &'static str) -> BoxedStrategy<String> {
    let plausible: BoxedStrategy<String> = match key {
        "id" => prop_oneof![
            6 => any::<u64>().prop_map(|n| n.to_string()),
            1 => Just("null".to_owned()),
            1 => json_number(),
        ]
        .boxed(),
        "op" => json_string(
            prop_oneof![
                1 => select(&["settle", "pay"][..]),
                2 => select(OPS),
            ]
            .prop_map(str::to_owned),
        )
        .boxed(),
        "payment" => payment_object().boxed(),
        "port" => (0u32..70_000).prop_map(|n| n.to_string()).boxed(),
        "address" => json_string(prop_oneof!["[0-9.]{0,15}", "[a-z.-]{0,20}"]).boxed(),
        "name" => json_string(name_string()).boxed(),
        "limit" => (0u32..600).prop_map(|n| n.to_string()).boxed(),
        "before_seq" => any::<u64>().prop_map(|n| n.to_string()).boxed(),
        "payment_id" => json_string("[0-9a-f]{32}").boxed(),
        _ => json_leaf().boxed(),
    };
    prop_oneof![12 => plausible, 1 => json_value()].boxed()
}

/// A request line: an object with "id", "op", "payment" and op fields,
/// each present or not, in any order; then, rarely, damaged.
fn request_line() -> impl Strategy<Value = Vec<u8>> {
    let id = proptest::option::weighted(0.85, request_field_value("id"));
    let op = proptest::option::weighted(0.95, request_field_value("op"));
    let payment = proptest::option::weighted(0.6, request_field_value("payment"));
    let field = select(&REQUEST_KEYS[3..])
        .prop_flat_map(|k| request_field_value(k).prop_map(move |v| (format!("\"{k}\""), v)));
    let others = prop_oneof![
        2 => Just(Vec::new()),
        1 => proptest::collection::vec(field, 1..3),
    ];
    (id, op, payment, others)
        .prop_flat_map(|(id, op, payment, others)| {
            let mut entries = Vec::new();
            entries.extend(id.map(|v| ("\"id\"".to_owned(), v)));
            entries.extend(op.map(|v| ("\"op\"".to_owned(), v)));
            entries.extend(payment.map(|v| ("\"payment\"".to_owned(), v)));
            entries.extend(others);
            Just(entries).prop_shuffle()
        })
        .prop_map(|entries| render_object(&entries).into_bytes())
        .prop_flat_map(damage)
}

/// Leaves a line alone most of the time; otherwise truncates it, inserts
/// a byte, pads it with whitespace or wraps it in an array.
fn damage(line: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = line.len();
    let truncated = {
        let line = line.clone();
        (0..=len).prop_map(move |at| line[..at].to_vec())
    };
    let inserted = {
        let line = line.clone();
        (0..=len, any::<u8>()).prop_map(move |(at, b)| {
            let mut l = line.clone();
            l.insert(at, b);
            l
        })
    };
    let padded = {
        let line = line.clone();
        "[ \t\r\n]{0,3}".prop_map(move |ws| [ws.as_bytes(), &line, ws.as_bytes()].concat())
    };
    let wrapped = {
        let line = line.clone();
        Just([b"[".as_slice(), &line, b"]"].concat())
    };
    prop_oneof![
        16 => Just(line),
        1 => truncated,
        1 => inserted,
        1 => padded,
        1 => wrapped,
    ]
}

/// A reply line from a grammar of the reply's keys.
fn reply_line() -> impl Strategy<Value = Vec<u8>> {
    let code = json_string(prop_oneof![
        4 => select(ERROR_CODES).prop_map(|c| c.as_str().to_owned()),
        1 => any::<String>(),
    ]);
    let error = (
        proptest::option::weighted(0.9, code),
        proptest::option::weighted(0.9, json_string(any::<String>())),
        proptest::option::weighted(0.05, json_leaf()),
    )
        .prop_map(|(code, message, extra)| {
            let mut e = Vec::new();
            e.extend(code.map(|v| ("\"code\"".to_owned(), v)));
            e.extend(message.map(|v| ("\"message\"".to_owned(), v)));
            e.extend(extra.map(|v| ("\"extra\"".to_owned(), v)));
            render_object(&e)
        });
    let entries = (
        proptest::option::weighted(0.9, request_field_value("id")),
        proptest::option::weighted(0.9, select(&["true", "false", "1", "null"][..])),
        proptest::option::weighted(0.5, json_value()),
        proptest::option::weighted(0.5, prop_oneof![4 => error, 1 => json_value()]),
    );
    entries
        .prop_flat_map(|(id, ok, result, error)| {
            let mut e = Vec::new();
            e.extend(id.map(|v| ("\"id\"".to_owned(), v)));
            e.extend(ok.map(|v| ("\"ok\"".to_owned(), v.to_owned())));
            e.extend(result.map(|v| ("\"result\"".to_owned(), v)));
            e.extend(error.map(|v| ("\"error\"".to_owned(), v)));
            Just(e).prop_shuffle()
        })
        .prop_map(|e| render_object(&e).into_bytes())
        .prop_flat_map(damage)
}

/// Valid requests of every op, for the encode → decode round trip.
/// A request for the server or for a peer listener.
#[derive(Debug, Clone)]
enum AnyRequest {
    Server(ServerRequest),
    Peer(PeerRequest),
}

fn request() -> impl Strategy<Value = AnyRequest> {
    prop_oneof![
        9 => server_request().prop_map(AnyRequest::Server),
        1 => peer_request().prop_map(AnyRequest::Peer),
    ]
}

fn signed_for_request() -> impl Strategy<Value = SignedPayment> {
    (
        payment(),
        proptest::collection::vec(any::<u8>(), 0..=SIGNATURE_BYTES_MAX),
    )
        .prop_map(|(payment, signature)| SignedPayment { payment, signature })
}

fn peer_request() -> impl Strategy<Value = PeerRequest> {
    signed_for_request().prop_map(|s| PeerRequest::Pay {
        payment: PaymentJson::from(&s),
    })
}

fn server_request() -> impl Strategy<Value = ServerRequest> {
    let signed = signed_for_request;
    prop_oneof![
        Just(ServerRequest::Register {}),
        (any::<u16>(), proptest::option::of("[a-z0-9.:-]{0,40}"))
            .prop_map(|(port, address)| ServerRequest::Online { port, address }),
        Just(ServerRequest::Offline {}),
        Just(ServerRequest::List {}),
        any::<String>().prop_map(|name| ServerRequest::Locate { name }),
        Just(ServerRequest::Balance {}),
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(limit, before_seq)| ServerRequest::History { limit, before_seq }),
        any::<String>().prop_map(|payment_id| ServerRequest::Status { payment_id }),
        signed().prop_map(|s| ServerRequest::Settle {
            payment: PaymentJson::from(&s)
        }),
    ]
}

// ---------------------------------------------------------------------------
// Checks shared by the decoder properties.
// ---------------------------------------------------------------------------

/// What `decode_request` must do with any line: a request or
/// `bad_request`; an accepted request survives encode → decode; an
/// accepted payment has canonical bytes that decode back to it.
fn check_decoded_line(line: &[u8]) -> Result<(), TestCaseError> {
    check_decoded_as::<ServerRequest>(line, |r| match r {
        ServerRequest::Settle { payment } => Some(payment),
        _ => None,
    })?;
    check_decoded_as::<PeerRequest>(line, |r| match r {
        PeerRequest::Pay { payment } => Some(payment),
        _ => None,
    })
}

/// [`check_decoded_line`] for one request type.
fn check_decoded_as<R>(
    line: &[u8],
    payment_of: impl Fn(&R) -> Option<&PaymentJson>,
) -> Result<(), TestCaseError>
where
    R: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let decoded = decode_request::<R>(line);
    match decoded.request {
        Err(e) => prop_assert_eq!(e.code, ErrorCode::BadRequest, "{}", e),
        Ok(request) => {
            let again = encode_request(decoded.id.unwrap_or(0), &request);
            prop_assert_eq!(again.last(), Some(&b'\n'));
            let redecoded = decode_request::<R>(&again[..again.len() - 1]);
            prop_assert_eq!(redecoded.id, Some(decoded.id.unwrap_or(0)));
            prop_assert_eq!(redecoded.request.as_ref(), Ok(&request));
            if let Some(payment) = payment_of(&request) {
                check_payment_json(payment)?;
            }
        }
    }
    Ok(())
}

/// Whatever `SignedPayment::try_from` makes of a decoded payment: an
/// error with a documented code, or a payment whose canonical bytes
/// decode back to it and whose JSON form converts back to it.
fn check_payment_json(j: &PaymentJson) -> Result<(), TestCaseError> {
    match SignedPayment::try_from(j) {
        Err(e) => prop_assert!(
            matches!(e.code, ErrorCode::BadRequest | ErrorCode::SelfPayment),
            "unexpected code {}",
            e
        ),
        Ok(signed) => {
            let bytes = signed.payment.canonical_bytes();
            prop_assert_eq!(decode_payment_canonical(&bytes), Ok(signed.payment.clone()));
            let back = PaymentJson::from(&signed);
            prop_assert_eq!(SignedPayment::try_from(&back), Ok(signed));
        }
    }
    Ok(())
}

/// The documented validity of a payment's JSON form, stated independently
/// of the implementation: which lines `try_from` must accept.
fn json_is_valid(j: &PaymentJson) -> bool {
    let lower_hex = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
    let hex_id = j.id.len() == 32 && j.id.bytes().all(lower_hex);
    let is_name = is_person_name;
    let hex_sig = j.signature.len().is_multiple_of(2)
        && j.signature.len() <= 2 * SIGNATURE_BYTES_MAX
        && j.signature.bytes().all(lower_hex);
    hex_id
        && is_name(&j.payer)
        && is_name(&j.payee)
        && j.payer != j.payee
        && j.amount >= 1
        && j.memo.len() <= MEMO_BYTES_MAX
        && hex_sig
}

// ---------------------------------------------------------------------------
// The properties.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Raw bytes never panic the request decoder.
    #[test]
    fn decode_request_takes_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_decoded_line(&line)?;
    }

    /// Lines from the request grammar (past the JSON parser, into the
    /// request and payment checks) never panic the decoder either.
    #[test]
    fn decode_request_takes_any_json_ish_line(line in request_line()) {
        check_decoded_line(&line)?;
    }

    /// The decoder's fast path (for `{"id":N,...}` lines) gives exactly
    /// what the general path gives, ids and error codes included.
    #[test]
    fn fast_and_general_decoding_agree(line in request_line()) {
        let general = micropay::wire::decode_request_general::<ServerRequest>(&line);
        let decoded = micropay::wire::decode_request::<ServerRequest>(&line);
        prop_assert_eq!(general.id, decoded.id);
        prop_assert_eq!(
            general.request.map_err(|e| e.code),
            decoded.request.map_err(|e| e.code)
        );
        let general = micropay::wire::decode_request_general::<PeerRequest>(&line);
        let decoded = micropay::wire::decode_request::<PeerRequest>(&line);
        prop_assert_eq!(general.id, decoded.id);
        prop_assert_eq!(
            general.request.map_err(|e| e.code),
            decoded.request.map_err(|e| e.code)
        );
    }

    /// Replies: raw bytes and grammar lines never panic `Reply::decode`,
    /// and `into_result` on whatever it accepts never panics.
    #[test]
    fn reply_decode_takes_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(reply) = Reply::decode(&line) {
            let _ = reply.into_result::<serde_json::Value>();
        }
    }

    #[test]
    fn reply_decode_takes_any_json_ish_line(line in reply_line()) {
        match Reply::decode(&line) {
            Err(e) => prop_assert_eq!(e.code, ErrorCode::BadRequest),
            Ok(reply) => {
                let ok = reply.ok;
                match reply.into_result::<serde_json::Value>() {
                    Ok(_) => prop_assert!(ok),
                    Err(e) => prop_assert!(!ok || e.code == ErrorCode::BadRequest),
                }
            }
        }
    }

    /// Every error code parses back from its wire form; nothing else panics.
    #[test]
    fn error_codes_parse(s in any::<String>()) {
        for &code in ERROR_CODES {
            prop_assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        if let Some(code) = ErrorCode::parse(&s) {
            prop_assert_eq!(code.as_str(), s.as_str());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every valid request, encoded, decodes to itself with its id.
    #[test]
    fn requests_round_trip(id in any::<u64>(), request in request()) {
        let line = match &request {
            AnyRequest::Server(r) => encode_request(id, r),
            AnyRequest::Peer(r) => encode_request(id, r),
        };
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let line = &line[..line.len() - 1];
        match request {
            AnyRequest::Server(r) => {
                let decoded = decode_request::<ServerRequest>(line);
                prop_assert_eq!(decoded.id, Some(id));
                prop_assert_eq!(decoded.request, Ok(r));
            }
            AnyRequest::Peer(r) => {
                let decoded = decode_request::<PeerRequest>(line);
                prop_assert_eq!(decoded.id, Some(id));
                prop_assert_eq!(decoded.request, Ok(r));
            }
        }
    }

    /// Replies round-trip, success and error alike.
    #[test]
    fn replies_round_trip(
        id in proptest::option::of(any::<u64>()),
        balance in (name_string(), any::<u64>()),
        code in select(ERROR_CODES),
        message in any::<String>(),
        ok in any::<bool>(),
    ) {
        let outcome = if ok {
            Ok(Balance { name: balance.0, balance: balance.1, held: 0 })
        } else {
            Err(WireError::new(code, message))
        };
        let line = Reply::encode(id, &outcome);
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let reply = Reply::decode(&line[..line.len() - 1]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(reply.id, id);
        prop_assert_eq!(reply.into_result::<Balance>(), outcome);
    }

    /// decode(encode(p)) == p for the §4.2 layout; the length is exactly
    /// what the table says. Round-tripping makes the encoding injective.
    #[test]
    fn payment_canonical_bytes_round_trip(p in payment()) {
        prop_assert!(p.check_fields().is_ok());
        let bytes = p.canonical_bytes();
        prop_assert_eq!(
            bytes.len(),
            1 + 19 + 16 + 1 + p.payer.as_str().len() + 1 + p.payee.as_str().len() + 8 + 8 + 2 + p.memo.len()
        );
        prop_assert_eq!(&bytes[1..20], PAYMENT_TAG);
        prop_assert_eq!(decode_payment_canonical(&bytes), Ok(p));
    }

    /// Two different payments never share canonical bytes (nor content
    /// hashes), including a payment and any single-field change of it.
    #[test]
    fn payment_canonical_bytes_are_injective(
        p in payment(),
        q in payment(),
        change in payment_change(),
    ) {
        let s = SignedPayment { payment: p.clone(), signature: vec![0; 64] };
        let changed = apply_payment_change(&s, &change).payment;
        for other in [q, changed] {
            if other != p {
                prop_assert_ne!(p.canonical_bytes(), other.canonical_bytes());
                prop_assert_ne!(content_hash(&p.canonical_bytes()), content_hash(&other.canonical_bytes()));
            }
        }
    }

    /// Moving the boundary between payer and payee (or between payee and
    /// the rest) changes the bytes: the length prefixes are explicit.
    #[test]
    fn field_boundaries_are_unambiguous(
        joined in "[a-z][a-z0-9]{0,30}[g-wyz]",
        cut in (1usize..32, 1usize..32),
        base in payment(),
    ) {
        let (a, b) = cut;
        let a = 1 + a % (joined.len() - 1);
        let b = 1 + b % (joined.len() - 1);
        prop_assume!(a != b);
        let split = |at: usize| {
            let mut p = base.clone();
            p.payer = Name::parse(&joined[..at]).ok()?;
            p.payee = Name::parse(&joined[at..]).ok()?;
            Some(p)
        };
        // Pieces that are not names (all digits, say) cannot be signed at all.
        let (Some(first), Some(second)) = (split(a), split(b)) else {
            return Err(TestCaseError::reject("a piece is not a name"));
        };
        prop_assert_ne!(first.canonical_bytes(), second.canonical_bytes());
    }

    /// A signature verifies for its payment and never once any single
    /// field (or the signature) changes; never with another key either.
    #[test]
    fn payment_signature_fails_for_any_changed_field(
        p in payment(),
        key in key_choice(),
        change in payment_change(),
        other_seed in any::<[u8; 32]>(),
    ) {
        with_key(key, |key| {
            let signed = p.sign(key);
            prop_assert!(signed.signature.len() <= SIGNATURE_BYTES_MAX);
            prop_assert!(signed.verify(key.verifying_key()).is_ok());
            let changed = apply_payment_change(&signed, &change);
            prop_assert_ne!(&changed, &signed);
            prop_assert!(changed.verify(key.verifying_key()).is_err(), "{:?} still verifies", change);
            let stranger = SigningKey::ed25519_from_seed(&other_seed);
            if stranger.verifying_key() != key.verifying_key() {
                prop_assert!(signed.verify(stranger.verifying_key()).is_err());
            }
            Ok(())
        })?;
    }

    /// PaymentJson → SignedPayment → PaymentJson is the identity on valid
    /// input (lowercase hex, as the protocol writes it), through the JSON
    /// text and a whole request line as well.
    #[test]
    fn payment_json_round_trips(
        id in "[0-9a-f]{32}",
        names in two_names(),
        amount in 1..=u64::MAX,
        expires_at in any::<u64>(),
        memo in memo(),
        signature in proptest::collection::vec(any::<u8>(), 0..=SIGNATURE_BYTES_MAX),
        wire_id in any::<u64>(),
    ) {
        let j = PaymentJson {
            id,
            payer: names.0.to_string(),
            payee: names.1.to_string(),
            amount,
            expires_at,
            memo,
            signature: hex::encode(&signature),
        };
        let signed = SignedPayment::try_from(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&signed.signature, &signature);
        prop_assert_eq!(&PaymentJson::from(&signed), &j);
        let text = serde_json::to_string(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed: PaymentJson = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed, &j);
        let line = encode_request(wire_id, &ServerRequest::Settle { payment: j.clone() });
        let decoded = decode_request::<ServerRequest>(&line[..line.len() - 1]);
        prop_assert_eq!(decoded.request, Ok(ServerRequest::Settle { payment: j }));
    }

    /// Hex on the wire has one spelling, lowercase: an id or signature
    /// with an uppercase digit is `bad_request`, so a payer comparing the
    /// ids of its payment and its receipt never sees two spellings.
    #[test]
    fn payment_json_refuses_uppercase_hex(p in payment(), signature in proptest::collection::vec(any::<u8>(), 1..=SIGNATURE_BYTES_MAX), in_id in any::<bool>()) {
        let signed = SignedPayment { payment: p, signature };
        let mut j = PaymentJson::from(&signed);
        let field = if in_id { &mut j.id } else { &mut j.signature };
        let Some(at) = field.find(|c: char| c.is_ascii_alphabetic()) else {
            return Ok(());
        };
        field.replace_range(at..=at, &field[at..=at].to_uppercase());
        let e = SignedPayment::try_from(&j).err().ok_or_else(|| TestCaseError::fail("uppercase accepted"))?;
        prop_assert_eq!(e.code, ErrorCode::BadRequest);
    }

    /// `try_from` accepts exactly the documented valid set and refuses the
    /// rest with `bad_request` (or `self_payment`), never panicking.
    #[test]
    fn payment_json_accepts_exactly_the_valid_set(
        id in prop_oneof!["[0-9a-fA-F]{32}", "[0-9a-gA-G]{30,34}", any::<String>()],
        payer in prop_oneof![
            3 => name_string(),
            1 => "[a-zA-Z0-9_.-]{0,34}",
            1 => "[0-9x-]{1,4}|0x[0-9a-fg]{0,3}",
            1 => any::<String>(),
        ],
        payee in prop_oneof![
            3 => name_string(),
            1 => Just("alice".to_owned()),
            1 => "[0-9x-]{1,4}|0x[0-9a-fg]{0,3}",
            1 => any::<String>(),
        ],
        amount in prop_oneof![4 => 1..=u64::MAX, 1 => Just(0u64)],
        expires_at in any::<u64>(),
        memo in prop_oneof![4 => memo(), 1 => memo_up_to(MEMO_BYTES_MAX + 40)],
        signature in prop_oneof!["([0-9a-f]{2}){0,72}", "[0-9a-fA-F]{0,150}", any::<String>()],
    ) {
        let j = PaymentJson { id, payer, payee, amount, expires_at, memo, signature };
        let valid = json_is_valid(&j);
        match SignedPayment::try_from(&j) {
            Ok(signed) => {
                prop_assert!(valid, "accepted an invalid payment: {:?}", j);
                prop_assert_eq!(decode_payment_canonical(&signed.payment.canonical_bytes()), Ok(signed.payment));
            }
            Err(e) => {
                prop_assert!(!valid, "refused a valid payment ({}): {:?}", e, j);
                let expected = if j.payer == j.payee { ErrorCode::SelfPayment } else { ErrorCode::BadRequest };
                prop_assert!(e.code == ErrorCode::BadRequest || e.code == expected, "{}", e);
            }
        }
    }

    /// decode(encode(r)) == r for the §5 layout.
    #[test]
    fn receipt_canonical_bytes_round_trip(r in receipt(), q in receipt()) {
        let bytes = r.canonical_bytes();
        prop_assert_eq!(
            bytes.len(),
            1 + 19 + 16 + 1 + r.payer.as_str().len() + 1 + r.payee.as_str().len() + 8 + 8 + 8 + 32
        );
        prop_assert_eq!(&bytes[1..20], RECEIPT_TAG);
        prop_assert_eq!(decode_receipt_canonical(&bytes), Ok(r.clone()));
        if q != r {
            prop_assert_ne!(q.canonical_bytes(), bytes);
        }
    }

    /// A receipt signature verifies with the server's key and never once
    /// any single field changes; a payment signature is never a receipt
    /// signature (domain separation).
    #[test]
    fn receipt_signature_fails_for_any_changed_field(
        r in receipt(),
        key in key_choice(),
        change in receipt_change(),
        memo in memo(),
    ) {
        with_key(key, |key| {
            let signed = r.clone().sign(key);
            prop_assert!(signed.verify(key.verifying_key()).is_ok());
            let changed = apply_receipt_change(&signed, &change);
            prop_assert_ne!(&changed, &signed);
            prop_assert!(changed.verify(key.verifying_key()).is_err(), "{:?} still verifies", change);

            // The same key signing a payment with the receipt's fields:
            // that signature is not a valid receipt signature.
            let payment = Payment {
                id: r.payment_id,
                payer: r.payer.clone(),
                payee: r.payee.clone(),
                amount_minor: r.amount_minor,
                expires_at_s: r.seq,
                memo,
            }
            .sign(key);
            let forged = SignedReceipt { receipt: r.clone(), signature: payment.signature.clone() };
            prop_assert!(forged.verify(key.verifying_key()).is_err());
            let forged_payment = SignedPayment { payment: payment.payment, signature: signed.signature.clone() };
            prop_assert!(forged_payment.verify(key.verifying_key()).is_err());
            Ok(())
        })?;
    }

    /// ReceiptJson → SignedReceipt → ReceiptJson round-trips, and a
    /// receipt read back from JSON still verifies.
    #[test]
    fn receipt_json_round_trips(r in receipt(), seed in any::<[u8; 32]>()) {
        let key = SigningKey::ed25519_from_seed(&seed);
        let signed = r.sign(&key);
        let j = ReceiptJson::from(&signed);
        let text = serde_json::to_string(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed: ReceiptJson = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed, &j);
        let back = SignedReceipt::try_from(&parsed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &signed);
        prop_assert_eq!(ReceiptJson::from(&back), j);
        prop_assert!(back.verify(key.verifying_key()).is_ok());
    }

    /// `ReceiptJson` with arbitrary strings never panics `try_from`.
    #[test]
    fn receipt_json_try_from_takes_anything(
        payment_id in prop_oneof!["[0-9a-f]{32}", any::<String>()],
        payer in prop_oneof![name_string(), any::<String>()],
        payee in prop_oneof![name_string(), any::<String>()],
        amount in any::<u64>(),
        seq in any::<u64>(),
        settled_at_ms in any::<u64>(),
        payment_hash in prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F]{60,68}", any::<String>()],
        signature in proptest::option::of(prop_oneof!["[0-9a-f]{0,160}", any::<String>()]),
    ) {
        let j = ReceiptJson { payment_id, payer, payee, amount, seq, settled_at_ms, payment_hash, signature };
        if let Err(e) = SignedReceipt::try_from(&j) {
            prop_assert_eq!(e.code, ErrorCode::BadRequest);
        }
        if let Err(e) = Receipt::try_from(&j) {
            prop_assert_eq!(e.code, ErrorCode::BadRequest);
        }
        if let Err(e) = j.signature_bytes() {
            prop_assert_eq!(e.code, ErrorCode::BadRequest);
        }
    }

    /// An unsigned receipt (a reply with a log proof) round-trips through
    /// JSON without a `signature` field, and is no `SignedReceipt`.
    #[test]
    fn unsigned_receipt_json_round_trips(r in receipt()) {
        let j = ReceiptJson::from(&r);
        let text = serde_json::to_string(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!text.contains("signature"), "{}", text);
        let parsed: ReceiptJson = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed, &j);
        prop_assert_eq!(Receipt::try_from(&parsed).map_err(|e| TestCaseError::fail(e.to_string()))?, r);
        prop_assert_eq!(parsed.signature_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?, None);
        prop_assert!(SignedReceipt::try_from(&parsed).is_err());
    }
}

/// The decoder written here reads the test vector printed in
/// docs/PROTOCOL.md §4.3 as the documented payment, so it follows the
/// document rather than the implementation.
#[test]
fn test_decoder_reads_the_protocol_md_vector() {
    let hex = "136d6963726f7061792f7061796d656e742f763100112233445566778899aabbccddeeff\
               05616c69636503626f6200000000000000fa000000006b49d20000056c756e6368";
    let bytes = hex::decode(hex).expect("the vector is hex");
    // 1 + 19 + 16 + (1 + 5) + (1 + 3) + 8 + 8 + (2 + 5)
    assert_eq!(bytes.len(), 69);
    let p = decode_payment_canonical(&bytes).expect("the vector decodes");
    assert_eq!(p.id.to_hex(), "00112233445566778899aabbccddeeff");
    assert_eq!(p.payer.as_str(), "alice");
    assert_eq!(p.payee.as_str(), "bob");
    assert_eq!(p.amount_minor, 250);
    assert_eq!(p.expires_at_s, 1_800_000_000);
    assert_eq!(p.memo, "lunch");
    assert_eq!(p.canonical_bytes(), bytes);
    // Any truncation or extension is refused.
    for n in 0..bytes.len() {
        assert!(decode_payment_canonical(&bytes[..n]).is_err(), "{n}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode_payment_canonical(&longer).is_err());
}

/// The grammar really gets past the JSON parser: a fixed sample of lines
/// contains accepted settle/pay requests with fully valid payments, other
/// accepted ops, and refusals beyond the JSON layer.
#[test]
fn request_grammar_reaches_every_layer() {
    let mut runner = TestRunner::deterministic();
    let strategy = request_line();
    let (mut json_ok, mut request_ok, mut payment_decoded, mut payment_valid) = (0, 0, 0, 0);
    let total = 2000;
    for _ in 0..total {
        let line = strategy
            .new_tree(&mut runner)
            .expect("the grammar generates")
            .current();
        if serde_json::from_slice::<serde_json::Value>(&line).is_ok() {
            json_ok += 1;
        }
        let payment = match (
            decode_request::<ServerRequest>(&line).request,
            decode_request::<PeerRequest>(&line).request,
        ) {
            (Ok(ServerRequest::Settle { payment }), _) | (_, Ok(PeerRequest::Pay { payment })) => {
                Some(payment)
            }
            (Ok(_), _) | (_, Ok(_)) => None,
            (Err(_), Err(_)) => continue,
        };
        {
            request_ok += 1;
            if let Some(payment) = &payment {
                payment_decoded += 1;
                if SignedPayment::try_from(payment).is_ok() {
                    payment_valid += 1;
                }
            }
        }
    }
    eprintln!(
        "of {total} grammar lines: {json_ok} valid JSON, {request_ok} requests, \
         {payment_decoded} settle/pay, {payment_valid} with a valid payment"
    );
    assert!(json_ok > total / 2, "{json_ok}");
    assert!(request_ok > total / 20, "{request_ok}");
    assert!(payment_decoded > total / 50, "{payment_decoded}");
    assert!(payment_valid > total / 100, "{payment_valid}");
}
