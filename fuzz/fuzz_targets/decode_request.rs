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
    decode_request, encode_request, Balance, ErrorCode, PaymentJson, Reply, Request,
};

fuzz_target!(|line: &[u8]| {
    let decoded = decode_request(line);
    let request = match decoded.request {
        Ok(request) => request,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
            // The same bytes as a reply: must not panic either.
            let _ = Reply::decode(line).map(|r| r.into_result::<Balance>());
            return;
        }
    };

    // An accepted request re-encodes to itself.
    let id = decoded.id.unwrap_or(0);
    let again = encode_request(id, &request);
    let redecoded = decode_request(&again[..again.len() - 1]);
    assert_eq!(redecoded.id, Some(id));
    assert_eq!(redecoded.request.as_ref(), Ok(&request));

    if let Request::Settle { payment } | Request::Pay { payment } = &request {
        check_payment(payment);
    }
});

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
