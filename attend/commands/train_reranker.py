"""``attend train reranker``: train the cross-encoder reranker on a BEIR split (see
``retriever.train_reranker``)."""

from __future__ import annotations

import argparse

from attend.commands.train_encoder import add_loop_arguments, loop_kwargs


def register(parsers) -> None:
    p = parsers.train.add_parser(
        "reranker",
        help="train the cross-encoder reranker on query-document pairs (BEIR format)",
        description="A cross-encoder ([CLS] query [SEP] document [SEP] -> relevance) warm-started from BASE, trained "
        "listwise: each query's positive against mined hard negatives (BM25 and the base encoder). A share of the "
        "queries is held out; their hybrid candidates are reranked after every epoch (nDCG@10, MRR@10, against the "
        "candidate order). Writes OUT/model, OUT/best (best validation nDCG@10), OUT/checkpoint.pt and "
        "OUT/history.json. Resumable: run the same command again.",
    )
    p.add_argument("--data", required=True,
                   help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), or a SQuAD training file (.json: "
                   "questions against their paragraph, same-article paragraphs among the negatives)")
    p.add_argument("--split", default="train", help="qrels split to train on (default train); never the test split")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--base", default="all-MiniLM-L6-v2", help="encoder name or checkpoint directory to start from")
    add_loop_arguments(p, batch_size=4, lr=3e-5, epochs=2, save_every=50)
    p.add_argument("--negatives", type=int, default=7, help="mined negatives in each query's group (default 7)")
    p.add_argument("--head-lr-scale", type=float, default=100.0,
                   help="learning rate of the fresh head as a multiple of --lr (default 100)")
    p.add_argument("--max-query-tokens", type=int, default=64, help="query tokens kept in a pair (default 64)")
    p.add_argument("--mine-depth", type=int, default=30, help="candidates from each of BM25 and the base encoder")
    p.add_argument("--mine-margin", type=float, default=0.95,
                   help="drop a candidate whose base cosine exceeds this times the positive's (likely unjudged positive)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of queries held out (default 0.1)")
    p.add_argument("--val-depth", type=int, default=30, help="validation candidates per side (default 30)")
    p.add_argument("--init", default=None, metavar="RERANKER",
                   help="continue from this trained reranker (encoder and head), e.g. one trained on SQuAD first")
    p.add_argument("--limit-queries", type=int, default=None, metavar="N",
                   help="SQuAD: train on the first N questions of whole articles taken in a seeded order (default all)")
    p.add_argument("--mix", action="append", default=[], metavar="SOURCE",
                   help="a further training source (BEIR folder or SQuAD training file) mixed into the same stream, "
                   "with its own mined negatives and held-out queries; repeatable. Validation reports each source too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eval.metrics import evaluate
    from retriever.train_reranker import RerankerTrainConfig, train_reranker

    cfg = RerankerTrainConfig(
        data=args.data, split=args.split, base=args.base, negatives=args.negatives, head_lr_scale=args.head_lr_scale,
        max_query_tokens=args.max_query_tokens, mine_depth=args.mine_depth, mine_margin=args.mine_margin,
        val_fraction=args.val_fraction, val_depth=args.val_depth, init=args.init, limit_queries=args.limit_queries,
        mix=tuple(args.mix),
        **loop_kwargs(args),
    )
    path = train_reranker(cfg, score_run=evaluate)
    print(f"reranker saved to {path}")
    return 0
