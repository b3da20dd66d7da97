"""``attend bench qa``: EM/F1 of the grounded QA generator on SQuAD-format data, with the gold
paragraph alone or among N BM25 distractors."""

from __future__ import annotations

import argparse


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "qa",
        help="EM/F1 (HasAns/NoAns), answer rate and citation accuracy of the QA generator on SQuAD data",
        description="Each question gets its gold paragraph, plus N distractor paragraphs from the same "
        "file ranked by BM25 (never ones containing a reference answer), the gold one at a seeded random "
        "position. Official SQuAD scoring; citation_accuracy = share of correct answers (F1 >= 0.5) that "
        "cite the gold paragraph.",
    )
    p.add_argument("--data", required=True, help="SQuAD-format file (dev-v1.1.json, dev-v2.0.json)")
    p.add_argument("--distractors", type=int, default=0, help="BM25 distractor paragraphs per question")
    p.add_argument("--limit", type=int, default=None, help="score a seeded sample of N questions")
    p.add_argument("--generator", default="attend-qa",
                   help="attend-qa (extractive), smollm2 (generative), a .gguf file, or a model directory")
    p.add_argument("--budget", type=int, default=None,
                   help="generative models: the context budget in tokens (default 2048, capped by the window)")
    p.add_argument("--reader", default="attend-qa",
                   help="generative models: the verifier's extractive reader ('none': token overlap only)")
    p.add_argument("--abstain-threshold", type=float, default=None, help="override the model's threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--predictions", default=None, metavar="PATH",
                   help="write {question id: answer} ('' for an abstention), the official SQuAD pred_file")
    p.add_argument("--na-probs", default=None, metavar="PATH",
                   help="write {question id: p(ABSTAIN)}, the official SQuAD 2.0 script's --na-prob-file")
    p.add_argument("--has-ans-floor", type=float, default=None, metavar="F1",
                   help="also report the best F1 a cut reaches while answerable F1 stays >= F1 (0-100), tuned on "
                   "these questions (floor_oracle_f1) and cross-calibrated by article (floor_cross_f1); files with "
                   "unanswerable questions")
    p.add_argument("--sweep", action="store_true",
                   help="also report F1, HasAns/NoAns F1 and answer rate at a grid of abstain thresholds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.errors import InvalidInput
    from eval.bench_qa import QABenchConfig, main

    if args.distractors < 0 or (args.limit is not None and args.limit < 1):
        raise InvalidInput("--distractors must be >= 0 and --limit >= 1")
    main(QABenchConfig(data=args.data, generator=args.generator, distractors=args.distractors, limit=args.limit,
                       seed=args.seed, abstain_threshold=args.abstain_threshold, device=args.device,
                       predictions_path=args.predictions, na_probs_path=args.na_probs,
                       has_ans_floor=args.has_ans_floor, sweep=args.sweep, budget=args.budget,
                       reader=None if args.reader == "none" else args.reader), args.json)
    return 0
