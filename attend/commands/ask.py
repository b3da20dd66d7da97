"""``attend ask --collection C "question"``: a grounded answer with citations, or an abstention."""

from __future__ import annotations

import argparse
import time

from attend.commands.args import add_generator_args, generator_settings
from attend.commands.search import (
    add_retrieval_args,
    parse_filters,
    rerank_request,
    retrieval_settings,
)


def register(parsers) -> None:
    p = parsers.top.add_parser("ask", help="ask a question about a collection")
    p.add_argument("question")
    add_retrieval_args(p, 8)
    p.add_argument("--budget", type=int, default=512, help="generator input budget in tokens (default 512)")
    p.add_argument("--score-floor", type=float, default=None, help="cut chunks scoring below this")
    p.add_argument("--abstain-threshold", type=float, default=None, help="override the reader's abstention threshold")
    add_generator_args(p)
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from engine import engine_session
    from engine.schemas import answer_out

    rerank = rerank_request(args)
    with engine_session(retrieval_settings(generator_settings(get_settings(), args.generator), args)) as engine:
        t0 = time.perf_counter()
        found, stream = engine.answer_stream(
            args.collection, args.question, k=args.k, budget=args.budget, mode=args.mode,
            filters=parse_filters(args.filter), score_floor=args.score_floor,
            abstain_threshold=args.abstain_threshold, generator=args.generator,
            abstain_unsupported=args.abstain_unsupported, rerank=rerank,
        )
        streaming = args.stream and not args.json
        for piece in stream:
            if streaming:
                print(piece, end="", flush=True)
        if streaming:
            print()
        assert stream.result is not None
        out = answer_out(found, stream.result, total_ms=(time.perf_counter() - t0) * 1e3)
    if args.json:
        print(out.model_dump_json(indent=2))
        return 0
    if not streaming:
        print(out.text if not out.abstained else f"(abstained) {out.text}")
    elif out.abstained:
        print(f"(abstained) {out.text}")
    if out.unsupported:
        print("(unsupported: the verifier found no sentence of this answer in the chunk it cites)")
    if out.sentences:
        print("\nsentences:")
        for s in out.sentences:
            how = f"supported ({s.support})" if s.supported else "UNSUPPORTED"
            cites = ", ".join(f"[{n}]" for n in s.sources) or "no citation"
            print(f"  {how}, cites {cites}{' (attributed)' if s.attributed else ''}: {s.text}")
    if out.citations:
        print("\ncitations:")
        for i, c in enumerate(out.citations, 1):
            n = c.source if c.source is not None else i
            print(f"  [{n}] {c.doc_id} chunk {c.chunk_id} chars {c.doc_char_start}-{c.doc_char_end}: \"{c.quote}\"")
    ctx = out.context
    print(f"\ncontext: {len(ctx.kept)} chunks kept ({ctx.tokens}/{ctx.budget} tokens), {len(ctx.cut)} cut")
    for c in ctx.kept:
        print(f"  kept  #{c.rank} {c.doc_id} chunk {c.chunk_id} score {c.score:.4f}{' (truncated)' if c.truncated else ''}")
    for c in ctx.cut:
        print(f"  cut   #{c.rank} {c.doc_id} chunk {c.chunk_id} score {c.score:.4f} ({c.reason})")
    print(f"generator: {out.generator} ({out.kind})")
    print("\ntimings: " + ", ".join(f"{k} {v:.1f}" for k, v in out.timings_ms.items()))
    return 0
