"""A bot's DPoP key (RFC 9449) made with the `cryptography` package.

Usage:
  dpop_client.py keygen KEYFILE        writes a P-256 key, prints its public JWK
  dpop_client.py proof KEYFILE METHOD URI TOKEN [NONCE]
                                       prints a DPoP proof for one request,
                                       bound to TOKEN with `ath`, carrying
                                       the server's NONCE when given
"""

import base64
import hashlib
import json
import sys
import time
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key) -> dict:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def keygen(path: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(path, "wb") as file:
        file.write(pem)
    print(json.dumps(public_jwk(key)))


def proof(path: str, method: str, uri: str, token: str, nonce: str = "") -> None:
    with open(path, "rb") as file:
        key = serialization.load_pem_private_key(file.read(), password=None)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key)}
    payload = {
        "jti": str(uuid.uuid4()),
        "htm": method,
        "htu": uri,
        "iat": int(time.time()),
        "ath": b64(hashlib.sha256(token.encode()).digest()),
    }
    if nonce:
        payload["nonce"] = nonce
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    print(signing_input + "." + b64(signature))


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2])
    else:
        proof(*sys.argv[2:7])
