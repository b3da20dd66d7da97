"""``attend collections [list|show|create|reshard|delete]``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(parsers) -> None:
    p = parsers.top.add_parser("collections", help="list, show, create or delete collections")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    p.set_defaults(func=run_list)
    sub.add_parser("list", help="list collections (default)").set_defaults(func=run_list)
    show = sub.add_parser("show", help="settings and counts of a collection")
    show.add_argument("name")
    show.set_defaults(func=run_show)
    create = sub.add_parser("create", help="create a collection")
    create.add_argument("name")
    create.add_argument("--chunk-tokens", type=int, default=None)
    create.add_argument("--chunk-overlap", type=int, default=None)
    create.add_argument("--encoder", default=None)
    create.add_argument("--fusion", choices=("rrf", "convex"), default=None)
    create.add_argument("--setting", action="append", metavar="KEY=VALUE", help="any other setting (value as JSON)")
    create.set_defaults(func=run_create)
    sample = sub.add_parser("sample", help="create and index the built-in sample collection (what serve --with-sample does)")
    sample.set_defaults(func=run_sample)
    reshard = sub.add_parser(
        "reshard", help="split a collection's indexes into N shards (or back to one index with 'none')",
        description="Rebuild the collection's BM25 and FAISS indexes as N shards by document id, from the store's "
        "chunks and embeddings (nothing is re-encoded). Shards live in Ray actors where Ray is installed "
        "(ATTEND_SHARD_BACKEND, ATTEND_RAY_ADDRESS; see docs/scale-out.md), else in the process; search results are "
        "the same either way.")
    reshard.add_argument("name")
    reshard.add_argument("shards", help="shard count (1 to 64), or 'none' for one unsharded index")
    reshard.set_defaults(func=run_reshard)
    delete = sub.add_parser("delete", help="delete a collection and everything in it")
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=run_delete)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from common.errors import InvalidInput

    s: dict[str, Any] = {}
    for key in ("chunk_tokens", "chunk_overlap", "encoder", "fusion"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    for item in args.setting or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InvalidInput(f"--setting takes key=value, got {item!r}")
        try:
            s[key] = json.loads(raw)
        except json.JSONDecodeError:
            s[key] = raw
    return s


def run_list(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session

    with engine_session(get_settings()) as engine:
        infos = engine.list_collections()
        if not infos:
            print("no collections")
        for info in infos:
            st = engine.collection_stats(info.name, indexes=False)
            print(f"{info.name}\t{st['documents']} documents\t{st['chunks']} chunks")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session
    from engine.schemas import collection_out

    with engine_session(get_settings()) as engine:
        print(collection_out(engine.get_collection(args.name), engine.collection_stats(args.name)).model_dump_json(indent=2))
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session
    from engine.sample import SAMPLE_COLLECTION, SAMPLE_QUESTION, ensure_sample

    with engine_session(get_settings()) as engine:
        counts = ensure_sample(engine).counts()
    print(f"{SAMPLE_COLLECTION} collection ready ({counts}); try: attend ask -c {SAMPLE_COLLECTION} \"{SAMPLE_QUESTION}\"")
    return 0


def run_create(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session

    with engine_session(get_settings()) as engine:
        info = engine.create_collection(args.name, _settings(args))
    print(f"created {info.name} {json.dumps(info.settings, sort_keys=True)}")
    return 0


def run_reshard(args: argparse.Namespace) -> int:
    from common.errors import InvalidInput
    from common.settings import get_settings
    from engine import engine_session

    if args.shards.lower() == "none":
        shards = None
    else:
        try:
            shards = int(args.shards)
        except ValueError:
            raise InvalidInput(f"shards must be an integer between 1 and 64 or 'none', got {args.shards!r}") from None
    with engine_session(get_settings()) as engine:
        stats = engine.reshard(args.name, shards)
    where = f"{shards} shards" if shards is not None else "one index"
    print(f"{args.name}: {stats['added']} chunks now in {where}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session

    if not args.yes:
        answer = input(f"delete collection {args.name!r} and all its documents? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    with engine_session(get_settings()) as engine:
        engine.delete_collection(args.name)
    print(f"deleted {args.name}")
    return 0
