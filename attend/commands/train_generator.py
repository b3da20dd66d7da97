"""``attend train generator``: train the grounded QA generator on SQuAD-format data."""

from __future__ import annotations

import argparse
import json

# generator.unanswerable.NEGATIVES, spelled out: importing it compiles that module's regexes, 10 ms on
# every `attend` start
_NEGATIVES = ("squad2", "uniform")


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
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 autocasts matmuls (about 1.45x faster on CPUs with AVX-512 BF16 or AMX, far slower on CPUs without: a warning says so); weights stay fp32")
    p.add_argument("--warmup", type=float, default=0.06, help="share of steps for linear warm-up")
    p.add_argument("--mix", default=None, help='JSON of QAMix fields, e.g. \'{"multi": 0.3}\'')
    p.add_argument("--limit-items", type=int, default=None, help="use only the first N questions (smoke runs)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from a saved QA model (name or directory) instead of warm-starting from --base")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="do not train: write the model in OUT/checkpoint.pt (e.g. mid-run) to DIR and exit")
    p.add_argument("--calibrate-examples", type=int, default=400,
                   help="held-out questions used to calibrate the abstain threshold after training (0: keep 0.5)")
    p.add_argument("--calibrate-negatives", choices=_NEGATIVES, default="squad2",
                   help="how the unanswerable calibration cases are drawn: in SQuAD 2.0's category shares (default) or uniformly among the kinds")
    p.add_argument("--mine-negatives", type=int, default=1, metavar="K",
                   help="make each rule-made unanswerable example the hardest of K candidate rewrites, scored by the "
                   "model being trained (adversarial filtering; about 1.25x the step time at K=4). Default 1: no mining")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.set_defaults(func=run)

    c = parsers.train.add_parser(
        "calibrate",
        help="calibrate a QA model's abstain threshold on held-out training articles or on labelled questions",
        description="With --data: run the model on held-out articles of its training data (the same article split as "
        "training), each question with its gold paragraph and with an unsupported case (answer "
        "sentences removed, another paragraph of the article, or the question rewritten by rule so the "
        "paragraph no longer answers it). With --labeled: run it on your own labelled questions (SQuAD 2.0 "
        "format, unanswerable ones marked is_impossible), each over its own paragraph; rule-made negatives "
        "are easier than questions people write, so labelled questions from your domain set a better cut. "
        "Either way the abstain threshold that maximises mean F1 is kept and MODEL/config.json rewritten. "
        "Never calibrate on the questions you report figures on.",
    )
    c.add_argument("--model", default="attend-qa", help="QA model name or directory")
    c.add_argument("--out", metavar="DIR", default=None,
                   help="calibrate a copy written to DIR (a new directory) and leave MODEL as it is")
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="the SQuAD-format training file the model was trained on")
    source.add_argument("--labeled", metavar="FILE", help="labelled questions in SQuAD 2.0 format, both answerable and unanswerable")
    c.add_argument("--examples", type=int, default=None,
                   help="questions used: held-out ones with --data (default 400, twice as many cases), a seeded draw with --labeled (default all)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--negatives", choices=_NEGATIVES, default="squad2",
                   help="with --data: draw each question's unanswerable kind in SQuAD 2.0's category shares (negation 9%%, antonym 20%%, "
                   "entity swap 21%%, mutual exclusion and other neutral 39%%, impossible condition 4%%, other 7%%; default) "
                   "or uniformly among the kinds that apply")
    c.add_argument("--has-ans-floor", type=float, default=None, metavar="F1",
                   help="keep F1 on the answerable questions at or above F1 (0-100): the best cut among those that refuse "
                   "few enough answerable questions (e.g. 60); an error if no cut can")
    c.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from generator.train_qa import calibrate_labeled_saved, calibrate_saved

    if args.examples is not None and args.examples < 1:
        raise SystemExit("attend: error: --examples must be at least 1")
    floor = args.has_ans_floor
    if args.labeled:
        cal = calibrate_labeled_saved(args.model, args.labeled, n=args.examples, seed=args.seed, out=args.out, has_ans_floor=floor)
    else:
        cal = calibrate_saved(args.model, args.data, n=args.examples or 400, seed=args.seed, negatives=args.negatives, out=args.out,
                              has_ans_floor=floor)
    print(json.dumps(cal, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    from eval.squad import squad_scores
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
        precision=args.precision, warmup=args.warmup, calibrate_examples=args.calibrate_examples,
        calibrate_negatives=args.calibrate_negatives, mine_negatives=args.mine_negatives,
        device=args.device,
    )
    path = train(cfg, score_answers=squad_scores)
    print(f"model saved to {path}")
    return 0
