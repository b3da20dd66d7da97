"""``attend generate`` and ``attend bench generate`` on a tiny checkpoint."""

from __future__ import annotations

import argparse
import json

import pytest
from toydata import tiny_decoder

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


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models gain nothing from threads (and OpenMP spin-waiting on 2 shared cores slows them)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_decoder(seed=30)
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


def _check_int8_figures(result: dict) -> None:
    for key in ("tokens_per_s_cached", "prefill_tokens_per_s", "reference_tokens_per_s", "ratio_vs_reference",
                "int8_logit_max_abs_err", "int8_logit_mean_abs_err", "int8_logit_rel_err", "weights_mb"):
        assert result[key] > 0, key
    assert 0.0 < result["int8_token_agreement"] <= 1.0
    assert result["int8_logit_rel_err"] < 0.5  # int8 weights, not garbage
    assert result["model"]["quant"] == "int8" and result["int8_kernel"]
    assert "dequantized int8" in result["environment"]["reference"]
    if result["ratio_vs_llama_cpp"] is None:
        assert result["llama_cpp_note"]
    else:
        assert result["ratio_vs_llama_cpp"] > 0 and result["llama_cpp_tokens_per_s"] > 0


def test_bench_generate_int8(tmp_path, capsys):
    pytest.importorskip("transformers")
    out_json = tmp_path / "bench.json"
    out = _run(["bench", "generate", "--preset", "tiny", "--quant", "int8", "--prompt-lens", "16", "--new-tokens", "4",
                "--uncached-tokens", "2", "--runs", "1", "--agreement-tokens", "4", "--json", str(out_json)], capsys)
    assert "int8 vs float: token agreement" in out
    result = json.loads(out_json.read_text())
    _check_int8_figures(result)
    assert "GGUF" in result["llama_cpp_note"]  # a preset has no GGUF file for llama.cpp
    assert result["int8_agreement_prompts"] == 8


def test_bench_generate_gguf_generator(tmp_path, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from gguf_fixture import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "tiny.gguf", seed=3, tied=True).path
    out_json = tmp_path / "bench.json"
    _run(["bench", "generate", "--generator", str(path), "--quant", "int8", "--prompt-lens", "12,20",
          "--new-tokens", "4", "--uncached-tokens", "2", "--runs", "1", "--agreement-tokens", "3",
          "--json", str(out_json)], capsys)
    result = json.loads(out_json.read_text())
    _check_int8_figures(result)
    assert result["model"]["generator"] == str(path) and result["model"]["gguf"] == str(path)
    assert result["headline_prompt_len"] == 20
    plain = tmp_path / "plain.json"
    _run(["bench", "generate", "--generator", str(path), "--prompt-lens", "12", "--new-tokens", "3",
          "--uncached-tokens", "2", "--runs", "1", "--no-llama-cpp", "--json", str(plain)], capsys)
    result = json.loads(plain.read_text())
    assert result["tokens_per_s_cached"] > 0 and result["ratio_vs_reference"] > 0
    assert result["int8_token_agreement"] is None and result["model"]["quant"] == "none"
    assert result["ratio_vs_llama_cpp"] is None and "--no-llama-cpp" in result["llama_cpp_note"]


def test_bench_rejects_bad_options():
    from common.errors import InvalidInput
    from eval.bench_generate import GenerateBenchConfig, run_generate_bench

    with pytest.raises(InvalidInput):
        run_generate_bench(GenerateBenchConfig(preset="tiny", prompt_lens=(8,), quant="int4", reference=False))
    with pytest.raises(InvalidInput):
        run_generate_bench(GenerateBenchConfig(checkpoint="x", generator="smollm2", prompt_lens=(8,), reference=False))


def test_bench_rejects_too_long_prompts():
    from common.errors import InvalidInput
    from eval.bench_generate import GenerateBenchConfig, run_generate_bench

    with pytest.raises(InvalidInput):
        run_generate_bench(GenerateBenchConfig(preset="tiny", prompt_lens=(250,), new_tokens=16, reference=False))


def test_generate_command_runs_a_gguf_chat_model(tiny_chat_gguf, capsys):
    from attend.commands import generate as generate_cmd
    from generator.chat_model import load_chat_model
    from generator.generate import generate

    chat = load_chat_model(str(tiny_chat_gguf))

    def run(argv):
        args = _parser(generate_cmd).parse_args(argv)
        assert args.func(args) == 0
        return capsys.readouterr().out

    ids = chat.encode(chat.render([{"role": "user", "content": "Where is Paris?"}]))
    expected = chat.decode(generate(chat.decoder, ids, max_new_tokens=6, stop_token_ids=chat.stop_ids).tokens[0])
    out = run(["generate", "Where is Paris?", "--checkpoint", str(tiny_chat_gguf), "--chat", "--max-new-tokens", "6"])
    assert out.rstrip("\n") == expected
