"""Writes DPoP proofs (RFC 9449) made with the `cryptography` package, an
implementation independent of stepgate's, as JSON lines on stdout.

Usage: dpop_proofs.py URI IAT

Each line contains the proof, the key's RFC 7638 thumbprint as computed here,
the algorithm and the method and URI the proof is for.
"""

import base64
import hashlib
import json
import sys
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def number(value: int, length: int) -> str:
    return b64(value.to_bytes(length, "big"))


def thumbprint(jwk: dict) -> str:
    required = {
        "EC": ["crv", "kty", "x", "y"],
        "OKP": ["crv", "kty", "x"],
        "RSA": ["e", "kty", "n"],
    }[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def es256():
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": number(numbers.x, 32), "y": number(numbers.y, 32)}

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return "ES256", jwk, sign


def eddsa():
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "EdDSA", {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}, key.sign


def ps256():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": number(numbers.n, 256), "e": number(numbers.e, 3)}

    def sign(data: bytes) -> bytes:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return key.sign(data, pss, hashes.SHA256())

    return "PS256", jwk, sign


def main():
    uri, iat = sys.argv[1], int(sys.argv[2])
    for make in (es256, eddsa, ps256):
        alg, jwk, sign = make()
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": jwk}
        payload = {"jti": str(uuid.uuid4()), "htm": "POST", "htu": uri, "iat": iat}
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
        proof = signing_input + "." + b64(sign(signing_input.encode()))
        print(json.dumps({"alg": alg, "proof": proof, "jkt": thumbprint(jwk), "method": "POST", "uri": uri}))


if __name__ == "__main__":
    main()
