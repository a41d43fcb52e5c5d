//! Fuzzes the request decoder, the first code every byte from the network
//! reaches after framing: `decode_request` must answer every line with a
//! request or `bad_request`, never panic; a decoded `settle`/`pay` payment
//! goes on through `SignedPayment::try_from` and `canonical_bytes`, and
//! whatever is accepted must survive re-encoding unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use micropay::core::limits::{MEMO_BYTES_MAX, NAME_BYTES_MAX};
use micropay::core::payment::{SignedPayment, PAYMENT_TAG};
use micropay::wire::{
    decode_request, encode_request, Balance, ErrorCode, PaymentJson, Reply, ServerRequest, PeerRequest,
};

fuzz_target!(|line: &[u8]| {
    let server = check_as::<ServerRequest>(line);
    if let Some(ServerRequest::Settle { payment }) = &server {
        check_payment(payment);
    }
    if let Some(PeerRequest::Pay { payment }) = check_as::<PeerRequest>(line) {
        check_payment(&payment);
    }
});

/// Decodes `line` as `R`: a request that re-encodes to itself, or
/// `bad_request` (and then the bytes must not panic the reply decoder).
fn check_as<R>(line: &[u8]) -> Option<R>
where
    R: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let decoded = decode_request::<R>(line);
    let request = match decoded.request {
        Ok(request) => request,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
            let _ = Reply::decode(line).map(|r| r.into_result::<Balance>());
            return None;
        }
    };
    let id = decoded.id.unwrap_or(0);
    let again = encode_request(id, &request);
    let redecoded = decode_request::<R>(&again[..again.len() - 1]);
    assert_eq!(redecoded.id, Some(id));
    assert_eq!(redecoded.request.as_ref(), Ok(&request));
    Some(request)
}

fn check_payment(json: &PaymentJson) {
    let signed = match SignedPayment::try_from(json) {
        Ok(signed) => signed,
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::BadRequest | ErrorCode::SelfPayment),
                "{e}"
            );
            return;
        }
    };
    let p = &signed.payment;
    assert!(p.amount_minor >= 1);
    assert!(p.memo.len() <= MEMO_BYTES_MAX);
    assert!(p.payer.as_str().len() <= NAME_BYTES_MAX && p.payee.as_str().len() <= NAME_BYTES_MAX);
    assert_ne!(p.payer, p.payee);

    // The canonical bytes have exactly the documented length and tag.
    let bytes = p.canonical_bytes();
    let expected = 1
        + PAYMENT_TAG.len()
        + 16
        + 1
        + p.payer.as_str().len()
        + 1
        + p.payee.as_str().len()
        + 8
        + 8
        + 2
        + p.memo.len();
    assert_eq!(bytes.len(), expected);
    assert_eq!(bytes[0] as usize, PAYMENT_TAG.len());
    assert_eq!(&bytes[1..1 + PAYMENT_TAG.len()], PAYMENT_TAG);
    let _ = signed.content_hash();

    // JSON form → payment → JSON form → payment is stable.
    let back = PaymentJson::from(&signed);
    assert_eq!(SignedPayment::try_from(&back).as_ref(), Ok(&signed));
}
