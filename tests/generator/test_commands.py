"""``attend generate`` and ``attend bench generate`` on a tiny checkpoint."""

from __future__ import annotations

import argparse
import json

import pytest

from attend.cli import Parsers
from generator.checkpoint import save_pretrained
from generator.generate import generate


def _parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    top = parser.add_subparsers()
    bench = top.add_parser("bench").add_subparsers()
    train = top.add_parser("train").add_subparsers()
    module.register(Parsers(top=top, bench=bench, train=train))
    return parser


def _word_tokenizer():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import pre_tokenizers
    from tokenizers.models import WordLevel

    from retriever.tokenizer import Tokenizer

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 128)}}
    backend = HFTokenizer(WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend)


@pytest.fixture
def checkpoint(tmp_path, make_tiny):
    model = make_tiny(seed=30)
    return save_pretrained(model, tmp_path / "ckpt", tokenizer=_word_tokenizer()), model


def _run(argv, capsys):
    from attend.commands import bench_generate
    from attend.commands import generate as generate_cmd

    module = bench_generate if argv[0] == "bench" else generate_cmd
    args = _parser(module).parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_generate_command(checkpoint, capsys):
    path, model = checkpoint
    tok = _word_tokenizer()
    expected = tok.decode(generate(model, tok.encode("w5 w6 w7").ids, max_new_tokens=6).tokens[0])
    out = _run(["generate", "w5 w6 w7", "--checkpoint", str(path), "--max-new-tokens", "6"], capsys)
    assert out.strip() == expected and len(expected.split()) == 6
    streamed = _run(["generate", "w5 w6 w7", "--checkpoint", str(path), "--max-new-tokens", "6", "--stream"], capsys)
    assert streamed.strip().split() == expected.split()
    sampled = ["generate", "w5 w6 w7", "--checkpoint", str(path), "--max-new-tokens", "8",
               "--temperature", "1.0", "--top-k", "20", "--seed", "4"]
    assert _run(sampled, capsys) == _run(sampled, capsys)


def test_bench_generate_command(tmp_path, capsys):
    pytest.importorskip("transformers")
    out_json = tmp_path / "bench.json"
    out = _run(["bench", "generate", "--preset", "tiny", "--prompt-lens", "8,24", "--new-tokens", "4",
                "--uncached-tokens", "3", "--runs", "1", "--json", str(out_json)], capsys)
    assert "transformers.generate" in out
    result = json.loads(out_json.read_text())
    for key in ("tokens_per_s_cached", "tokens_per_s_uncached", "cache_speedup", "reference_tokens_per_s",
                "ratio_vs_reference", "prefill_tokens_per_s"):
        assert result[key] > 0, key
    assert [r["prompt_len"] for r in result["per_length"]] == [8, 24]
    assert result["headline_prompt_len"] == 24


def test_bench_rejects_too_long_prompts():
    from attend.errors import InvalidInput
    from eval.bench_generate import GenerateBenchConfig, run_generate_bench

    with pytest.raises(InvalidInput):
        run_generate_bench(GenerateBenchConfig(preset="tiny", prompt_lens=(250,), new_tokens=16, reference=False))
