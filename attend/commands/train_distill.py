"""``attend train distill``: train a smaller encoder from scratch to reproduce the teacher's
embeddings on unlabeled text (see ``retriever.distill``)."""

from __future__ import annotations

import argparse

from attend.commands.train_encoder import add_loop_arguments, loop_kwargs


def register(parsers) -> None:
    p = parsers.train.add_parser(
        "distill",
        help="distil the encoder into a smaller one trained from random initialisation",
        description="Chunk the texts as the index does, embed them once with the teacher (cached in "
        "OUT/teacher.npy), and train a student with the teacher's tokenizer and output width to match those "
        "vectors. Writes OUT/model (load it with --encoder OUT/model; model card in OUT/model/README.md), "
        "OUT/checkpoint.pt and OUT/history.json. Resumable: run the same command again.",
    )
    p.add_argument("--teacher", default="all-MiniLM-L6-v2", help="encoder name or checkpoint directory")
    p.add_argument("--texts", nargs="+", required=True, metavar="FILE",
                   help="BEIR corpus.jsonl / queries.jsonl, a BEIR folder (its corpus and the queries of its train "
                   "qrels), SQuAD .json (paragraphs), or .txt (one text per line)")
    p.add_argument("--sentences", action="store_true",
                   help="also train on every sentence of the texts (short, query-like texts); default off")
    p.add_argument("--out", required=True, help="output directory")
    add_loop_arguments(p, batch_size=64, lr=5e-4, epochs=3, save_every=200)
    p.add_argument("--layers", type=int, default=4, help="student layers (default 4)")
    p.add_argument("--dim", type=int, default=None, help="student width (default and only value for now: the teacher's)")
    p.add_argument("--heads", type=int, default=12, help="attention heads (default 12)")
    p.add_argument("--intermediate", type=int, default=None, help="MLP width (default 4 x dim)")
    p.add_argument("--objective", choices=["cosine", "mse"], default="cosine", help="default cosine")
    p.add_argument("--contrastive", type=float, default=0.0,
                   help="weight of an in-batch InfoNCE term (student i vs the batch's teacher vectors); default 0")
    p.add_argument("--scale", type=float, default=20.0, help="logit scale of the contrastive term")
    p.add_argument("--chunk-tokens", type=int, default=None, help="chunk size in tokens (default: the index's, 200)")
    p.add_argument("--chunk-overlap", type=int, default=None, help="chunk overlap (default: the index's, 40)")
    p.add_argument("--val-fraction", type=float, default=0.02, help="share of texts held out (mean cosine to the teacher)")
    p.add_argument("--eval-data", default=None, help="BEIR folder: also report the student's nDCG@10 at each validation")
    p.add_argument("--eval-split", default="test", help="qrels split of --eval-data (default test)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eval.metrics import evaluate
    from retriever.distill import DistillConfig, distill

    chunking = {k: v for k, v in (("chunk_tokens", args.chunk_tokens), ("chunk_overlap", args.chunk_overlap)) if v is not None}
    cfg = DistillConfig(
        teacher=args.teacher, texts=args.texts, layers=args.layers, dim=args.dim, heads=args.heads,
        intermediate=args.intermediate, objective=args.objective, sentences=args.sentences, contrastive=args.contrastive, scale=args.scale,
        val_fraction=args.val_fraction, eval_data=args.eval_data, eval_split=args.eval_split, **chunking,
        **loop_kwargs(args),
    )
    path = distill(cfg, score_run=evaluate)
    print(f"student saved to {path}")
    return 0
