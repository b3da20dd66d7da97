"""The diagnosis reports: the HTML heat map over a 2,000-token context (self-contained, every chunk
and selector present, rendered by headless Chromium where installed), the PNG, and ``attend
diagnose`` writing both."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import TOY_DOCS, build_tiny_qa

from attend.cli import main
from eval.diagnose_report import attention_views, render_html, write_html, write_png
from generator.diagnosis import Diagnosis, diagnose_answer

CHROMIUM = "/usr/bin/chromium"
WORDS = ("volcano magma crust mantle lava basalt plate fault quake ash cone vent crater island ocean ridge "
         "glacier river delta canyon desert dune forest meadow tundra reef coral lagoon harbour cliff").split()


def long_text(seed: int, words: int = 200) -> str:
    rng = np.random.default_rng(seed)
    sentences, n = [], 0
    while n < words:
        k = int(rng.integers(6, 14))
        sentences.append(" ".join(rng.choice(WORDS, k)).capitalize() + ".")
        n += k
    return " ".join(sentences)


@pytest.fixture(scope="module")
def long_diagnosis(minilm_dir) -> Diagnosis:
    """A diagnosis over a ~2,000-token context (a tiny random model with a long position table):
    nine long chunks fit the budget, a near-copy of the first is cut as a duplicate and two more
    are cut for the budget."""
    from generator.answer import Answerer, candidates_from_hits
    from generator.config import DecoderConfig
    from generator.model import Decoder
    from generator.prompt import PromptBuilder
    from generator.qa_model import GroundedQA, QAConfig
    from retriever.hybrid import Hit
    from retriever.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(minilm_dir)
    cfg = DecoderConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, intermediate_size=64,
                        max_seq_len=2304, norm="layer", norm_placement="post", mlp="gelu", activation="gelu",
                        positions="learned", qkv_bias=True, out_bias=True, mlp_bias=True, final_norm=False,
                        tie_word_embeddings=True)
    torch.manual_seed(0)
    model = GroundedQA(Decoder(cfg), QAConfig(pointer_dim=16, max_answer_tokens=8)).eval()
    with torch.no_grad():  # sharpen the random attention so the heat map has contrast
        model.decoder.tok_embeddings.weight.mul_(25.0)
        model.decoder.pos_embeddings.weight.mul_(25.0)
        for layer in model.decoder.layers:
            layer.attention.wqkv.weight.mul_(40.0)
    texts = [long_text(i) for i in range(11)]
    texts.insert(1, texts[0] + " Again.")
    hits = [Hit(rank=i + 1, chunk_id=10 + i, doc_id=f"doc{i}", title=f"Doc {i}", text=t, char_start=0,
                char_end=len(t), metadata={}, scores={"bm25": 9.0 - i * 0.5, "dense": 0.8 - i * 0.05,
                                                     "fused": 1.0 / (61 + i)})
            for i, t in enumerate(texts)]
    answerer = Answerer(model, PromptBuilder(tok))
    result = answerer.answer("where does the magma rise", candidates_from_hits(hits), budget=2150,
                             abstain_threshold=1.0)
    return diagnose_answer(answerer, "where does the magma rise", hits, result, expected_doc_id="doc4")


def test_long_diagnosis_shape(long_diagnosis):
    d = long_diagnosis
    assert 1900 <= d.prompt_tokens <= 2150
    reasons = [c.cut_reason for c in d.chunks if not c.in_context]
    assert "duplicate" in reasons and "budget" in reasons
    assert d.verdict in ("used", "ignored") and d.token_attention is not None
    assert d.token_attention.shape == (2, 4, d.prompt_tokens)
    assert np.allclose(d.token_attention.sum(-1), 1.0)


def test_html_is_self_contained_and_complete(long_diagnosis, tmp_path):
    d = long_diagnosis
    path = write_html(d, tmp_path / "report.html")
    text = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched
    assert "@import" not in text and "url(" not in text
    layer = re.search(r'<select id="layer">(.*?)</select>', text).group(1)  # type: ignore[union-attr]
    head = re.search(r'<select id="head">(.*?)</select>', text).group(1)  # type: ignore[union-attr]
    assert layer.count("<option") == d.n_layers + 1 and "all (mean)" in layer
    assert head.count("<option") == d.n_heads + 1
    for c in d.chunks:
        assert f'data-chunk-id="{c.chunk_id}"' in text
    n_tokens = sum(c.n_tokens for c in d.chunks if c.in_context)
    assert text.count('<span class="t') == n_tokens
    data = json.loads(re.search(r'id="diag-data">(.*?)</script>', text, re.S).group(1))  # type: ignore[union-attr]
    assert len(data["views"]) == (d.n_layers + 1) * (d.n_heads + 1)
    mean = data["views"]["all,all"]
    assert mean["shares"] == pytest.approx([c.share_all_layers for c in d.in_context], abs=1e-5)
    last = data["views"][f"{d.n_layers - 1},all"]  # the aggregate share is the last layer's
    assert last["shares"] == pytest.approx([c.share for c in d.in_context], abs=1e-5)
    import base64

    q = np.frombuffer(base64.b64decode(mean["q"]), dtype=np.uint8)
    assert q.size == n_tokens and q.max() == 255
    # a 2,000-token context with 12 layers x 12 heads stays a sane size
    big = dataclasses.replace(d, n_layers=12, n_heads=12,
                              token_attention=np.random.default_rng(0).dirichlet(np.ones(d.prompt_tokens), (12, 12)))
    assert len(attention_views(big)) == 13 * 13
    assert len(render_html(big).encode()) < 1_000_000


def test_png_heat_map(long_diagnosis, tmp_path):
    import matplotlib.image as mpimg

    path = write_png(long_diagnosis, tmp_path / "heat.png")
    img = mpimg.imread(path)
    rows = len(long_diagnosis.chunks)
    assert img.shape[1] > 1000 and img.shape[0] > 100 + 20 * rows
    rgb = img[..., :3].reshape(-1, 3)
    reds = rgb[:, 0] - rgb[:, 1] > 0.25
    assert reds.mean() > 0.01  # the heat map, not an empty frame
    assert len(np.unique(np.round(rgb[reds] * 255), axis=0)) > 20  # shades, not one flat colour


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


needs_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is not installed (Debian package chromium)")


@needs_chromium
def test_chromium_renders_the_report(long_diagnosis, tmp_path):
    import matplotlib.image as mpimg

    html_path = write_html(long_diagnosis, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    proc = _chromium([f"--screenshot={shot}", "--window-size=1200,1600", html_path.resolve().as_uri()], tmp_path)
    assert shot.is_file(), proc.stderr[-2000:]
    img = mpimg.imread(shot)
    assert img.shape[:2] == (1600, 1200)
    rgb = np.round(img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50  # text, table and shading: not a blank page
    shaded = (rgb[:, 0].astype(int) - rgb[:, 1] > 40) & (rgb[:, 0] > 150)
    assert shaded.mean() > 0.01  # the script ran and painted the heat map


@needs_chromium
def test_chromium_dom_has_selectors_chunks_and_painted_tokens(long_diagnosis, tmp_path):
    d = long_diagnosis
    html_path = write_html(d, tmp_path / "report.html")
    proc = _chromium(["--dump-dom", html_path.resolve().as_uri()], tmp_path)
    dom = proc.stdout
    assert "</html>" in dom, proc.stderr[-2000:]
    layer = re.search(r'<select id="layer">(.*?)</select>', dom, re.S).group(1)  # type: ignore[union-attr]
    head = re.search(r'<select id="head">(.*?)</select>', dom, re.S).group(1)  # type: ignore[union-attr]
    assert layer.count("<option") == d.n_layers + 1 and head.count("<option") == d.n_heads + 1
    found = re.findall(r'<div class="chunk [^"]*" data-chunk-id="(\d+)"', dom)
    in_context = [str(c.chunk_id) for c in d.in_context]
    assert found[: len(in_context)] == in_context  # context order first, then the cut ones
    assert sorted(found) == sorted(str(c.chunk_id) for c in d.chunks)
    n_tokens = sum(c.n_tokens for c in d.in_context)
    assert len(re.findall(r'<span class="t[^"]*"[^>]* style="background-color: rgba?\(', dom)) == n_tokens
    assert len(re.findall(r'<td class="share-view" data-ci="\d+">0\.\d{4}</td>', dom)) == len(in_context)


# --- the command ------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path, minilm_dir, monkeypatch):
    from common.settings import get_settings

    for key in list(__import__("os").environ):
        if key.startswith("ATTEND_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ATTEND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATTEND_GENERATOR", str(build_tiny_qa(tmp_path / "tiny_qa", minilm_dir)))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_diagnose_writes_html_png_and_json(env, capsys):
    from common.settings import get_settings
    from engine import engine_session

    with engine_session(get_settings()) as engine:
        engine.create_collection("toy")
        engine.upsert_documents("toy", TOY_DOCS)
    html_path, png_path = env / "out" / "d.html", env / "out" / "d.png"
    argv = ["diagnose", "-c", "toy", "why do volcanoes erupt", "--k", "4", "--expected-doc", "d3",
            "--html", str(html_path), "--png", str(png_path)]
    assert main([*argv, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["verdict"] in ("used", "ignored") and body["expected_doc_id"] == "d3"
    assert len(body["chunks"]) == 4 and sum(c["expected"] for c in body["chunks"]) == 1
    text = html_path.read_text()
    assert "Attention diagnosis" in text and "why do volcanoes erupt" in text
    for c in body["chunks"]:
        assert f'data-chunk-id="{c["chunk_id"]}"' in text
    assert png_path.stat().st_size > 5_000
    # the table form, with an answer expected instead of a document
    assert main(["diagnose", "-c", "toy", "why do volcanoes erupt", "--k", "1", "--mode", "bm25",
                 "--expected-answer", "croissants"]) == 0
    assert "expected chunk: not_retrieved" in capsys.readouterr().out
