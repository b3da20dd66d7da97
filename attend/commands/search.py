"""``attend search --collection C "query"``: the best chunks with their scores."""

from __future__ import annotations

import argparse
import json
from typing import Any

from common.errors import InvalidInput


def parse_filters(items: list[str] | None) -> dict[str, Any] | None:
    """``key=value`` pairs into search filters; a value is JSON when it parses (numbers, true),
    else a string; a key given twice matches either value."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--filter takes key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key in out:
            prev = out[key]["$in"] if isinstance(out[key], dict) else [out[key]]
            out[key] = {"$in": [*prev, value]}
        else:
            out[key] = value
    return out


def add_retrieval_args(p: argparse.ArgumentParser, k: int) -> None:
    p.add_argument("--collection", "-c", required=True, help="collection to search")
    p.add_argument("--k", type=int, default=k, help=f"how many chunks (default {k})")
    p.add_argument("--mode", choices=("bm25", "dense", "hybrid"), default="hybrid")
    p.add_argument("--filter", action="append", metavar="KEY=VALUE", help="metadata filter (repeatable)")


def register(parsers) -> None:
    p = parsers.top.add_parser("search", help="search a collection")
    p.add_argument("query")
    add_retrieval_args(p, 10)
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session
    from engine.schemas import search_out

    with engine_session(get_settings()) as engine:
        result = engine.search(args.collection, args.query, k=args.k, mode=args.mode, filters=parse_filters(args.filter))
    if args.json:
        print(search_out(result).model_dump_json(indent=2))
        return 0
    if not result.hits:
        print("no results")
    for h in result.hits:
        s = h.scores
        scores = " ".join(f"{k}={v:.4f}" for k, v in s.items() if v is not None)
        print(f"{h.rank:>3}. {h.doc_id} [{h.char_start}:{h.char_end}] {scores}")
        title = f"{h.title}: " if h.title else ""
        text = " ".join(h.text.split())
        print(f"     {title}{text[:300]}{'...' if len(text) > 300 else ''}")
    print(f"({result.timings_ms.get('total_ms', 0.0):.1f} ms)")
    return 0
