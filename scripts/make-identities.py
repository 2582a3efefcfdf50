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
    # A learned baseline in the layout stepgate stores (version 2): decaying
    # counts of networks, operations, resources and clients, an
    # hour-of-week profile and the usual request rate.
    def seen(weight):
        return {"weight": weight, "last": now}

    def profile(entries):
        return {"entries": {key: seen(weight) for key, weight in entries.items()},
                "total": seen(sum(entries.values()))}

    baseline = {
        "version": 2,
        "requests": 500,
        "last_active": now,
        "networks": profile({"127.0.0.0/24": 400.0, "10.0.1.0/24": 100.0}),
        "asns": profile({}),
        "countries": profile({}),
        "operations": profile({"GET /orders/{n}": 50.0} | {f"GET /reports/r{i}": 50.0 for i in range(9)}),
        "resources": profile({"/orders/{n}": 50.0} | {f"/reports/r{i}": 50.0 for i in range(9)}),
        "clients": profile({"curl": 500.0}),
        "client_versions": profile({"curl/7.88.1": 500.0}),
        "week_hours": [3.0] * 168,
        "week_hours_at": now,
        "last_fix": None,
        "sources": [],
        "rate": {"minute": now // 60_000, "count": 0, "usual": {"mean": 5.0, "variance": 4.0, "samples": 100}},
        "bytes": {"minutes": [], "usual": {"mean": 0.0, "variance": 0.0, "samples": 0}},
        "rows": {"minutes": [], "usual": {"mean": 0.0, "variance": 0.0, "samples": 0}},
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
