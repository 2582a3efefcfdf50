#!/usr/bin/env python3
"""Fills a stepgate store with N identities for the memory benchmark.

Each identity gets an API token in stepgate's format (written here from the
format's description, which doubles as a check of it), a TOTP factor and a
learned baseline. Prints the tokens, one per line.

Usage: make-identities.py DB N
"""

import hashlib
import json
import os
import secrets
import sqlite3
import sys
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(length):
    return "".join(secrets.choice(BASE62) for _ in range(length))


def checksum(body):
    value = zlib.crc32(body.encode())
    digits = []
    for _ in range(6):
        digits.append(BASE62[value % 62])
        value //= 62
    return "".join(reversed(digits))


def main():
    db, count = sys.argv[1], int(sys.argv[2])
    conn = sqlite3.connect(db)
    now = 1_800_000_000_000
    baseline = {
        "requests": 500,
        "networks": {"127.0.0.0/24": {"count": 400, "last": now}, "10.0.1.0/24": {"count": 100, "last": now}},
        "operations": {"GET /orders/{n}": {"count": 50, "last": now}}
        | {f"GET /reports/r{i}": {"count": 50, "last": now} for i in range(9)},
        "hours": [20] * 24,
    }
    with conn:
        for i in range(count):
            name = f"bot-{i:05d}"
            token_id = base62(12)
            body = f"sgt_{token_id}_{base62(32)}"
            token = body + checksum(body)
            conn.execute("INSERT INTO identities (name, disabled, created_at) VALUES (?, 0, ?)", (name, now))
            conn.execute(
                "INSERT INTO tokens (id, identity, hash, created_at) VALUES (?, ?, ?, ?)",
                (token_id, name, hashlib.sha256(token.encode()).digest(), now),
            )
            conn.execute(
                "INSERT INTO totp_factors (identity, secret, algorithm, digits, period, created_at) VALUES (?, ?, 'SHA1', 6, 30, ?)",
                (name, os.urandom(20), now),
            )
            conn.execute("INSERT INTO baselines (identity, data) VALUES (?, ?)", (name, json.dumps(baseline)))
            print(token)
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")


if __name__ == "__main__":
    main()
