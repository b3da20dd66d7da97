"""The BM25 index on disk: a directory holding the arrays of one compacted segment in
``bm25-<token>.npz`` and the configuration and vocabulary in the manifest ``bm25.json``.

Each file is written to a temporary file, fsynced and renamed into place; the manifest goes last
and names its arrays file, so a crash leaves the previous save readable. The arrays file a new
manifest replaces is deleted afterwards.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from common.atomic import atomic_write
from common.errors import InvalidInput, NotFound
from index.bm25.segments import Segment, segment_from_csr

FORMAT = "attend-bm25"
FORMAT_VERSION = 1
MANIFEST = "bm25.json"


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, as written."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_index(root: Path, seg: Segment, terms: list[str], config: dict[str, Any]) -> Path:
    """Save ``seg`` (compacted, no tombstones) with its vocabulary ``terms`` (term ``i`` is column
    ``i``) and the index's ``config`` (constructor arguments, analyzer as a dict) into directory
    ``root``, which must exist. Returns the manifest path."""
    arrays_name = f"bm25-{uuid.uuid4().hex}.npz"
    atomic_write(
        root / arrays_name,
        lambda f: np.savez(
            f,
            ids=seg.ids,
            lengths=seg.lengths,
            indptr=seg.csr.indptr,
            indices=seg.csr.indices,
            tf=seg.csr.data,
        ),
    )
    manifest_path = root / MANIFEST
    old = _read_manifest(manifest_path) if manifest_path.exists() else None
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arrays": arrays_name,
        "n_docs": int(seg.n_rows),
        **config,
        "terms": terms,
    }
    data = json.dumps(manifest, ensure_ascii=False).encode("utf-8")
    atomic_write(manifest_path, lambda f: f.write(data))
    if old and old.get("arrays") and old["arrays"] != arrays_name:
        (root / old["arrays"]).unlink(missing_ok=True)
    return manifest_path


def read_index(root: Path) -> tuple[dict[str, Any], Segment, list[str]]:
    """``(manifest, segment, terms)`` of the index saved in directory ``root``: ``NotFound``
    without a manifest, ``InvalidInput`` for a manifest of another format or version."""
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise NotFound(f"no BM25 index at {root} (missing {MANIFEST})")
    m = _read_manifest(manifest_path)
    if m.get("format") != FORMAT or m.get("version") != FORMAT_VERSION:
        raise InvalidInput(f"{manifest_path} is not a {FORMAT} v{FORMAT_VERSION} manifest")
    terms: list[str] = m["terms"]
    with np.load(root / m["arrays"]) as z:
        ids, lengths = z["ids"], z["lengths"]
        csr = sp.csr_matrix((z["tf"], z["indices"], z["indptr"]), shape=(len(ids), len(terms)))
    return m, segment_from_csr(ids, lengths, csr), terms
