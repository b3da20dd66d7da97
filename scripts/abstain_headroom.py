"""How much better must abstention *ranking* get before a cut meets a given answerable-F1 floor
and an overall F1 target? A what-if on one ``attend bench qa`` run, no model needed.

Run the bench once with abstention off and its per-question files written::

    attend bench qa --data dev-v2.0.json --limit 1000 --abstain-threshold 1.01 \\
        --predictions pred.json --na-probs na.json
    python scripts/abstain_headroom.py --data dev-v2.0.json --limit 1000 \\
        --predictions pred.json --na-probs na.json --has-ans-floor 60

Each unanswerable question's abstain logit is raised by delta (answerable ones keep theirs) and the
best F1 any cut reaches under the floor is printed with the AUC that ranking has: the separation
the model would need, in nats, for the target to be reachable at all.
"""

from __future__ import annotations

import argparse
import json
import math

from common.squad import f1_score, gold_answers, load_squad, sample_examples
from eval.bench_qa import abstain_auc
from generator.calibrate import FloorUnreachable, Scored, best_threshold


def shifted(cases: list[Scored], delta: float) -> list[Scored]:
    def up(p: float) -> float:
        p = min(max(p, 1e-7), 1 - 1e-7)
        return 1 / (1 + math.exp(-(math.log(p / (1 - p)) + delta)))

    return [c if c.answerable else Scored(up(c.abstain_prob), 0.0, False, c.kind) for c in cases]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predictions", required=True, help="attend bench qa --predictions, run with --abstain-threshold 1.01")
    ap.add_argument("--na-probs", required=True)
    ap.add_argument("--has-ans-floor", type=float, default=60.0)
    ap.add_argument("--deltas", default="0,0.25,0.5,0.75,1,1.5,2")
    args = ap.parse_args()
    chosen = sample_examples(load_squad(args.data), args.limit, args.seed)
    preds = json.load(open(args.predictions))
    na = json.load(open(args.na_probs))
    cases = [Scored(na[e.qid], 0.0 if e.is_impossible else f1_score(preds[e.qid], gold_answers(e)), not e.is_impossible, "gold")
             for e in chosen]
    print(f"{'delta':>6} {'auc':>6} {'best f1':>8} {'floor f1':>9} {'cut':>7}")
    for delta in (float(d) for d in args.deltas.split(",")):
        moved = shifted(cases, delta)
        best = best_threshold(moved)
        try:
            floor = best_threshold(moved, has_ans_floor=args.has_ans_floor)
            floor_f1, cut = f"{floor.f1:.2f}", f"{floor.threshold:.4f}"
        except FloorUnreachable:
            floor_f1, cut = "-", "-"
        print(f"{delta:>6g} {abstain_auc(moved):>6.3f} {best.f1:>8.2f} {floor_f1:>9} {cut:>7}")


if __name__ == "__main__":
    main()
