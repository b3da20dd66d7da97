"""``attend bench ingest``: ingestion throughput (chunks/s) of the single-process path against the
Ray pipeline with 1, 2, ... encoding actors, on the first documents of a BEIR corpus."""

from __future__ import annotations

import argparse

from attend.commands.args import count_list, positive_int_list


def register(parsers) -> None:
    p = parsers.bench.add_parser("ingest", help="ingestion throughput: single process against Ray actor pools")
    p.add_argument("--data", required=True, help="a BEIR folder (its corpus.jsonl is read) or a corpus .jsonl file")
    p.add_argument("--limit-docs", type=int, default=600, help="documents per run, the corpus's first (default 600)")
    p.add_argument("--actors", type=count_list, default=(0, 1, 2),
                   help="comma-separated encoding actor counts; 0 is the single-process path (default 0,1,2)")
    p.add_argument("--batch-sizes", type=positive_int_list, default=(256,),
                   help="comma-separated documents per actor call, each tried with every actor count (default 256)")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration, interleaved; the median is shown (default 3)")
    p.add_argument("--encoder", default="all-MiniLM-L6-v2", help="the collection's encoder (default all-MiniLM-L6-v2)")
    p.add_argument("--database-url", default=None, help="store URL (default: SQLite in a temporary data dir)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="Ray cluster address (default: ATTEND_RAY_ADDRESS, else a local one)")
    p.add_argument("--no-stages", action="store_true",
                   help="skip timing each stage alone (chunking, encoding with 1 and all threads, the store write)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from eval.bench_ingest import IngestBenchConfig, main

    if any(a > 0 for a in args.actors):
        from engine.distributed.cluster import import_ray

        import_ray()  # a clear error without attend[distributed]
    cfg = IngestBenchConfig(data=args.data, limit_docs=args.limit_docs, actors=tuple(args.actors),
                            batch_sizes=tuple(args.batch_sizes), repeats=args.repeats, encoder=args.encoder,
                            database_url=args.database_url, ray_address=args.ray or get_settings().ray_address,
                            stage_rates=not args.no_stages)
    cfg.validate()
    main(cfg, args.json)
    return 0
