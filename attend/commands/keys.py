"""``attend keys hash KEY`` / ``attend keys new``: API keys for ``ATTEND_API_KEYS`` (which holds
only sha256 hashes)."""

from __future__ import annotations

import argparse
import json
import secrets


def register(parsers) -> None:
    p = parsers.top.add_parser("keys", help="make API keys and their hashes for ATTEND_API_KEYS")
    sub = p.add_subparsers(dest="keys_action", metavar="ACTION")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    h = sub.add_parser("hash", help="print the sha256 hash of a key")
    h.add_argument("key")
    h.set_defaults(func=run_hash)
    n = sub.add_parser("new", help="generate a random key and print it with its settings entry")
    n.add_argument("--scope", choices=("read", "write", "admin"), default="read")
    n.add_argument("--collections", nargs="+", default=["*"], help="collections the key may touch (default *)")
    n.add_argument("--name", default="", help="a label for logs")
    n.set_defaults(func=run_new)


def run_hash(args: argparse.Namespace) -> int:
    from common.settings import hash_key

    print(hash_key(args.key))
    return 0


def run_new(args: argparse.Namespace) -> int:
    from common.settings import hash_key

    key = "attend_" + secrets.token_urlsafe(32)
    entry = {"hash": hash_key(key), "scope": args.scope, "collections": args.collections}
    if args.name:
        entry["name"] = args.name
    print(f"key (shown once): {key}")
    print(f"settings entry:   {json.dumps(entry)}")
    print(f"e.g. ATTEND_API_KEYS='{json.dumps([entry])}'")
    return 0
