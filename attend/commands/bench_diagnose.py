"""``attend bench diagnose``: why wrong answers are wrong, over a SQuAD file (see
``eval.diagnose``)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
over the answerable questions (the expected chunk is the gold paragraph's chunk holding a
reference answer, else any chunk of the gold paragraph):
  verdicts                  wrong answers (F1 < 0.5, abstentions included) by the gold chunk's fate:
                            not_retrieved, cut (filter or budget), ignored (attention share below
                            uniform), used_but_wrong (share at least uniform)
  gold_top_attention_rate   among correct answers (F1 >= 0.5) with the gold chunk in a context of at
                            least 2 chunks: how often the gold chunk has the largest attention share
                            (mean over the heads of the last layer, the one the copy head reads)
  gold_top_retrieval_rate   the same for the best retrieval rank (fused score) in the context
  gold_top_lift_rate        the same for the largest share relative to the uniform share
  gold_top_all_layers_rate  the same for the mean attention over every layer and head
"""


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "diagnose",
        help="attribute wrong answers to retrieval misses, cuts, ignored or used chunks (SQuAD)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="SQuAD JSON (v1.1 or v2.0)")
    p.add_argument("--limit", type=int, default=None, help="first N answerable questions, spread across articles")
    p.add_argument("--budget", type=int, default=512, help="generator budget in tokens (default 512)")
    p.add_argument("--k", type=int, default=10, help="chunks retrieved per question (default 10)")
    p.add_argument("--mode", choices=("bm25", "dense", "hybrid"), default="hybrid")
    p.add_argument("--generator", default="attend-qa", help="generator name under models/ or directory (default attend-qa)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the collection is built or reused (default: a temporary folder)")
    p.add_argument("--collection", default=None, help="collection name (default squad-<file stem>)")
    p.add_argument("--abstain-threshold", type=float, default=None, help="override the model's abstention threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures and per-question rows here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from eval.diagnose import FAILURE_KINDS, DiagnoseBenchConfig, run_diagnose_bench
    from eval.report import console_table, write_json

    cfg = DiagnoseBenchConfig(
        data=args.data, limit=args.limit, budget=args.budget, k=args.k, mode=args.mode, generator=args.generator,
        data_dir=args.data_dir, collection=args.collection, seed=args.seed, abstain_threshold=args.abstain_threshold,
    )
    r = run_diagnose_bench(cfg, progress=not args.no_progress)
    print(f"{r['n']} answerable questions, budget {cfg.budget}, k {cfg.k}, {cfg.mode}: "
          f"{r['n_wrong']} wrong, {r['n_correct']} correct")
    rows = [{"wrong answers by gold chunk": kind, "count": r["verdicts"][kind],
             "share": r["verdicts"][kind] / r["n_wrong"] if r["n_wrong"] else None} for kind in FAILURE_KINDS]
    print(console_table(rows))
    if r["cut_reasons"]:
        print("cut reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(r["cut_reasons"].items())))
    print(console_table([{"correct answers with gold in a context of >= 2 chunks": r["n_correct_with_gold"],
                          "gold_top_attention_rate": r["gold_top_attention_rate"],
                          "gold_top_retrieval_rate": r["gold_top_retrieval_rate"],
                          "gold_top_lift_rate": r["gold_top_lift_rate"],
                          "gold_top_all_layers_rate": r["gold_top_all_layers_rate"]}]))
    if args.json:
        write_json(r, args.json)
        print(f"wrote {args.json}")
    return 0
