"""A bot's HTTP message signer (RFC 9421), written apart from stepgate's own
code: it builds the signature base itself and signs with the
`cryptography` package, so the gateway is checked against an independent
implementation.

Usage:
  httpsig_client.py keygen KEYFILE ALG
      writes a private key for ALG (ed25519, ecdsa-p256-sha256,
      ecdsa-p384-sha384, rsa-pss-sha512), prints its public key as PEM
  httpsig_client.py sign KEYFILE ALG KEYID METHOD URL NONCE [BODYFILE]
      prints the Content-Digest (with a body), Signature-Input and
      Signature header lines for one request

Environment: COMPONENTS replaces the covered components (space-separated),
CREATED the creation time (Unix seconds).
"""

import base64
import hashlib
import os
import sys
import time
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def keygen(path: str, alg: str) -> None:
    if alg == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ecdsa-p256-sha256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "ecdsa-p384-sha384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif alg == "rsa-pss-sha512":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        sys.exit(f"unknown algorithm {alg}")
    with open(path, "wb") as file:
        file.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sys.stdout.write(public.decode())


def authority(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.lower()
    default = {"http": ":80", "https": ":443"}.get(parts.scheme, "")
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


def raw_signature(key, alg: str, base: bytes) -> bytes:
    if alg == "ed25519":
        return key.sign(base)
    if alg in ("ecdsa-p256-sha256", "ecdsa-p384-sha384"):
        digest, width = (
            (hashes.SHA256(), 32) if alg == "ecdsa-p256-sha256" else (hashes.SHA384(), 48)
        )
        r, s = decode_dss_signature(key.sign(base, ec.ECDSA(digest)))
        return r.to_bytes(width, "big") + s.to_bytes(width, "big")
    if alg == "rsa-pss-sha512":
        return key.sign(
            base,
            padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64),
            hashes.SHA512(),
        )
    sys.exit(f"unknown algorithm {alg}")


def sign(path, alg, keyid, method, url, nonce, body_file=None) -> None:
    with open(path, "rb") as file:
        key = serialization.load_pem_private_key(file.read(), password=None)
    body = None
    if body_file:
        with open(body_file, "rb") as file:
            body = file.read()
    headers = {}
    if body is not None:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        headers["content-digest"] = f"sha-256=:{digest}:"
    default = "@method @target-uri @authority" + (" content-digest" if body is not None else "")
    components = os.environ.get("COMPONENTS", default).split()
    created = int(os.environ.get("CREATED", int(time.time())))
    values = {
        "@method": method.upper(),
        "@target-uri": url,
        "@authority": authority(url),
    }
    lines = []
    for name in components:
        value = values[name] if name.startswith("@") else headers[name]
        lines.append(f'"{name}": {value}')
    inner = " ".join(f'"{name}"' for name in components)
    params = f'({inner});created={created};keyid="{keyid}";nonce="{nonce}"'
    lines.append(f'"@signature-params": {params}')
    base = "\n".join(lines).encode()
    signature = base64.b64encode(raw_signature(key, alg, base)).decode()
    if "content-digest" in headers:
        print(f"Content-Digest: {headers['content-digest']}")
    print(f"Signature-Input: bot={params}")
    print(f"Signature: bot=:{signature}:")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["keygen"] and len(args) == 3:
        keygen(args[1], args[2])
    elif args[:1] == ["sign"] and len(args) in (7, 8):
        sign(*args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
