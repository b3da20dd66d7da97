"""The ``attend`` command line: one parser, subcommands registered by ``attend.commands.*``.

Each command module exposes ``register(parsers)`` and sets ``func`` on the parsers it adds. Modules
import heavy libraries (torch, faiss) inside their handlers so ``attend --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass

from common.errors import AttendError

# One module per concern; later issues add theirs here.
COMMAND_MODULES = [
    "attend.commands.embed",
    "attend.commands.bench_encoder",
    "attend.commands.serve",
    "attend.commands.collections",
    "attend.commands.index",
    "attend.commands.search",
    "attend.commands.ask",
    "attend.commands.keys",
    "attend.commands.bench_api",
    "attend.commands.bench_bm25",
    "attend.commands.bench_retrieval",
    "attend.commands.bench_qa",
    "attend.commands.bench_generate",
    "attend.commands.generate",
    "attend.commands.train_generator",
    "attend.commands.train_encoder",
    "attend.commands.train_distill",
    "attend.commands.train_reranker",
    "attend.commands.bench_rag",
    "attend.commands.diagnose",
    "attend.commands.bench_diagnose",
    "attend.commands.bench_durability",
    "attend.commands.bench_ingest",
]


@dataclass
class Parsers:
    """The subparser groups a command module may add to."""

    top: argparse._SubParsersAction
    bench: argparse._SubParsersAction
    train: argparse._SubParsersAction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attend",
        description="Attend: grounded answers over your documents, on our own transformer models.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = top.add_parser("bench", help="offline benchmarks that print figures and write JSON")
    bench_sub = bench.add_subparsers(dest="bench", metavar="TARGET")
    bench.set_defaults(func=lambda args: bench.print_help() or 2)
    train = top.add_parser("train", help="train our own models")
    train_sub = train.add_subparsers(dest="train", metavar="MODEL")
    train.set_defaults(func=lambda args: train.print_help() or 2)
    parsers = Parsers(top=top, bench=bench_sub, train=train_sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(parsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except AttendError as exc:
        print(f"attend: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
