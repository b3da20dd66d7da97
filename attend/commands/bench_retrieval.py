"""``attend bench retrieval``: nDCG@10, Recall@100, MRR@10 and queries/s per search mode on a BEIR
folder, indexing the corpus through the same path a user's collection takes; with ``--rerank`` a
``hybrid+rerank`` row and the latency the rerank stage adds."""

from __future__ import annotations

import argparse

from attend.commands.args import positive_int


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "retrieval",
        help="BM25 / dense / hybrid retrieval quality on a BEIR folder (nDCG@10, Recall@100, MRR@10, qps)",
        description="Index DIR/corpus.jsonl as a collection (chunk, embed, store, BM25 + FAISS), run the "
        "split's queries, map chunk hits to documents (best chunk per document) and score them. A query "
        "id equal to a corpus id never counts as a hit for itself.",
    )
    p.add_argument("--data", required=True,
                   help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/), or a SQuAD .json file read as one: its "
                   "paragraphs are the corpus, each answerable question a query relevant to its own paragraph")
    p.add_argument("--split", default="test", help="qrels split of a BEIR folder (default test)")
    p.add_argument("--modes", default="bm25,dense,hybrid", help="comma list of bm25, dense, hybrid")
    p.add_argument("--encoder", default="all-MiniLM-L6-v2", help="encoder name or checkpoint directory")
    p.add_argument("--data-dir", default=None, help="keep the indexed collection here and reuse it next time")
    p.add_argument("--collection", default=None, help="collection name (default beir-<dataset>)")
    p.add_argument("--chunk-tokens", type=int, default=None)
    p.add_argument("--chunk-overlap", type=int, default=None)
    p.add_argument("--fusion", default="rrf", choices=["rrf", "convex"])
    p.add_argument("--rrf-k", type=float, default=60.0)
    p.add_argument("--limit-queries", type=positive_int, default=None, metavar="N",
                   help="the first N queries (a SQuAD file's are spread over its articles)")
    p.add_argument("--rerank", default=None, metavar="MODEL",
                   help="add a hybrid+rerank row: this reranker (a folder under models/ or a reranker directory) "
                   "re-scores the best --rerank-depth chunks of each hybrid search")
    p.add_argument("--rerank-depth", type=positive_int, default=50, metavar="N",
                   help="chunks the reranker re-scores per query (default 50)")
    p.add_argument("--rerank-weights", default=None, metavar="W[,W...]",
                   help="the reranker's share of the order, 0 to 1 (see rerank weight); the first is timed, each other "
                   "adds a 'hybrid+rerank w=W' row from the same scores (default: the reranker's own weight, 1 unless its "
                   "config recommends one)")
    p.add_argument("--shards", default=None, metavar="N[,N...]",
                   help="also run every mode with the collection split into N shards (each count in turn; Ray "
                   "actors where Ray is installed, see docs/scale-out.md): the figures must equal the single index's")
    p.add_argument("--json", default=None, help="write the figures here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.errors import InvalidInput
    from eval.bench_retrieval import RetrievalBenchConfig, main

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in ("bm25", "dense", "hybrid")]
    if bad or not modes:
        raise InvalidInput(f"unknown modes {bad}; choose from bm25, dense, hybrid")
    try:
        shards = tuple(int(n) for n in args.shards.split(",") if n.strip()) if args.shards else ()
    except ValueError:
        raise InvalidInput(f"--shards takes a comma list of shard counts, got {args.shards!r}") from None
    if any(not 1 <= n <= 64 for n in shards):
        raise InvalidInput(f"shard counts must be between 1 and 64, got {args.shards!r}")
    try:
        weights = (tuple(float(w) for w in args.rerank_weights.split(",") if w.strip())
                   if args.rerank_weights is not None else (None,))
    except ValueError:
        raise InvalidInput(f"--rerank-weights takes a comma list of numbers, got {args.rerank_weights!r}") from None
    if not weights or any(w is not None and not 0.0 <= w <= 1.0 for w in weights):
        raise InvalidInput(f"rerank weights must be between 0 and 1, got {args.rerank_weights!r}")
    cfg = RetrievalBenchConfig(
        data=args.data, split=args.split, modes=modes, encoder=args.encoder, data_dir=args.data_dir,
        collection=args.collection, chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap,
        fusion=args.fusion, rrf_k=args.rrf_k, limit_queries=args.limit_queries, rerank=args.rerank,
        rerank_depth=args.rerank_depth, rerank_weights=weights, shards=shards,
    )
    main(cfg, args.json)
    return 0
