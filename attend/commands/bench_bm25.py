"""``attend bench bm25``: our BM25 index against bm25s and rank_bm25 on a BEIR dataset."""

from __future__ import annotations

import argparse


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "bm25", help="BM25 queries/s and nDCG@10: ours vs bm25s vs rank_bm25 on a BEIR folder"
    )
    p.add_argument(
        "--data", required=True, help="BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument(
        "--runs", type=int, default=3, help="repetitions; figures are medians (default: 3)"
    )
    p.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    p.add_argument(
        "--k1", type=float, default=None, help="BM25 k1 for every system (default: ours)"
    )
    p.add_argument("-b", type=float, default=None, help="BM25 b for every system (default: ours)")
    p.add_argument(
        "--peer-queries",
        type=int,
        default=100,
        help="queries rank_bm25 answers per run, it being slow (0 = all; default: 100)",
    )
    p.add_argument(
        "--systems",
        default="ours,bm25s,rank_bm25",
        help="comma-separated subset of ours,bm25s,rank_bm25",
    )
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.errors import InvalidInput
    from eval.bench_bm25 import BM25BenchConfig, run_bm25_bench, summary_rows
    from eval.report import console_table, write_json

    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = set(systems) - {"ours", "bm25s", "rank_bm25"}
    if unknown or not systems:
        raise InvalidInput(f"unknown systems {sorted(unknown)}; choose from ours, bm25s, rank_bm25")
    cfg = BM25BenchConfig(
        data=Path(args.data),
        split=args.split,
        runs=args.runs,
        k=args.k,
        peer_queries=args.peer_queries,
        systems=systems,
    )
    if args.k1 is not None:
        cfg.k1 = args.k1
    if args.b is not None:
        cfg.b = args.b
    result = run_bm25_bench(cfg)
    print(
        f"{result['dataset']} ({result['split']}): {result['docs']} docs, {result['queries']} queries, "
        f"k1={result['k1']} b={result['b']}, median of {result['runs']} runs"
    )
    print(console_table(summary_rows(result), floatfmt=".4g"))
    for peer in ("bm25s", "rank_bm25"):
        key = f"ours_vs_{peer}_qps"
        if key in result:
            print(f"ours / {peer} queries/s: {result[key]:.1f}x")
    if "rank_bm25_queries" in result:
        print(f"(rank_bm25 timed and scored on the first {result['rank_bm25_queries']} queries)")
    if args.json:
        write_json(result, args.json)
    return 0
