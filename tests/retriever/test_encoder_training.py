"""What the encoder trainers share: the masked InfoNCE loss, the step count and the model card."""

from __future__ import annotations

import pytest
import torch

from common.errors import InvalidInput
from retriever.encoder_training import LoopConfig, info_nce, write_model_card


def test_info_nce_mask_removes_duplicate_positive():
    torch.manual_seed(0)
    q, k = torch.randn(2, 8), torch.randn(3, 8)
    dup = torch.cat([k, k[:1]])  # key 3 is another copy of row 0's positive
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 3] = True
    masked = info_nce(q, dup, 20.0, mask)
    row1_only_sees_duplicate = torch.nn.functional.cross_entropy(
        20.0 * torch.nn.functional.normalize(q[1:]) @ torch.nn.functional.normalize(dup).T, torch.tensor([1]))
    row0 = torch.nn.functional.cross_entropy(
        20.0 * torch.nn.functional.normalize(q[:1]) @ torch.nn.functional.normalize(k).T, torch.tensor([0]))
    assert masked.item() == pytest.approx(((row0 + row1_only_sees_duplicate) / 2).item(), rel=1e-5)


def test_total_steps_and_option_checks(tmp_path):
    cfg = LoopConfig(out=str(tmp_path), batch_size=3, epochs=2)
    assert cfg.total_steps(7) == (6, 3)
    assert LoopConfig(out=str(tmp_path), batch_size=3, steps=5).total_steps(7) == (5, 3)
    with pytest.raises(InvalidInput, match="precision"):
        LoopConfig(out=str(tmp_path), precision="fp16").check()
    with pytest.raises(InvalidInput, match="warmup"):
        LoopConfig(out=str(tmp_path), warmup=1.0).check()


def test_model_card_lists_facts_and_history(tmp_path):
    path = write_model_card(tmp_path, "Title", "What it is.", {"steps": "3 of 3"}, [{"step": 3, "ndcg@10": 0.5}])
    text = path.read_text()
    assert text.startswith("# Title\n") and "| steps | 3 of 3 |" in text and '{"step": 3, "ndcg@10": 0.5}' in text
