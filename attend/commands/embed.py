"""``attend embed "text" ...``: embed texts with our encoder and print each vector's summary."""

from __future__ import annotations

import argparse
import json

PREVIEW_DIMS = 8


def register(parsers) -> None:
    p = parsers.top.add_parser("embed", help="embed texts with our encoder; print dim, norm and the first dims")
    p.add_argument("texts", nargs="+", help="texts to embed")
    p.add_argument("--encoder", default=None, help="encoder name or checkpoint directory (default all-MiniLM-L6-v2)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    p.add_argument("--full", action="store_true", help="print the full vectors as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from retriever.embedder import load_encoder

    enc = load_encoder(args.encoder, device=args.device, precision=args.precision)
    vecs = enc.encode(list(args.texts))
    if args.full:
        print(json.dumps([{"text": t, "dim": enc.dim, "vector": v.tolist()} for t, v in zip(args.texts, vecs, strict=True)]))
        return 0
    for text, vec in zip(args.texts, vecs, strict=True):
        head = ", ".join(f"{x:+.4f}" for x in vec[:PREVIEW_DIMS])
        print(f"{text[:60]!r}: dim={enc.dim} norm={float(np.linalg.norm(vec)):.4f} [{head}, ...]")
    return 0
