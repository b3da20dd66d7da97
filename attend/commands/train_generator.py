"""``attend train generator``: train the grounded QA generator on SQuAD-format data."""

from __future__ import annotations

import argparse
import json


def register(parsers) -> None:
    p = parsers.train.add_parser(
        "generator",
        help="train the grounded QA generator (answers with citations or abstains)",
        description="Warm-start our decoder from a BERT-family checkpoint and train its pointer head "
        "on SQuAD-format data, with abstention examples and BM25 distractors. Resumable: run the same "
        "command again to continue from OUT/checkpoint.pt. Never train on the dev sets.",
    )
    p.add_argument("--data", required=True, help="SQuAD-format training file (e.g. train-v1.1.json)")
    p.add_argument("--out", required=True, help="output directory (checkpoint.pt, model/, history.json)")
    p.add_argument("--base", default="all-MiniLM-L6-v2", help="BERT-family checkpoint to warm-start from")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per batch")
    p.add_argument("--max-seq-len", type=int, default=1024, help="context window (learned positions are extended by tiling)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-examples", type=int, default=300)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this long")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mix", default=None, help='JSON of QAMix fields, e.g. \'{"multi": 0.3}\'')
    p.add_argument("--limit-items", type=int, default=None, help="use only the first N questions (smoke runs)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from a saved QA model (name or directory) instead of warm-starting from --base")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="do not train: write the model in OUT/checkpoint.pt (e.g. mid-run) to DIR and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from generator.train_qa import TrainConfig, export_checkpoint, train

    if args.export:
        path = export_checkpoint(args.out, args.export)
        print(f"model exported to {path}")
        return 0
    cfg = TrainConfig(
        data=args.data, out=args.out, base=args.base, steps=args.steps, lr=args.lr,
        batch_tokens=args.batch_tokens, max_seq_len=args.max_seq_len, eval_every=args.eval_every,
        eval_examples=args.eval_examples, save_every=args.save_every, max_minutes=args.max_minutes,
        threads=args.threads, seed=args.seed, mix=json.loads(args.mix) if args.mix else None,
        limit_items=args.limit_items, init=args.init,
    )
    path = train(cfg)
    print(f"model saved to {path}")
    return 0
