"""``attend bench qa``: SQuAD scoring with the model's threshold, and the threshold-free abstention
diagnostics (AUC of p(ABSTAIN), the oracle threshold)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from toydata import build_tiny_qa

from eval.bench_qa import QABenchConfig, abstain_auc, run_benchmark
from generator.calibrate import Scored

PARAS = [
    ("Volcanoes", "Volcanoes erupt when magma rises through the crust. Mount Etna erupted in 2021."),
    ("Rivers", "The Nile flows north into the Mediterranean Sea. It is about 6650 km long."),
]


def _write_v2(path: Path) -> Path:
    data = []
    for title, ctx in PARAS:
        word = ctx.split()[-1].rstrip(".")
        qas = [
            {"id": f"{title}-a", "question": f"What about {title}?", "is_impossible": False,
             "answers": [{"text": word, "answer_start": ctx.index(word)}]},
            {"id": f"{title}-n", "question": f"Who painted {title}?", "is_impossible": True, "answers": [],
             "plausible_answers": [{"text": word, "answer_start": ctx.index(word)}]},
        ]
        data.append({"title": title, "paragraphs": [{"context": ctx, "qas": qas}]})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def test_auc_counts_pairs_and_ties():
    def case(p, answerable):
        return Scored(p, 0.0, answerable, "gold")

    assert abstain_auc([case(0.9, False), case(0.1, True)]) == 1.0
    assert abstain_auc([case(0.1, False), case(0.9, True)]) == 0.0
    assert abstain_auc([case(0.5, False), case(0.5, True)]) == 0.5
    # 2 unanswerable x 2 answerable: 0.8 beats both, 0.3 beats 0.2 only -> 3/4
    assert abstain_auc([case(0.8, False), case(0.3, False), case(0.2, True), case(0.6, True)]) == 0.75
    assert abstain_auc([case(0.8, False)]) is None


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("bench_qa")
    return _write_v2(root / "toy-v2.json"), build_tiny_qa(root / "qa", minilm_dir)


def test_threshold_zero_abstains_everywhere_and_one_answers_everything(setup):
    data, model = setup
    never = run_benchmark(QABenchConfig(data=str(data), generator=str(model), abstain_threshold=1.01))
    always = run_benchmark(QABenchConfig(data=str(data), generator=str(model), abstain_threshold=0.0))
    assert always["answer_rate"] == 0.0 and always["no_ans_f1"] == 100.0 and always["has_ans_f1"] == 0.0
    assert always["f1"] == 50.0  # half the questions are unanswerable
    assert never["answer_rate"] == 1.0 and never["no_ans_f1"] == 0.0
    assert never["abstain_threshold"] == 1.01 and always["abstain_threshold"] == 0.0
    for r in (never, always):
        assert 0.0 <= r["abstain_auc"] <= 1.0
        # the oracle is at least as good as either fixed threshold, and the same for both runs
        assert r["oracle_f1"] >= max(never["f1"], always["f1"])
    assert never["oracle_f1"] == always["oracle_f1"] and never["abstain_auc"] == always["abstain_auc"]
    # the two articles fall in different folds: each is cut where the other one's questions say
    assert len(never["cross_thresholds"]) == 2 and never["cross_f1"] <= never["oracle_f1"]


def test_cli_writes_official_prediction_and_na_prob_files(setup, tmp_path, capsys):
    from attend.cli import main

    data, model = setup
    preds, na, out = tmp_path / "pred.json", tmp_path / "na.json", tmp_path / "r.json"
    rc = main(["bench", "qa", "--data", str(data), "--generator", str(model), "--abstain-threshold", "0.0",
               "--predictions", str(preds), "--na-probs", str(na), "--json", str(out)])
    assert rc == 0 and "oracle_f1" in capsys.readouterr().out
    ids = {"Volcanoes-a", "Volcanoes-n", "Rivers-a", "Rivers-n"}
    assert json.loads(preds.read_text()) == dict.fromkeys(ids, "")  # threshold 0: every answer abstains
    probs = json.loads(na.read_text())
    assert set(probs) == ids and all(0.0 <= p <= 1.0 for p in probs.values())
    assert json.loads(out.read_text())["f1"] == 50.0


def test_cli_rejects_a_negative_distractor_count(setup, capsys):
    from attend.cli import main

    data, model = setup
    rc = main(["bench", "qa", "--data", str(data), "--generator", str(model), "--distractors", "-1"])
    assert rc != 0 and "--distractors must be >= 0" in capsys.readouterr().err


def test_calibrating_on_labelled_questions_sets_the_cut_the_bench_scores(setup, tmp_path, capsys):
    from attend.cli import main

    data, model = setup
    copy, source_cfg = tmp_path / "qa", (model / "config.json").read_text()
    assert main(["train", "calibrate", "--model", str(model), "--out", str(copy), "--labeled", str(data)]) == 0
    assert (model / "config.json").read_text() == source_cfg  # --out calibrates a copy
    cal = json.loads(capsys.readouterr().out)
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["qa_config"]["abstain_threshold"] == cal["threshold"] and cfg["calibration"] == cal
    assert cal["negatives"] == "labeled" and cal["n_questions"] == 4
    assert cal["n_answerable"] == 2 and cal["n_unanswerable"] == 2
    bench = run_benchmark(QABenchConfig(data=str(data), generator=str(copy)))
    assert bench["abstain_threshold"] == round(cal["threshold"], 4)
    assert bench["f1"] == pytest.approx(cal["f1"], abs=0.01) == pytest.approx(bench["oracle_f1"], abs=0.01)


def test_labelled_calibration_without_unanswerable_questions_is_refused(setup, tmp_path, capsys):
    from attend.cli import main

    data, model = setup
    copy = tmp_path / "qa"
    shutil.copytree(model, copy)
    before = (copy / "config.json").read_text()
    v1 = json.loads(data.read_text())
    for article in v1["data"]:
        for para in article["paragraphs"]:
            para["qas"] = [q for q in para["qas"] if not q["is_impossible"]]
    answerable_only = tmp_path / "v1.json"
    answerable_only.write_text(json.dumps(v1))
    assert main(["train", "calibrate", "--model", str(copy), "--labeled", str(answerable_only)]) == 2
    assert "needs both answerable and unanswerable" in capsys.readouterr().err
    assert (copy / "config.json").read_text() == before  # nothing rewritten
    with pytest.raises(SystemExit):  # one source or the other
        main(["train", "calibrate", "--model", str(copy), "--labeled", str(data), "--data", str(data)])
    assert main(["train", "calibrate", "--model", str(model), "--out", str(copy), "--labeled", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_sweep_and_answerable_floor_agree_with_the_scored_run(setup):
    data, model = setup
    r = run_benchmark(QABenchConfig(data=str(data), generator=str(model), abstain_threshold=0.5, has_ans_floor=0.0, sweep=True))
    rows = {row["threshold"]: row for row in r["sweep"]}
    # the model's own cut is among the rows and scores exactly what the official scoring gave
    assert rows[0.5]["f1"] == r["f1"] and rows[0.5]["has_ans_f1"] == r["has_ans_f1"]
    assert rows[0.5]["no_ans_f1"] == r["no_ans_f1"] and rows[0.5]["answer_rate"] == r["answer_rate"]
    assert [row["threshold"] for row in r["sweep"]] == sorted(rows)
    assert all(a["answer_rate"] <= b["answer_rate"] for a, b in zip(r["sweep"], r["sweep"][1:], strict=False))  # higher cut answers more
    # a floor of 0 constrains nothing: the plain oracle
    assert r["floor_oracle_f1"] == r["oracle_f1"] and r["floor_cross_f1"] == r["cross_f1"]
    # the highest floor any cut keeps is what answering everything earns (the top row); above it, none
    top = max(row["has_ans_f1"] for row in r["sweep"])
    assert top == r["sweep"][-1]["has_ans_f1"] < 100.0  # the tiny model misses some answers
    capped = run_benchmark(QABenchConfig(data=str(data), generator=str(model), has_ans_floor=top))
    assert capped["floor_oracle_f1"] is not None and capped["floor_oracle_f1"] <= capped["oracle_f1"]
    above = run_benchmark(QABenchConfig(data=str(data), generator=str(model), has_ans_floor=min(100.0, top + 1)))
    assert above["floor_oracle_f1"] is None and above["floor_cross_f1"] is None and above["f1"] == capped["f1"]


def test_cli_floor_must_be_on_the_f1_scale(setup, capsys):
    from attend.cli import main

    data, model = setup
    rc = main(["bench", "qa", "--data", str(data), "--generator", str(model), "--has-ans-floor", "120"])
    assert rc == 2 and "0-100 scale" in capsys.readouterr().err


def test_labelled_calibration_keeps_an_answerable_floor(setup, tmp_path, capsys):
    from attend.cli import main

    data, model = setup
    free, floored, high = tmp_path / "free", tmp_path / "floored", tmp_path / "high"
    assert main(["train", "calibrate", "--model", str(model), "--out", str(free), "--labeled", str(data)]) == 0
    unconstrained = json.loads(capsys.readouterr().out)
    assert main(["train", "calibrate", "--model", str(model), "--out", str(floored), "--labeled", str(data),
                 "--has-ans-floor", "0"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["has_ans_floor"] == 0.0 and cal["threshold"] == unconstrained["threshold"] and cal["f1"] == unconstrained["f1"]
    assert json.loads((floored / "config.json").read_text())["calibration"]["has_ans_floor"] == 0.0
    # above what answering every question earns, no cut keeps the floor: an error, and no copy written
    never = run_benchmark(QABenchConfig(data=str(data), generator=str(model), abstain_threshold=1.01))
    assert never["has_ans_f1"] < 100.0
    rc = main(["train", "calibrate", "--model", str(model), "--out", str(high), "--labeled", str(data),
               "--has-ans-floor", str(min(100.0, never["has_ans_f1"] + 1))])
    assert rc == 2 and "no threshold keeps answerable F1" in capsys.readouterr().err and not high.exists()
