"""``attend search --collection C "query"``: the best chunks with their scores; also the retrieval
arguments (collection, k, mode, filters, rerank) that ``attend ask`` and ``attend diagnose`` share."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from attend.commands.args import positive_int
from common.errors import InvalidInput

if TYPE_CHECKING:
    from common.settings import Settings


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
    p.add_argument("--rerank", default=None, metavar="MODEL",
                   help="re-score the best candidates with this reranker: a folder under models/ or a reranker "
                   "directory (default: the collection's rerank setting, else none)")
    p.add_argument("--rerank-depth", type=positive_int, default=None, metavar="N",
                   help="how many of the best candidates the reranker re-scores (default 50)")
    p.add_argument("--rerank-weight", type=float, default=None, metavar="W",
                   help="the reranker's share of the order, 0 to 1: below 1 blends its normalised score with the "
                   "fused one (default 1: its order alone)")
    p.add_argument("--no-rerank", action="store_true", help="no rerank, even where the collection sets one")


def rerank_request(args: argparse.Namespace) -> dict[str, Any] | None:
    """The engine's ``rerank`` option from ``--rerank``, ``--rerank-depth``, ``--rerank-weight`` and ``--no-rerank``
    (None: the collection's default)."""
    tuning = args.rerank_depth is not None or args.rerank_weight is not None
    if args.no_rerank:
        if args.rerank is not None or tuning:
            raise InvalidInput("--no-rerank cannot be combined with --rerank, --rerank-depth or --rerank-weight")
        return {"model": None}
    if args.rerank is None:
        if tuning:
            raise InvalidInput("--rerank-depth and --rerank-weight need --rerank MODEL")
        return None
    out: dict[str, Any] = {"model": args.rerank}
    if args.rerank_depth is not None:
        out["depth"] = args.rerank_depth
    if args.rerank_weight is not None:
        out["weight"] = args.rerank_weight
    return out


def retrieval_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with ``--rerank`` as the engine's configured reranker, so a local user may
    point at any reranker directory (a request to the server may name only the allowed ones)."""
    if args.rerank is None:
        return settings
    return settings.model_copy(update={"reranker": args.rerank})


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

    rerank = rerank_request(args)
    with engine_session(retrieval_settings(get_settings(), args)) as engine:
        result = engine.search(args.collection, args.query, k=args.k, mode=args.mode,
                               filters=parse_filters(args.filter), rerank=rerank)
    if args.json:
        print(search_out(result).model_dump_json(indent=2))
        return 0
    if not result.hits:
        print("no results")
    for h in result.hits:
        s = h.scores
        scores = " ".join(f"{k}={v:.4f}" for k, v in s.items() if v is not None)
        if h.rerank_score is not None:
            scores += f" rerank={h.rerank_score:.4f}"
        print(f"{h.rank:>3}. {h.doc_id} [{h.char_start}:{h.char_end}] {scores}")
        title = f"{h.title}: " if h.title else ""
        text = " ".join(h.text.split())
        print(f"     {title}{text[:300]}{'...' if len(text) > 300 else ''}")
    print(f"({result.timings_ms.get('total_ms', 0.0):.1f} ms)")
    return 0
