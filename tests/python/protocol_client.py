#!/usr/bin/env python3
"""A micropay client written from docs/PROTOCOL.md alone: Python's ssl module
and an Ed25519 library (cryptography). It registers two people, submits a
payment directly as its payer, checks the receipt as section 5 says: by
its log proof when the reply has one (section 11: the settlement record,
the RFC 9162 inclusion proof and the signed-note checkpoint), otherwise by
the server's receipt signature; a reply with neither is refused. It prints
one JSON summary line.

usage: protocol_client.py CERT_DIR HOST PORT
"""
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


def connect(cert_dir, name, host, port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(os.path.join(cert_dir, "ca.pem"))
    ctx.load_cert_chain(os.path.join(cert_dir, name + ".pem"), os.path.join(cert_dir, name + ".key"))
    sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname=host)
    return sock, sock.makefile("rwb")


def call(f, request_id, op, **fields):
    request = {"id": request_id, "op": op, **fields}
    f.write((json.dumps(request) + "\n").encode())
    f.flush()
    reply = json.loads(f.readline())
    assert reply["id"] == request_id, reply
    return reply


def short(b):
    return bytes([len(b)]) + b


def payment_bytes(pid, payer, payee, amount, expires_at, memo):
    m = memo.encode()
    return (short(b"micropay/payment/v1") + bytes.fromhex(pid) + short(payer.encode())
            + short(payee.encode()) + struct.pack(">QQH", amount, expires_at, len(m)) + m)


def receipt_bytes(r):
    return (short(b"micropay/receipt/v1") + bytes.fromhex(r["payment_id"])
            + short(r["payer"].encode()) + short(r["payee"].encode())
            + struct.pack(">QQQ", r["amount"], r["seq"], r["settled_at_ms"])
            + bytes.fromhex(r["payment_hash"]))


def H(b):
    return hashlib.sha256(b).digest()


def settlement_record(canonical, signature, seq, settled_at_ms):
    tag = b"micropay-log-settlement-v1"
    return (b"\x01" + short(tag) + struct.pack(">QQ", seq, settled_at_ms)
            + struct.pack(">H", len(canonical)) + canonical
            + struct.pack(">H", len(signature)) + signature)


def verify_inclusion(h, i, n, proof, root):
    # RFC 9162 section 2.1.3.2.
    f, s = i, n - 1
    for p in proof:
        if s == 0:
            return False
        if f & 1 or f == s:
            h = H(b"\x01" + p + h)
            while f and not f & 1:
                f >>= 1
                s >>= 1
        else:
            h = H(b"\x01" + h + p)
        f >>= 1
        s >>= 1
    return s == 0 and h == root


def open_checkpoint(note, server_key):
    """The checkpoint's (size, root) after checking its Ed25519 signature."""
    body, signatures = note.split("\n\n", 1)
    body += "\n"
    origin, size, root = body.splitlines()[:3]
    raw = server_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = H(origin.encode() + b"\n\x01" + raw)[:4]
    for line in signatures.splitlines():
        dash, name, blob = line.split(" ")
        blob = base64.b64decode(blob)
        if dash == "\u2014" and name == origin and blob[:4] == key_id:
            server_key.verify(blob[4:], body.encode())
            return int(size), base64.b64decode(root)
    raise AssertionError("no signature by the server's key")


def main():
    cert_dir, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Vector from docs/PROTOCOL.md section 4.3.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    vector_key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    vector = payment_bytes("00112233445566778899aabbccddeeff", "alice", "bob", 250, 1800000000, "lunch")
    assert vector_key.sign(vector).hex().startswith("6d7285abe2f8feb4"), "test vector"

    alice_sock, alice = connect(cert_dir, "alice", host, port)
    bob_sock, bob = connect(cert_dir, "bob", host, port)
    assert call(alice, 1, "register")["ok"]
    assert call(bob, 1, "register")["ok"]

    with open(os.path.join(cert_dir, "alice.key"), "rb") as fh:
        alice_key = serialization.load_pem_private_key(fh.read(), password=None)
    import time
    pid = os.urandom(16).hex()
    expires_at = int(time.time()) + 60
    sig = alice_key.sign(payment_bytes(pid, "alice", "bob", 250, expires_at, "from python"))
    payment = {"id": pid, "payer": "alice", "payee": "bob", "amount": 250,
               "expires_at": expires_at, "memo": "from python", "signature": sig.hex()}
    reply = call(alice, 2, "settle", payment=payment)
    assert reply["ok"], reply
    receipt = reply["result"]["receipt"]

    # The receipt is the server's word: a log proof leading to a checkpoint
    # signed by the key of the server's certificate, or, without a proof,
    # the server's signature over the receipt itself.
    server_cert = x509.load_der_x509_certificate(alice_sock.getpeercert(binary_form=True))
    result = reply["result"]
    canonical = payment_bytes(pid, "alice", "bob", 250, expires_at, "from python")
    for field, want in (("payment_id", pid), ("payer", "alice"), ("payee", "bob"), ("amount", 250),
                        ("payment_hash", H(canonical).hex())):
        assert receipt[field] == want, (field, receipt)
    if "inclusion_proof" in result:
        # The payment is in the server's log: rebuild its leaf, follow the
        # inclusion proof to the root of the checkpoint the server signed.
        # The leaf index is the server's to give (not derived from seq).
        size, root = open_checkpoint(result["checkpoint"], server_cert.public_key())
        leaf = H(b"\x00" + settlement_record(canonical, sig, receipt["seq"], receipt["settled_at_ms"]))
        proof = [bytes.fromhex(h) for h in result["inclusion_proof"]]
        assert verify_inclusion(leaf, result["leaf_index"], size, proof, root), "inclusion proof"
        assert not verify_inclusion(H(b"\x00"), result["leaf_index"], size, proof, root)
        verified_by = "log_proof"
    else:
        assert "signature" in receipt, "a reply with neither a log proof nor a signature"
        verified_by = "signature"
    if "signature" in receipt:
        server_cert.public_key().verify(bytes.fromhex(receipt["signature"]), receipt_bytes(receipt))

    # A tampered amount is refused.
    bad = dict(payment, id=os.urandom(16).hex(), amount=9999)
    tampered = call(alice, 3, "settle", payment=bad)
    assert not tampered["ok"] and tampered["error"]["code"] == "bad_signature", tampered

    balances = (call(alice, 4, "balance")["result"]["balance"],
                call(bob, 2, "balance")["result"]["balance"])
    print(json.dumps({"seq": receipt["seq"], "balances": balances, "receipt_verified": True,
                      "log_proof_verified": verified_by == "log_proof",
                      "receipt_signed": "signature" in receipt, "verified_by": verified_by}))


if __name__ == "__main__":
    main()
