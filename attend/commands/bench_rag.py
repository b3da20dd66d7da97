"""``attend bench rag``: context budget versus hallucination on SQuAD (see ``eval.rag_bench``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from attend.commands.args import positive_int, positive_int_list

EPILOG = """\
definitions (all figures are fractions in [0, 1]; see docs/eval.md):
  em, f1              official SQuAD scoring; an abstention predicts "", and an unanswerable
                      (v2.0) question has the single reference "", so only abstaining scores on it
                      (an answer that normalises to "" is still an answer and scores 0)
  answer_rate         questions answered (not abstained)
  context has answer  a reference answer (normalised) occurs as whole words in one packed chunk
  should abstain      unanswerable question, or no reference in the packed context
  abstain_precision   abstentions that should abstain / abstentions
  abstain_recall      abstentions that should abstain / questions that should abstain
  hallucination_rate  answered although the context has no reference (incl. every answer to an
                      unanswerable question) / all questions
  wrong_answer_rate   answered, context has a reference, F1 < 0.5 / all questions
                      (answer_rate = hallucination + wrong + correct_answer_rate)
  gold_in_context     a chunk of the question's own paragraph is in the packed context
  latency_p50_ms      median filter + generation time; retrieval_p50_ms: median search time
                      (with --rerank, the MODE+rerank rows include the rerank stage)
  by position         F1 / EM / answer rate of answerable questions by the place (1, 2, 3, 4, 5+)
                      of the gold paragraph's chunk in the context ("lost in the middle")
one retrieval per question and mode is shared by every budget; only the context filter and the
generation depend on the budget.
"""


def _modes(text: str) -> list[str]:
    from eval.rag_bench import MODES

    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in MODES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"modes must be among {','.join(MODES)}, got {text!r}")
    return values


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "rag",
        help="SQuAD EM/F1, hallucination and abstention against the context budget",
        description="Index a SQuAD file's paragraphs, retrieve once per question and mode, then "
        "filter into each budget and generate; report answer quality, hallucination and abstention "
        "per budget and mode.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="SQuAD JSON (v1.1 or v2.0)")
    p.add_argument("--budgets", type=positive_int_list, default=[128, 256, 512, 1024],
                   help="comma-separated generator budgets in tokens (default 128,256,512,1024)")
    p.add_argument("--modes", type=_modes, default=["hybrid"], help="comma-separated: bm25,dense,hybrid (default hybrid)")
    p.add_argument("--limit", type=int, default=None, help="first N questions of an order spread across articles")
    p.add_argument("--k", type=int, default=10, help="chunks retrieved per question (default 10)")
    p.add_argument("--generator", default="attend-qa",
                   help="generator (attend-qa, smollm2, a .gguf file or a directory); several comma-separated "
                   "(e.g. attend-qa,smollm2) answer from the same hits, one table and one figure (default attend-qa)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the collection is built or reused (default: a temporary folder; pass one to index once)")
    p.add_argument("--collection", default=None, help="collection name (default squad-<file stem>)")
    p.add_argument("--abstain-threshold", type=float, default=None, help="override the model's abstention threshold")
    p.add_argument("--score-floor", type=float, default=None, help="cut chunks whose ranking score is below this")
    p.add_argument("--rerank", default=None, metavar="MODEL",
                   help="also run each mode with this reranker (a folder under models/ or a reranker directory) "
                   "re-scoring its best --rerank-depth chunks before the cut to --k: rows MODE+rerank")
    p.add_argument("--rerank-depth", type=positive_int, default=50, metavar="N",
                   help="chunks the reranker re-scores per question (default 50)")
    p.add_argument("--rerank-weight", type=float, default=None, metavar="W",
                   help="the reranker's share of the order, 0 to 1 (default: the reranker's own)")
    p.add_argument("--seed", type=int, default=0, help="question order (default 0)")
    p.add_argument("--json", type=Path, default=None, help="write rows, by_position, outcomes and config here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of F1, hallucination and gold-in-context vs budget")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables as markdown here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from eval.rag_bench import RagBenchConfig, format_tables, plot_rag_bench, run_rag_bench
    from eval.report import atomic_write_text, console_table, markdown_table, write_json

    cfg = RagBenchConfig(
        data=args.data, budgets=tuple(args.budgets), modes=tuple(args.modes), limit=args.limit, k=args.k,
        generator=args.generator, data_dir=args.data_dir, collection=args.collection, seed=args.seed,
        abstain_threshold=args.abstain_threshold, score_floor=args.score_floor, rerank=args.rerank,
        rerank_depth=args.rerank_depth, rerank_weight=args.rerank_weight,
    )
    result = run_rag_bench(cfg, progress=not args.no_progress)
    c = result["config"]
    print(f"{c['questions']} questions ({c['answerable']} answerable) over {c['documents']} paragraphs "
          f"in collection {c['collection']} ({'indexed' if c['indexed'] else 'reused'}), k={cfg.k}")
    print(format_tables(result, console_table))
    if args.markdown:
        text = f"# attend bench rag: {args.data.name}\n\n{format_tables(result, markdown_table)}\n"
        atomic_write_text(args.markdown, text)
        print(f"wrote {args.markdown}")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_rag_bench(result, args.plot)
        print(f"wrote {args.plot}")
    return 0
