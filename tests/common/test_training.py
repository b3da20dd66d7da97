"""The shared training loop on a tiny linear model: the warm-up schedule and clipping, validation
and checkpoint cadence, a resumed run matching an uninterrupted one, the time limit, the history
rows, and the resumable batch order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.schedule import warmup_lr_schedule
from common.training import (
    TrainRun,
    batch_stream,
    epoch_batches,
    fit,
    held_out,
    load_run_state,
    make_optimizer,
)

X = torch.linspace(-1, 1, 16).reshape(8, 2)
Y = X @ torch.tensor([[2.0], [-1.0]]) + 0.5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 1))


def _run(model: nn.Module, out, total: int = 10, **kw) -> TrainRun:
    opts = dict(out=out, total=total, lr=0.05, warmup=0.2, weight_decay=0.01, save_every=4)
    return TrainRun(model, **{**opts, **kw})


def _loss(model: nn.Module, run: TrainRun):
    def next_loss() -> torch.Tensor:
        i = run.step % 4
        return nn.functional.mse_loss(model(X[2 * i : 2 * i + 2]), Y[2 * i : 2 * i + 2])

    return next_loss


def test_optimizer_skips_decay_on_biases_and_norms():
    opt = make_optimizer(_model(), 0.1, 0.01)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [p.ndim for p in decay["params"]] == [2, 2]
    assert len(no_decay["params"]) == 4  # two biases, the LayerNorm's weight and bias


def test_fit_follows_the_schedule_validates_and_saves(tmp_path):
    model = _model()
    run = _run(model, tmp_path)
    lrs, validated = [], []
    real_update = run.update

    def update(loss, **postfix):
        lrs.append(warmup_lr_schedule(run.step, run.total, run.warm, run.lr))
        value = real_update(loss, **postfix)
        assert run.opt.param_groups[0]["lr"] == lrs[-1]
        return value

    run.update = update  # type: ignore[method-assign]
    fit(run, _loss(model, run), every=3, validate=lambda: validated.append(run.record({"score": 1.0})))
    assert run.step == 10 and len(run.losses) == 10 and run.warm == 2
    assert lrs[:2] == [0.025, 0.05] and lrs[-1] == pytest.approx(0.05 / 8)
    assert [r["step"] for r in validated] == [3, 6, 9, 10]  # every 3 steps and the last
    assert validated[1]["loss"] == round(sum(run.losses[3:6]) / 3, 4)  # mean since the previous row
    state = load_run_state(tmp_path)
    assert state is not None and state["step"] == 10 and state["history"] == run.history
    assert run.losses[-1] < run.losses[0]


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    straight = _model()
    run = _run(straight, tmp_path / "a")
    fit(run, _loss(straight, run), every=100)

    first = _model()
    run1 = _run(first, tmp_path / "b", max_minutes=0)  # stops (and saves) after one step
    fit(run1, _loss(first, run1), every=100)
    assert load_run_state(tmp_path / "b")["step"] == 1
    resumed = _model()
    run2 = _run(resumed, tmp_path / "b", state=load_run_state(tmp_path / "b"))
    run2.extra["note"] = "kept"
    fit(run2, _loss(resumed, run2), every=100)
    assert run2.losses == pytest.approx(run.losses)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b)
    assert load_run_state(tmp_path / "b")["extra"] == {"note": "kept"}


def test_moving_average_loss_and_counts_in_the_history(tmp_path):
    model = _model()
    run = _run(model, tmp_path, total=3, loss_ema=0.5)
    fit(run, _loss(model, run), every=3, validate=lambda: run.record({"f1": 0.5}, seen=12))
    a, b, c = run.losses
    (row,) = run.history
    assert list(row) == ["step", "seen", "loss", "minutes", "f1"]
    assert row["loss"] == round(0.5 * (0.5 * a + 0.5 * b) + 0.5 * c, 4) and row["seen"] == 12


def test_batch_stream_resumes_where_it_stopped():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    full = batch_stream(7, 3, seed=1, start_step=0, lengths=lengths)
    first = [next(full) for _ in range(8)]
    resumed = batch_stream(7, 3, seed=1, start_step=5, lengths=lengths)
    assert [next(resumed) for _ in range(3)] == first[5:]
    assert sorted(i for b in epoch_batches(7, 3, 1, 0) for i in b) == list(range(7))


def test_held_out_is_a_stable_share():
    keys = [f"key-{i}" for i in range(2000)]
    share = sum(held_out(k, 0.1) for k in keys) / len(keys)
    assert 0.07 < share < 0.13 and [held_out(k, 0.1) for k in keys] == [held_out(k, 0.1) for k in keys]
    assert not any(held_out(k, 0.0) for k in keys)
