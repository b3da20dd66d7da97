"""``attend bench encoder``: our encoder vs sentence-transformers on a BEIR corpus (see
``eval.bench_encoder``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "encoder",
        help="embed a BEIR corpus with our encoder and with sentence-transformers; docs/s, cosine, nDCG@10",
    )
    p.add_argument("--data", type=Path, required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--limit", type=int, default=None, help="embed only the first N documents (no nDCG then)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--precision", nargs="+", default=["bf16"], metavar="P[+compile]",
        help="our variant(s): fp32, bf16 or int8, optionally +compile (torch.compile); each is measured "
        "in the same run and the first fills the top-level JSON keys (default: bf16)",
    )
    p.add_argument("--compile", action="store_true", help="add +compile to every --precision variant")
    p.add_argument("--chunk-size", type=int, default=256, help="docs per alternation between the encoders")
    p.add_argument("--runs", type=int, default=3, help="timed runs per encoder; throughput is the median")
    p.add_argument("--encoder", default=None, help="encoder name or directory (default all-MiniLM-L6-v2)")
    p.add_argument("--device", default="cpu", help="torch device for both encoders (default cpu)")
    p.add_argument("--split", default="test", help="qrels split for nDCG (default test)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--progress", action="store_true", help="show a progress bar while our encoder runs")
    p.add_argument("--compare", default=None, metavar="ENCODER",
                   help="also time this encoder (name or directory, e.g. a distilled student) at the first "
                   "precision in the same runs: its docs/s, ratio to ours, cosine to ours and nDCG@10")
    p.set_defaults(func=_run)


def _with_compile(variant: str, compile: bool) -> str:
    return f"{variant}+compile" if compile and "+compile" not in variant else variant


def _run(args: argparse.Namespace) -> int:
    from eval.bench_encoder import EncoderBenchConfig, format_report, run_encoder_bench
    from eval.report import write_json

    cfg = EncoderBenchConfig(
        data=args.data, limit=args.limit, batch_size=args.batch_size, precisions=tuple(_with_compile(v, args.compile) for v in args.precision),
        runs=args.runs, chunk_size=args.chunk_size, encoder=args.encoder, device=args.device, split=args.split, show_progress=args.progress,
        compare=args.compare,
    )
    result = run_encoder_bench(cfg)
    print(format_report(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
