"""``attend bench durability`` end to end on SQLite: a real server is SIGKILLed under concurrent
inserts and deletes twice, and every acknowledged write survives each restart."""

from __future__ import annotations

import pytest

from attend.cli import main
from common.errors import InvalidInput
from eval.bench_durability import DurabilityConfig, codeword, run_durability_bench


def test_two_rounds_on_sqlite_lose_nothing():
    result = run_durability_bench(DurabilityConfig(rounds=2, clients=2, kill_after=(0.5, 1.0), seed=1))
    for key in ("rounds", "acknowledged", "acknowledged_deletes", "lost", "resurrected", "unsearchable",
                "database", "seconds", "per_round"):
        assert key in result
    assert result["rounds"] == 2 and len(result["per_round"]) == 2
    assert result["acknowledged"] > 0
    assert (result["lost"], result["resurrected"], result["unsearchable"]) == (0, 0, 0), result["findings"]
    assert result["errors"] == 0, result["error_samples"]


def test_zero_rounds_is_a_clear_error(capsys):
    with pytest.raises(InvalidInput, match="rounds must be at least 1"):
        run_durability_bench(DurabilityConfig(rounds=0))
    assert main(["bench", "durability", "--rounds", "0"]) == 2
    assert "rounds must be at least 1" in capsys.readouterr().err


def test_codewords_are_distinct_letters():
    words = [codeword(i) for i in range(2000)]
    assert len(set(words)) == len(words) and all(w.isalpha() for w in words)
