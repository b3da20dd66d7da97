"""``attend bench api``: latency percentiles of search, answer and ingestion under concurrent load
against a real server on loopback."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(parsers) -> None:
    p = parsers.bench.add_parser("api", help="load-test the HTTP API: p50/p95/p99 per route under concurrent clients")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to drive the server (default 60)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--chunks", type=int, default=20_000, help="chunks in the collection (default 20000)")
    p.add_argument("--data", type=Path, default=None, help="BEIR folder to build the collection from (default synthetic)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="build the collection here once and reuse it on later runs (default: a temporary dir)")
    p.add_argument("--generator", default=None, help="generator directory (default: settings; else a random model)")
    p.add_argument("--mix", default="0.7,0.2,0.1", help="weights of search,answer,ingest requests (default 0.7,0.2,0.1)")
    p.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.errors import InvalidInput
    from eval.bench_api import ApiBenchConfig, run_api_bench, summary_rows
    from eval.report import console_table, write_json

    try:
        mix = tuple(float(x) for x in args.mix.split(","))
    except ValueError:
        mix = ()
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise InvalidInput(f"--mix takes three non-negative weights search,answer,ingest, got {args.mix!r}")
    if args.seconds <= 0 or args.clients < 1 or args.chunks < 1:
        raise InvalidInput("--seconds, --clients and --chunks must be positive")
    cfg = ApiBenchConfig(
        seconds=args.seconds, clients=args.clients, chunks=args.chunks, data=args.data, data_dir=args.data_dir,
        generator=args.generator, mix=mix, port=args.port,  # type: ignore[arg-type]
    )
    result = run_api_bench(cfg)
    print(console_table(summary_rows(result), floatfmt=".1f"))
    print(f"{result['requests']} requests in {result['wall_seconds']:.1f} s ({result['throughput_rps']:.1f}/s), "
          f"{result['errors']} errors; collection {result['collection']['chunks']} chunks; generator {result['generator']}")
    for route in ("search", "answer", "ingest"):
        for sample in result[route]["error_samples"]:
            print(f"  {route} error: {sample}")
    if args.json:
        write_json(result, args.json)
    return 0 if result["errors"] == 0 else 1
