//! Requests: the server's operations and the peer listener's, as two
//! separate types so that neither can receive the other's; decoding any
//! line into one of them, and encoding.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::channel::{ChannelOpened, CommitmentJson};
use crate::wire::errors::{ErrorCode, WireError};
use crate::wire::messages::PaymentJson;

/// Every operation a person can ask of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerRequest {
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
    /// Move my account to the key of the certificate this connection
    /// presents (rotation), or record that certificate's later notAfter
    /// for the same key (renewal). Both signatures cover the rotation
    /// statement's canonical bytes (docs/PROTOCOL.md), which the server
    /// rebuilds from the account's registered key and this certificate.
    Rotate {
        /// The registered (old) key's signature, hex.
        old_signature: String,
        /// This certificate's (new) key's signature, hex.
        new_signature: String,
    },
    /// Settle a signed payment (sent by its payee, or by its payer).
    Settle {
        /// The payment.
        payment: PaymentJson,
    },
    /// Open a payment channel (sent by its payer): hold links × value.
    ChannelOpen {
        /// The signed commitment.
        commitment: CommitmentJson,
    },
    /// Close a payment channel (sent by its payee) with the last link it
    /// holds.
    ChannelClose {
        /// 32 hex digits.
        channel_id: String,
        /// How many links the link pays.
        index: u64,
        /// `w_index`, 64 hex digits.
        link: String,
    },
    /// The log's latest signed checkpoint.
    Checkpoint {},
    /// The consistency proof between two tree sizes of the log.
    Consistency {
        /// The older size.
        from_size: u64,
        /// The newer size (at most the latest checkpoint's).
        to_size: u64,
    },
}

/// What a payer asks of a payee's peer listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerRequest {
    /// A payer hands a payment to its payee.
    Pay {
        /// The payment.
        payment: PaymentJson,
    },
    /// A payer offers an open channel: its commitment and the server's
    /// open receipt (the `channel_open` result).
    ChannelOffer {
        /// The signed commitment.
        commitment: CommitmentJson,
        /// The server's answer to `channel_open`.
        open_receipt: ChannelOpened,
    },
    /// A payer pays up to link `index` of a channel by revealing it.
    ChannelPay {
        /// 32 hex digits.
        channel_id: String,
        /// The link's index: the total number of links paid so far.
        index: u64,
        /// `w_index`, 64 hex digits.
        link: String,
    },
}

/// How a request is ordered against the others on its connection.
pub trait Sequenced {
    /// Whether the request must see the effects of every earlier request
    /// on its connection, and every later one its effects (a barrier).
    /// Requests that are not barriers run concurrently with each other.
    fn is_barrier(&self) -> bool;
}

impl Sequenced for ServerRequest {
    /// Settlements run concurrently; everything that reads or changes the
    /// caller's own state sees the connection's earlier requests done.
    fn is_barrier(&self) -> bool {
        !matches!(self, ServerRequest::Settle { .. })
    }
}

impl Sequenced for PeerRequest {
    /// Payments and channel links run concurrently. A link must extend
    /// the one before it, so the payee accepts links in the order read
    /// (before anything awaits) and only their acknowledgements, which
    /// wait for the disk, overlap; an offer is a barrier, so links sent
    /// after it see it.
    fn is_barrier(&self) -> bool {
        !matches!(
            self,
            PeerRequest::Pay { .. } | PeerRequest::ChannelPay { .. }
        )
    }
}

/// A decoded request line: the echoed id and the request or why it is bad.
#[derive(Debug)]
pub struct DecodedRequest<R> {
    /// The client's request id, echoed in the reply (absent: `null`).
    pub id: Option<u64>,
    /// The request, or the error to answer with.
    pub request: Result<R, WireError>,
}

/// Decodes one request line (without its newline). Never panics: anything
/// that is not a well-formed request becomes a `bad_request` error that
/// still echoes the id when one could be read.
pub fn decode_request<R: DeserializeOwned>(line: &[u8]) -> DecodedRequest<R> {
    decode_request_fast(line).unwrap_or_else(|| decode_request_general(line))
}

/// Longest request id in decimal digits (u64::MAX has 20).
const ID_DIGITS_MAX: usize = 20;

/// The shape micropay's own clients send, `{"id":N,` followed by the other
/// members, decoded straight into a request type without building a JSON
/// tree first. Returns `None` whenever the line is not exactly that shape
/// or does not decode, and the general path then gives the answer (so a
/// line decodes the same either way, errors included).
fn decode_request_fast<R: DeserializeOwned>(line: &[u8]) -> Option<DecodedRequest<R>> {
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
    let request = serde_json::from_slice::<R>(&body).ok()?;
    Some(DecodedRequest {
        id: Some(id),
        request: Ok(request),
    })
}

/// Decodes any line: parse to a JSON tree, take out `id`, decode the rest.
/// [`decode_request`] tries a faster path first and agrees with this one
/// on every line (a property test checks it).
pub fn decode_request_general<R: DeserializeOwned>(line: &[u8]) -> DecodedRequest<R> {
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
    let request = serde_json::from_value::<R>(serde_json::Value::Object(map))
        .map_err(|e| bad(format!("bad request: {e}")));
    DecodedRequest { id, request }
}

/// Encodes a request line (with its newline).
pub fn encode_request<R: Serialize>(id: u64, request: &R) -> Vec<u8> {
    encode_request_body(id, &encode_body(request))
}

/// Serializes a request without its id: `{"op":...}`. Encode once, then
/// give it an id with [`encode_request_body`] (what a pipelining client
/// that prepares its requests ahead does).
pub fn encode_body<R: Serialize>(request: &R) -> Vec<u8> {
    match serde_json::to_vec(request) {
        Ok(body) => body,
        // Requests are plain data; serializing one cannot fail.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::payment::SignedPayment;
    use crate::wire::{Balance, Reply};

    #[test]
    fn decodes_requests_and_keeps_the_id() {
        let d = decode_request::<ServerRequest>(br#"{"id":7,"op":"register"}"#);
        assert_eq!(d.id, Some(7));
        assert_eq!(d.request, Ok(ServerRequest::Register {}));
        let d = decode_request::<ServerRequest>(br#"{"op":"online","port":9000}"#);
        assert_eq!(d.id, None);
        assert_eq!(
            d.request,
            Ok(ServerRequest::Online {
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
            let d = decode_request::<ServerRequest>(line);
            let err = d.request.expect_err("must be refused");
            assert_eq!(
                err.code,
                ErrorCode::BadRequest,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // The id is echoed even when the op is bad.
        assert_eq!(
            decode_request::<ServerRequest>(br#"{"id":5,"op":"fly"}"#).id,
            Some(5)
        );
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
                held: 0,
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
            let both = decode_request::<ServerRequest>(line);
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
        let r = ServerRequest::History {
            limit: Some(3),
            before_seq: None,
        };
        let line = encode_request(9, &r);
        let d = decode_request::<ServerRequest>(&line[..line.len() - 1]);
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
