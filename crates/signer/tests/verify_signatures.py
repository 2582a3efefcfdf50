"""Verify RFC 9421 signatures with Python's `cryptography` package.

Reads a JSON list of cases from standard input, each with `alg` (an RFC
9421 algorithm name), `jwk` (the public key), `base` (the signature base)
and `signature` (standard base64). Prints one line per case: the
algorithm, then `valid` or `invalid`, for the base as given and for the
base with one byte changed.
"""

import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def integer(text):
    return int.from_bytes(b64url(text), "big")


def verify(alg, jwk, message, signature):
    """Raises InvalidSignature unless the signature verifies."""
    if alg == "ed25519":
        ed25519.Ed25519PublicKey.from_public_bytes(b64url(jwk["x"])).verify(
            signature, message
        )
    elif alg in ("ecdsa-p256-sha256", "ecdsa-p384-sha384"):
        curve, digest = {
            "ecdsa-p256-sha256": (ec.SECP256R1(), hashes.SHA256()),
            "ecdsa-p384-sha384": (ec.SECP384R1(), hashes.SHA384()),
        }[alg]
        key = ec.EllipticCurvePublicNumbers(
            integer(jwk["x"]), integer(jwk["y"]), curve
        ).public_key()
        # RFC 9421 sends r || s; cryptography expects DER.
        half = len(signature) // 2
        der = encode_dss_signature(
            int.from_bytes(signature[:half], "big"),
            int.from_bytes(signature[half:], "big"),
        )
        key.verify(der, message, ec.ECDSA(digest))
    elif alg == "rsa-pss-sha512":
        key = rsa.RSAPublicNumbers(integer(jwk["e"]), integer(jwk["n"])).public_key()
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
        key.verify(signature, message, pss, hashes.SHA512())
    else:
        raise ValueError(f"unknown algorithm {alg}")


def outcome(alg, jwk, message, signature):
    try:
        verify(alg, jwk, message, signature)
    except InvalidSignature:
        return "invalid"
    return "valid"


def main():
    for case in json.load(sys.stdin):
        alg = case["alg"]
        base = case["base"].encode()
        signature = base64.b64decode(case["signature"])
        altered = base[:-1] + bytes([base[-1] ^ 1])
        print(
            alg,
            outcome(alg, case["jwk"], base, signature),
            outcome(alg, case["jwk"], altered, signature),
        )


if __name__ == "__main__":
    main()
