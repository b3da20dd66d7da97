"""Reports of a :class:`generator.diagnosis.Diagnosis`: a self-contained HTML heat map and a static PNG.

The HTML file has no external resources (inline CSS and JS, no network). The chunks of the context
are shown in prompt order, then the cut ones greyed; each token of a context chunk is shaded by the
attention the answer steps give it. Two selectors pick the layer and the head ("all (mean)" or one
index each); every combination is precomputed in Python. Each view's per-token weights (context
chunk tokens only) are quantised to one byte relative to the view's maximum and embedded as
base64, so a 2,000-token context with 12 layers and 12 heads stays under about 0.5 MB. Shading is
proportional to sqrt(weight / max) so that small weights stay visible.

The PNG (matplotlib, Agg) shows the mean weights, one row per chunk (same square-root shading),
for use without a browser.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from eval.report import atomic_write_text
from generator.diagnosis import ChunkDiagnosis, Diagnosis

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:20px;margin:0 0 8px}
.meta p{margin:4px 0}
.verdict{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;color:#fff}
.v-used{background:#1a7f37}.v-ignored{background:#bf8700}.v-cut{background:#6e7781}.v-not_retrieved{background:#cf222e}
#controls{margin:14px 0;padding:8px 10px;background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px}
#controls label{margin-right:16px}
.legend{color:#57606a;font-size:12px}
table{border-collapse:collapse;margin:10px 0 18px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right}
th{background:#f6f8fa}td.l{text-align:left}
tr.cut td{color:#8c959f}
.chunk{border:1px solid #d0d7de;border-radius:6px;margin:10px 0;padding:8px 10px}
.chunk.expected{border:2px solid #0969da}
.chunk.cut{background:#f6f8fa;color:#8c959f}
.chunk-head{font-size:12px;color:#57606a;margin-bottom:4px}
.chunk-body{white-space:pre-wrap;word-wrap:break-word}
.t{border-radius:2px}
.t.ans{outline:2px solid #0969da;outline-offset:-1px}
"""

_JS = """
(function(){
  var D = JSON.parse(document.getElementById('diag-data').textContent);
  var spans = document.querySelectorAll('#chunks span.t');
  var layer = document.getElementById('layer'), head = document.getElementById('head');
  function bytes(b64){var s=atob(b64),a=new Uint8Array(s.length);for(var i=0;i<s.length;i++)a[i]=s.charCodeAt(i);return a;}
  var cache = {};
  function paint(){
    var key = layer.value + ',' + head.value, v = D.views[key];
    if(!v) return;
    var q = cache[key] || (cache[key] = bytes(v.q));
    for(var i=0;i<spans.length;i++){
      var x = q[i] / 255;
      spans[i].style.backgroundColor = 'rgba(207,34,46,' + Math.sqrt(x).toFixed(3) + ')';
      spans[i].title = 'weight ' + (x * v.max).toExponential(2);
    }
    var cells = document.querySelectorAll('td.share-view');
    for(var j=0;j<cells.length;j++){
      var ci = +cells[j].getAttribute('data-ci');
      cells[j].textContent = v.shares[ci].toFixed(4);
    }
    document.getElementById('view-name').textContent =
      (layer.value === 'all' ? 'all layers' : 'layer ' + layer.value) + ', ' +
      (head.value === 'all' ? 'all heads' : 'head ' + head.value);
  }
  layer.addEventListener('change', paint);
  head.addEventListener('change', paint);
  paint();
})();
"""


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "" if v is None else format(v, spec)


def attention_views(diag: Diagnosis) -> dict[str, dict[str, Any]]:
    """Every (layer, head) view of the per-token weights of the context chunks, keyed
    ``"<layer>,<head>"`` with ``all`` for the mean: ``max`` (the largest weight), ``q`` (base64 of
    one byte per token, ``round(255 * weight / max)``, in context order) and ``shares`` (each
    context chunk's share in that view)."""
    if diag.token_attention is None or diag.prompt is None:
        return {}
    att = np.asarray(diag.token_attention, dtype=np.float64)  # (L, H, P)
    spans = [diag.prompt.chunk_spans[c.context_index] for c in diag.in_context]  # type: ignore[index]
    idx = np.concatenate([np.arange(s, e) for s, e in spans]) if spans else np.zeros(0, dtype=int)
    n_layers, n_heads = att.shape[:2]
    views: dict[str, dict[str, Any]] = {}
    for li in ["all", *range(n_layers)]:
        for hi in ["all", *range(n_heads)]:
            w = att if li == "all" else att[li : li + 1]
            w = w if hi == "all" else w[:, hi : hi + 1]
            row = w.mean(axis=(0, 1))  # (P,)
            sel = row[idx]
            top = float(sel.max()) if sel.size else 0.0
            q = np.zeros(sel.shape, dtype=np.uint8) if top <= 0 else np.rint(255 * sel / top).astype(np.uint8)
            views[f"{li},{hi}"] = {
                "max": top,
                "q": base64.b64encode(q.tobytes()).decode("ascii"),
                "shares": [round(float(row[s:e].sum()), 6) for s, e in spans],
            }
    return views


def _chunk_head(c: ChunkDiagnosis) -> str:
    sc = c.scores
    parts = [f"#{c.rank}", html.escape(c.doc_id), f"chunk {c.chunk_id}"]
    if c.title:
        parts.append(html.escape(c.title))
    parts.append("scores " + ", ".join(f"{k} {_fmt(sc.get(k))}" for k in ("bm25", "dense", "fused")))
    if c.in_context:
        parts.append(f"share {_fmt(c.share)} vs uniform {_fmt(c.uniform_share)} ({c.n_tokens} tokens)")
        if c.truncated:
            parts.append("truncated")
    else:
        parts.append(f"cut: {html.escape(c.cut_reason or '')}")
    tags = [f'<span class="verdict v-{c.verdict}">{c.verdict}</span>']
    if c.expected:
        tags.append("<b>expected</b>")
    if c.most_attended:
        tags.append("<b>most attended</b>")
    return " · ".join(parts) + " " + " ".join(tags)


def _chunk_div(diag: Diagnosis, c: ChunkDiagnosis) -> str:
    classes = ["chunk", "kept" if c.in_context else "cut"]
    if c.expected:
        classes.append("expected")
    attrs = (f'class="{" ".join(classes)}" data-chunk-id="{c.chunk_id}" data-rank="{c.rank}" '
             f'data-verdict="{c.verdict}"')
    if c.in_context:
        a0, a1 = diag.answer_token_span or (-1, -2)
        pieces = "".join(
            f'<span class="t{" ans" if a0 <= t <= a1 else ""}">{html.escape(piece)}</span>'
            for t, piece in diag.chunk_pieces(c)
        )
        attrs += f' data-context-index="{c.context_index}"'
    else:
        pieces = html.escape(c.text)
        attrs += f' data-reason="{html.escape(c.cut_reason or "")}"'
    return f'<div {attrs}><div class="chunk-head">{_chunk_head(c)}</div><div class="chunk-body">{pieces}</div></div>'


def _table(diag: Diagnosis) -> str:
    cols = ["rank", "doc", "chunk", "bm25", "dense", "fused", "status", "share (view)", "share (mean)",
            "uniform", "share/uniform", "verdict"]
    rows = []
    order = diag.in_context + [c for c in diag.chunks if not c.in_context]
    for c in order:
        status = "in context" + (" (truncated)" if c.truncated else "") if c.in_context else f"cut: {c.cut_reason}"
        view = f'<td class="share-view" data-ci="{c.context_index}"></td>' if c.in_context else "<td></td>"
        flags = (" ★" if c.most_attended else "") + (" (expected)" if c.expected else "")
        rows.append(
            f'<tr class="{"kept" if c.in_context else "cut"}"><td>{c.rank}</td><td class="l">{html.escape(c.doc_id)}</td>'
            f"<td>{c.chunk_id}</td><td>{_fmt(c.scores.get('bm25'))}</td><td>{_fmt(c.scores.get('dense'))}</td>"
            f"<td>{_fmt(c.scores.get('fused'))}</td><td class=\"l\">{html.escape(status)}</td>{view}"
            f"<td>{_fmt(c.share)}</td><td>{_fmt(c.uniform_share)}</td><td>{_fmt(c.lift, '.2f')}</td>"
            f'<td class="l">{c.verdict}{flags}</td></tr>'
        )
    head = "".join(f"<th>{c}</th>" for c in cols)
    return f'<table id="chunk-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_html(diag: Diagnosis) -> str:
    """The report as one self-contained HTML document."""
    esc = html.escape
    answer = "<i>abstained</i>" if diag.abstained else esc(diag.answer or "")
    if diag.verdict is not None:
        exp = [f"document {esc(diag.expected_doc_id)}"] if diag.expected_doc_id else []
        exp += [f"answer “{esc(a)}”" for a in diag.expected_answers[:3]]
        reason = f" ({esc(diag.cut_reason)})" if diag.cut_reason else ""
        verdict = (f'<p><b>Expected chunk</b> ({", ".join(exp)}): <span class="verdict v-{diag.verdict}">'
                   f"{diag.verdict}</span>{reason}</p>")
    else:
        verdict = "<p><b>Nothing expected</b>: each chunk has its own verdict below.</p>"
    top = next((c for c in diag.chunks if c.most_attended), None)
    top_line = (f"<p><b>Most attended:</b> #{top.rank} {esc(top.doc_id)} chunk {top.chunk_id} "
                f"(share {_fmt(top.share)}, uniform {_fmt(top.uniform_share)})</p>") if top else ""
    layer_opts = '<option value="all">all (mean)</option>' + "".join(
        f'<option value="{i}">{i}</option>' for i in range(diag.n_layers))
    head_opts = '<option value="all">all (mean)</option>' + "".join(
        f'<option value="{i}">{i}</option>' for i in range(diag.n_heads))
    data = {"views": attention_views(diag), "n_layers": diag.n_layers, "n_heads": diag.n_heads}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    chunks = "".join(_chunk_div(diag, c) for c in diag.in_context)
    chunks += "".join(_chunk_div(diag, c) for c in diag.chunks if not c.in_context)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Attend diagnosis: {esc(diag.question[:80])}</title><style>{_CSS}</style></head>
<body>
<div class="meta"><h1>Attention diagnosis</h1>
<p><b>Question:</b> {esc(diag.question)}</p>
<p><b>Answer:</b> {answer}</p>
{verdict}{top_line}
<p class="legend">{diag.prompt_tokens} prompt tokens, {diag.answer_steps} answer steps, {diag.n_layers} layers × {diag.n_heads} heads.
A chunk's share is the mass of the answer steps' attention (renormalised over the prompt) on its tokens; uniform = its tokens / prompt tokens.</p></div>
<div id="controls"><label>Layer <select id="layer">{layer_opts}</select></label>
<label>Head <select id="head">{head_opts}</select></label>
<span class="legend">view: <span id="view-name">all layers, all heads</span>; shading ∝ √(weight / max of the view); outlined tokens are the answer.</span></div>
{_table(diag)}
<div id="chunks">{chunks}</div>
<script type="application/json" id="diag-data">{payload}</script>
<script>{_JS}</script>
</body></html>
"""


def write_html(diag: Diagnosis, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` (atomically). Returns the path."""
    return atomic_write_text(path, render_html(diag))


def write_png(diag: Diagnosis, path: str | Path, *, dpi: int = 110) -> Path:
    """A static heat map of the mean attention per token: one row per context chunk (prompt
    order), then one empty grey row per cut chunk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = diag.in_context
    cut = [c for c in diag.chunks if not c.in_context]
    mean = diag.token_attention.mean(axis=(0, 1)) if diag.token_attention is not None else None
    rows = [diag.prompt.chunk_spans[c.context_index] for c in kept] if diag.prompt is not None else []  # type: ignore[index]
    width = max([e - s for s, e in rows] or [1])
    grid = np.full((max(len(kept) + len(cut), 1), width), np.nan)
    for r, (s, e) in enumerate(rows):
        if mean is not None:
            grid[r, : e - s] = mean[s:e]
    labels = [f"#{c.rank} {c.doc_id[:24]} · {_fmt(c.share, '.3f')} vs {_fmt(c.uniform_share, '.3f')} · {c.verdict}"
              + (" ★" if c.most_attended else "") + (" (expected)" if c.expected else "") for c in kept]
    labels += [f"#{c.rank} {c.doc_id[:24]} · cut ({c.cut_reason})" + (" (expected)" if c.expected else "") for c in cut]
    fig_h = 1.6 + 0.32 * grid.shape[0]
    fig, ax = plt.subplots(figsize=(12, fig_h), dpi=dpi)
    from matplotlib.colors import PowerNorm

    cmap = plt.get_cmap("Reds").with_extremes(bad="#eeeeee")
    finite = grid[np.isfinite(grid)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest",
                   norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=top))  # sqrt shading, as in the HTML
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("token in chunk")
    answer = "abstained" if diag.abstained else f"“{(diag.answer or '')[:60]}”"
    verdict = f" · expected: {diag.verdict}" + (f" ({diag.cut_reason})" if diag.cut_reason else "") if diag.verdict else ""
    ax.set_title(f"{diag.question[:90]}\nanswer: {answer}{verdict}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label="attention (mean over layers, heads, answer steps)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
