from __future__ import annotations

import pytest
import torch

from common.errors import InvalidInput
from retriever.pooling import PoolingConfig, pool, pool_and_normalize


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 4, 3, generator=g)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    hidden[1, 2:] = 100.0  # padding garbage that must not leak into mean or max
    return hidden, mask


def test_mean_max_cls_ignore_padding():
    hidden, mask = _inputs()
    torch.testing.assert_close(pool(hidden, mask, "mean")[1], hidden[1, :2].mean(0))
    torch.testing.assert_close(pool(hidden, mask, "mean")[0], hidden[0].mean(0))
    torch.testing.assert_close(pool(hidden, mask, "max")[1], hidden[1, :2].max(0).values)
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])


def test_normalize_flag_and_override():
    hidden, mask = _inputs()
    cfg = PoolingConfig(mode="mean", normalize=True)
    assert torch.allclose(pool_and_normalize(hidden, mask, cfg).norm(dim=-1), torch.ones(2))
    raw = pool_and_normalize(hidden, mask, cfg, normalize=False)
    torch.testing.assert_close(raw, pool(hidden, mask, "mean"))


def test_st_config_round_trip():
    for mode in ("mean", "cls", "max"):
        cfg = PoolingConfig(mode=mode, normalize=False)
        assert PoolingConfig.from_st_config(cfg.to_st_config(8), normalize=False) == cfg


@pytest.mark.parametrize(
    "d",
    [
        {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},
        {"pooling_mode_mean_sqrt_len_tokens": True},
        {},
    ],
)
def test_st_config_needs_exactly_one_supported_mode(d):
    with pytest.raises(InvalidInput):
        PoolingConfig.from_st_config(d, normalize=True)


def test_unknown_mode_raises():
    with pytest.raises(InvalidInput):
        PoolingConfig(mode="sum")
    hidden, mask = _inputs()
    with pytest.raises(InvalidInput):
        pool(hidden, mask, "sum")
