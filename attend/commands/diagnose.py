"""``attend diagnose --collection C "question"``: where each retrieved chunk went and how much of
the answer's attention it got; a verdict for the expected chunk (see ``generator.diagnosis``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attend.commands.args import add_generator_args, generator_settings
from attend.commands.search import (
    add_retrieval_args,
    parse_filters,
    rerank_request,
    retrieval_settings,
)

EPILOG = """\
verdicts:
  not_retrieved  the expected chunk is not among the k retrieved
  cut            retrieved but dropped by the context filter (score_floor, duplicate or budget)
  ignored        in the context, but its share of the answer's attention is below its uniform
                 share (its tokens / all prompt tokens)
  used           in the context with a share at least its uniform share
the share is the attention of the answer steps ([ANS] and the copied tokens; [ANS] alone for an
abstention; for a generative model, the queries that wrote each answer token) on the chunk's
tokens, renormalised over the prompt, averaged over steps, layers and heads. Without
--expected-doc/--expected-answer every chunk gets its verdict and the most attended one is flagged.
"""


def register(parsers) -> None:
    p = parsers.top.add_parser(
        "diagnose",
        help="attention diagnostics of an answer: which chunks were cut, ignored or used",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("question")
    add_retrieval_args(p, 8)
    p.add_argument("--budget", type=int, default=512, help="generator input budget in tokens (default 512)")
    p.add_argument("--score-floor", type=float, default=None, help="cut chunks scoring below this")
    p.add_argument("--abstain-threshold", type=float, default=None, help="override the model's abstention threshold")
    p.add_argument("--expected-doc", default=None, metavar="ID", help="the document that should have been used")
    p.add_argument("--expected-answer", default=None, metavar="TEXT",
                   help="text the right chunk contains (case-insensitive); may be combined with --expected-doc")
    add_generator_args(p)
    p.add_argument("--html", type=Path, default=None, help="write the interactive HTML heat map here")
    p.add_argument("--png", type=Path, default=None, help="write a static PNG heat map here")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session
    from eval.diagnose_report import write_html, write_png
    from eval.report import console_table

    rerank = rerank_request(args)
    with engine_session(retrieval_settings(generator_settings(get_settings(), args.generator), args)) as engine:
        diag = engine.diagnose(
            args.collection, args.question, k=args.k, budget=args.budget, mode=args.mode,
            filters=parse_filters(args.filter), score_floor=args.score_floor,
            abstain_threshold=args.abstain_threshold, generator=args.generator,
            abstain_unsupported=args.abstain_unsupported, expected_doc_id=args.expected_doc,
            expected_answers=[args.expected_answer] if args.expected_answer else [], rerank=rerank,
        )
    if args.html:
        write_html(diag, args.html)
    if args.png:
        write_png(diag, args.png)
    if args.json:
        print(json.dumps(diag.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"answer: {'(abstained)' if diag.abstained else diag.answer}")
    rows = []
    for c in diag.in_context + [c for c in diag.chunks if not c.in_context]:
        rows.append({
            "rank": c.rank, "doc": c.doc_id, "chunk": c.chunk_id, "bm25": c.scores.get("bm25"),
            "dense": c.scores.get("dense"), "fused": c.scores.get("fused"),
            "status": ("context" + (" (truncated)" if c.truncated else "")) if c.in_context else f"cut: {c.cut_reason}",
            "share": c.share, "uniform": c.uniform_share, "verdict": c.verdict,
            "": ("most attended " if c.most_attended else "") + ("expected" if c.expected else ""),
        })
    print(console_table(rows, floatfmt=".4f"))
    if diag.verdict is not None:
        print(f"\nexpected chunk: {diag.verdict}" + (f" ({diag.cut_reason})" if diag.cut_reason else ""))
    for path in (args.html, args.png):
        if path:
            print(f"wrote {path}")
    return 0
