"""Dense index benchmark: search queries/s of :class:`index.dense.DenseIndex` on synthetic vectors.

Builds each (kind, device) pair over ``n`` random unit vectors of ``dim`` dimensions (384, the
MiniLM width) and reports, as medians over ``runs`` repetitions measured in one process:

- ``<kind>_<device>_add_s``: time to add all vectors (once, not repeated);
- ``<kind>_<device>_qps``: single-query calls, one at a time as a server makes them;
- ``<kind>_<device>_batch_qps``: the same queries in batches of ``batch``;
- ``<kind>_<device>_recall@k``: overlap with exact (flat) results;
- ``<kind>_<device>_vs_flat_cpu_qps``: ratio to the flat CPU index measured in the same run.

GPU pairs run when faiss has GPU support and sees a GPU (HNSW has no FAISS GPU version, so only
``flat`` and ``ivf`` run there). The vectors lie near a 32-dimensional subspace plus noise, like
sentence embeddings (uniform random 384-d vectors have no structure and give HNSW a recall that
says nothing about real data: 0.31 at 100k here).

Run: ``python -m eval.bench_dense --n 100000 --json results/dense.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from index.dense import DenseIndex
from index.faiss_runtime import gpu_available

logger = logging.getLogger(__name__)


@dataclass
class DenseBenchConfig:
    n: int = 100_000
    dim: int = 384
    queries: int = 1000  # batch figures and recall use all of them
    single_queries: int = 200  # single-query queries/s use the first this many
    k: int = 10
    batch: int = 64
    runs: int = 3
    kinds: tuple[str, ...] = ("flat", "hnsw")
    devices: tuple[str, ...] | None = None  # default: cpu, plus cuda when available
    seed: int = 0
    threads: int | None = None  # faiss OpenMP threads (default: faiss's own)


def synthetic_vectors(
    n: int, dim: int, seed: int, rank: int = 32, noise: float = 0.3, chunk: int = 100_000
) -> np.ndarray:
    """``n`` unit vectors, float32, shaped like sentence embeddings rather than uniform noise:
    a point of a ``rank``-dimensional subspace (shared by every call, so corpus and queries live
    in the same one) plus isotropic noise of relative size ``noise``. Generated in chunks."""
    basis = np.random.default_rng(2024).standard_normal((rank, dim), dtype=np.float32)
    basis /= np.sqrt(rank)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        block = rng.standard_normal((m, rank), dtype=np.float32) @ basis
        block += noise * rng.standard_normal(
            (m, dim), dtype=np.float32
        )  # both parts: ~1 per coordinate
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def _median_s(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(
        len(set(g[g >= 0].tolist()) & set(t[t >= 0].tolist()))
        for g, t in zip(got, truth, strict=True)
    )
    return hits / max(1, int((truth >= 0).sum()))


def run_dense_bench(cfg: DenseBenchConfig) -> dict[str, Any]:
    """Build, time and score every (kind, device) pair; returns a flat dict of figures."""
    import faiss

    if cfg.threads:
        faiss.omp_set_num_threads(cfg.threads)
    devices = cfg.devices or (("cpu", "cuda") if gpu_available() else ("cpu",))
    vectors = synthetic_vectors(cfg.n, cfg.dim, cfg.seed)
    ids = np.arange(cfg.n, dtype=np.int64)
    queries = synthetic_vectors(cfg.queries, cfg.dim, cfg.seed + 1)
    single = queries[: cfg.single_queries]
    result: dict[str, Any] = {
        "n": cfg.n,
        "dim": cfg.dim,
        "queries": cfg.queries,
        "single_queries": len(single),
        "k": cfg.k,
        "batch": cfg.batch,
        "runs": cfg.runs,
        "threads": faiss.omp_get_max_threads(),
        "gpu": gpu_available(),
    }
    truth: np.ndarray | None = None
    # flat on the CPU always runs first: it is the exact reference for recall and the peer
    kinds = ("flat", *[k for k in cfg.kinds if k != "flat"])
    pairs = [
        (kind, dev)
        for kind in kinds
        for dev in devices
        if not (kind == "hnsw" and dev == "cuda")  # no FAISS HNSW on GPU
        and (kind in cfg.kinds or dev == "cpu")
    ]
    for kind, device in pairs:
        name = f"{kind}_{device}"
        index = DenseIndex(cfg.dim, metric="ip", kind=kind, device=device)
        t0 = time.perf_counter()
        index.add(ids, vectors)
        result[f"{name}_add_s"] = time.perf_counter() - t0
        index.search(queries[:1], cfg.k)  # warm-up (GPU replica, lazy allocations)

        def one_at_a_time(index: DenseIndex = index) -> None:
            for q in single:
                index.search(q, cfg.k)

        def batched(index: DenseIndex = index) -> None:
            for start in range(0, len(queries), cfg.batch):
                index.search(queries[start : start + cfg.batch], cfg.k)

        result[f"{name}_qps"] = len(single) / _median_s(one_at_a_time, cfg.runs)
        result[f"{name}_batch_qps"] = len(queries) / _median_s(batched, cfg.runs)
        _, found = index.search(queries, cfg.k)
        if truth is None:
            truth = found  # flat on the CPU comes first
        result[f"{name}_recall@{cfg.k}"] = _recall(found, truth)
        logger.info(
            "%s: add %.1fs, %.0f q/s single, %.0f q/s batched",
            name,
            result[f"{name}_add_s"],
            result[f"{name}_qps"],
            result[f"{name}_batch_qps"],
        )
        del index
    for key in [k for k in result if k.endswith("_qps") and not k.startswith("flat_cpu_")]:
        peer = "flat_cpu_batch_qps" if key.endswith("_batch_qps") else "flat_cpu_qps"
        result[key.replace("_qps", "_vs_flat_cpu_qps")] = result[key] / result[peer]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.bench_dense", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--n", type=int, default=DenseBenchConfig.n, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=DenseBenchConfig.dim)
    parser.add_argument("--queries", type=int, default=DenseBenchConfig.queries)
    parser.add_argument("--single-queries", type=int, default=DenseBenchConfig.single_queries)
    parser.add_argument("-k", type=int, default=DenseBenchConfig.k)
    parser.add_argument("--batch", type=int, default=DenseBenchConfig.batch)
    parser.add_argument("--runs", type=int, default=DenseBenchConfig.runs)
    parser.add_argument("--kinds", default="flat,hnsw", help="comma-separated: flat,hnsw,ivf")
    parser.add_argument(
        "--devices", default=None, help="comma-separated: cpu,cuda (default: all available)"
    )
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = DenseBenchConfig(
        n=args.n,
        dim=args.dim,
        queries=args.queries,
        single_queries=args.single_queries,
        k=args.k,
        batch=args.batch,
        runs=args.runs,
        kinds=tuple(k for k in args.kinds.split(",") if k),
        devices=tuple(d for d in args.devices.split(",") if d) if args.devices else None,
        threads=args.threads,
    )
    result = run_dense_bench(cfg)
    from eval.report import console_table, write_json

    rows = []
    for key in result:
        if key.endswith("_add_s"):
            name = key[: -len("_add_s")]
            rows.append(
                {
                    "index": name,
                    "add_s": result[key],
                    "qps": result[f"{name}_qps"],
                    "batch_qps": result[f"{name}_batch_qps"],
                    f"recall@{cfg.k}": result[f"{name}_recall@{cfg.k}"],
                    "x_flat_cpu": result.get(f"{name}_vs_flat_cpu_qps", 1.0),
                }
            )
    print(
        f"{cfg.n} x {cfg.dim} vectors, {cfg.queries} queries, k={cfg.k}, median of {cfg.runs} runs, "
        f"{result['threads']} threads, GPU: {result['gpu']}"
    )
    print(console_table(rows, floatfmt=".4g"))
    if args.json:
        write_json(result, args.json)
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
