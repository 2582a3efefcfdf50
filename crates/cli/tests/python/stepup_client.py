#!/usr/bin/env python3
"""A bot that answers stepgate step-up challenges with TOTP.

This is how a bot owner would write the dance with the requests library:
send the request with the API token; on 401 with
error="insufficient_user_authentication", compute the current TOTP code and
repeat the request with the Stepgate-Challenge and Stepgate-Totp headers.

Usage: stepup_client.py BASE_URL TOKEN TOTP_SECRET_BASE32 SOURCE_ADDRESS PATH...
Prints one JSON object per path with what happened.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
import time

import requests
from requests.adapters import HTTPAdapter


class SourceAddressAdapter(HTTPAdapter):
    """Sends every connection from a chosen local address."""

    def __init__(self, source_address, **kwargs):
        self.source_address = source_address
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source_address, 0)
        super().init_poolmanager(*args, **kwargs)


def totp(secret_b32, at=None, digits=6, period=30):
    """RFC 6238 TOTP with HMAC-SHA-1."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // period)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def fetch(session, url, token, secret):
    headers = {"Authorization": f"Bearer {token}"}
    first = session.get(url, headers=headers, timeout=10)
    result = {"url": url, "first_status": first.status_code}
    challenge = first.headers.get("WWW-Authenticate", "")
    if first.status_code == 401 and 'error="insufficient_user_authentication"' in challenge:
        body = first.json()
        result["challenge_id"] = body["challenge_id"]
        result["www_authenticate"] = challenge
        answer = dict(headers)
        answer["Stepgate-Challenge"] = body["challenge_id"]
        answer["Stepgate-Totp"] = totp(secret)
        second = session.get(url, headers=answer, timeout=10)
        result["answer_status"] = second.status_code
        result["answer_body"] = second.text
    return result


def main():
    base, token, secret, source = sys.argv[1:5]
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(source))
    for path in sys.argv[5:]:
        print(json.dumps(fetch(session, base + path, token, secret)))


if __name__ == "__main__":
    main()
