"""Load test of the HTTP API: a real server process on loopback over a collection of ``chunks``
chunks, driven by ``clients`` concurrent clients for ``seconds`` with a mix of search, answer and
ingestion requests. Reports p50/p95/p99 latency per route and the error count.

The collection is built in-process through the same ``Engine`` the server uses (synthetic
paragraphs, or a BEIR ``corpus.jsonl`` with ``data``), into ``data_dir``; with a ``data_dir`` that
already holds it, the build is skipped, so the slow part (encoding 20,000 chunks on a CPU) runs
once. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.beir import iter_corpus, iter_jsonl

logger = logging.getLogger(__name__)

COLLECTION = "bench"
ROUTES = ("search", "answer", "ingest")

_TOPICS = {
    "astronomy": "planet star orbit galaxy telescope comet nebula moon gravity eclipse asteroid spectrum",
    "biology": "cell protein enzyme gene membrane species evolution bacteria tissue organism habitat pollen",
    "chemistry": "molecule reaction catalyst acid bond electron solvent crystal polymer oxidation isotope salt",
    "computing": "compiler memory processor network packet cache thread kernel database query index storage",
    "geology": "volcano mineral sediment fault magma erosion glacier basalt granite fossil plate canyon",
    "history": "empire treaty dynasty revolution merchant harbour manuscript castle parliament colony siege",
    "music": "melody rhythm harmony orchestra violin chord tempo opera composer concert symphony scale",
    "cooking": "flour yeast butter oven sauce spice roast broth pastry ferment caramel knife recipe",
}
_GLUE = "the a of in and with through during across near because while under over between".split()


@dataclass
class ApiBenchConfig:
    seconds: float = 60.0
    clients: int = 16
    chunks: int = 20_000
    data: Path | None = None  # BEIR folder (corpus.jsonl, optional queries.jsonl)
    data_dir: Path | None = None  # where the collection is built / reused; temporary when None
    generator: str | None = None  # default: the settings' generator, else a tiny random one
    mix: tuple[float, float, float] = (0.7, 0.2, 0.1)  # search, answer, ingest
    seed: int = 0
    port: int | None = None
    startup_timeout: float = 300.0


@dataclass
class RouteStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    arr = np.asarray(values)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


# --- data --------------------------------------------------------------------------------------


def synthetic_documents(n: int, seed: int = 0, start: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` short paragraphs (one chunk each) over a few topics, reproducible from ``seed``."""
    rng = random.Random(seed)
    topics = list(_TOPICS)
    for i in range(start, start + n):
        topic = topics[i % len(topics)]
        words = _TOPICS[topic].split()
        sentences = []
        for _ in range(rng.randint(3, 5)):
            body = [rng.choice(words if j % 2 == 0 else _GLUE) for j in range(rng.randint(8, 14))]
            sentences.append(" ".join(body).capitalize() + ".")
        yield {"id": f"syn-{i}", "title": f"{topic} note {i}", "text": " ".join(sentences), "metadata": {"topic": topic}}


def synthetic_queries(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = _TOPICS[rng.choice(list(_TOPICS))].split()
        out.append(" ".join(rng.sample(words, 3)))
    return out


def beir_documents(folder: Path) -> Iterator[dict[str, Any]]:
    for doc_id, doc in iter_corpus(folder / "corpus.jsonl"):
        yield {"id": doc_id, "title": doc["title"], "text": doc["text"]}


def beir_queries(folder: Path, limit: int = 2000) -> list[str]:
    path = folder / "queries.jsonl"
    if not path.is_file():
        return []
    return [str(obj.get("text") or "") for _, obj in itertools.islice(iter_jsonl(path), limit)]


def build_collection(cfg: ApiBenchConfig, data_dir: Path) -> dict[str, Any]:
    """Create (or top up) the ``bench`` collection in ``data_dir`` until it has ``cfg.chunks``
    chunks. Returns its stats and the build time."""
    from tqdm.auto import tqdm

    from common.errors import NotFound
    from common.settings import Settings
    from engine import engine_session

    settings = Settings(_env_file=None, data_dir=data_dir, database_url=None)
    t0 = time.perf_counter()
    with engine_session(settings) as engine:
        try:
            engine.get_collection(COLLECTION)
        except NotFound:
            engine.create_collection(COLLECTION)
        have = engine.collection_stats(COLLECTION, indexes=False)["chunks"]
        if have < cfg.chunks:
            logger.info("building %d chunks in %s (have %d)", cfg.chunks, data_dir, have)
            docs = beir_documents(cfg.data) if cfg.data else synthetic_documents(10**9, cfg.seed, start=have)
            bar = tqdm(total=cfg.chunks, initial=have, unit="chunk", desc="build collection")
            group: list[dict[str, Any]] = []
            for doc in docs:
                group.append(doc)
                if len(group) == 256:
                    report = engine.upsert_documents(COLLECTION, group)
                    bar.update(sum(o.chunks for o in report.outcomes if o.status in ("inserted", "updated")))
                    group = []
                    have = engine.collection_stats(COLLECTION, indexes=False)["chunks"]
                    if have >= cfg.chunks:
                        break
            if group and have < cfg.chunks:
                engine.upsert_documents(COLLECTION, group)
            bar.close()
        stats = engine.collection_stats(COLLECTION)
    return {**stats, "build_seconds": time.perf_counter() - t0}


def resolve_generator(cfg: ApiBenchConfig, data_dir: Path) -> tuple[str, str]:
    """The generator for the server and a note of what it is. Without a usable one, a tiny random
    model is built so the answer path is still exercised (its latency is then a lower bound)."""
    from common.errors import CheckpointError
    from common.paths import resolve_model_dir
    from common.settings import Settings

    name = cfg.generator or Settings(_env_file=None).generator
    try:
        return str(resolve_model_dir(name)), name
    except CheckpointError:
        pass
    path = data_dir / "bench-tiny-qa"
    if not (path / "config.json").is_file():
        import torch

        from common.paths import resolve_encoder
        from generator.config import DecoderConfig
        from generator.model import Decoder
        from generator.qa_model import GroundedQA, QAConfig
        from retriever.tokenizer import Tokenizer

        tok = Tokenizer.from_dir(resolve_encoder())
        dcfg = DecoderConfig(
            vocab_size=tok.vocab_size, dim=256, n_layers=4, n_heads=4, intermediate_size=1024, max_seq_len=1024,
            norm="layer", norm_placement="post", mlp="gelu", activation="gelu", positions="learned",
            qkv_bias=True, out_bias=True, mlp_bias=True, final_norm=False, tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        GroundedQA(Decoder(dcfg), QAConfig(pointer_dim=64)).save(path, tok)
    logger.warning("generator %r not found: answers come from a random 4-layer model at %s", name, path)
    return str(path), f"random-4-layer (no {name!r})"


# --- server ------------------------------------------------------------------------------------


class ServerProcess:
    """``python -m attend serve`` on 127.0.0.1 in a subprocess, logs to a file."""

    def __init__(self, data_dir: Path, port: int, generator: str, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ATTEND_DATA_DIR": str(data_dir), "ATTEND_GENERATOR": generator,
               "ATTEND_API_KEYS": "[]", "ATTEND_HOST": "127.0.0.1"}
        env.pop("ATTEND_DATABASE_URL", None)
        self.log = open(log_path, "wb")
        cmd = [sys.executable, "-m", "attend", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the server was not ready within {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- load --------------------------------------------------------------------------------------


def drive(url: str, cfg: ApiBenchConfig, queries: list[str]) -> tuple[dict[str, RouteStats], float, list[str]]:
    """``cfg.clients`` threads sending requests for ``cfg.seconds``; returns per-route stats, the
    wall time and the ids of the documents the ingest requests added."""
    import httpx

    stats = {r: RouteStats() for r in ROUTES}
    ingested: list[str] = []
    run = f"{time.time_ns():x}"
    lock = threading.Lock()
    deadline = time.monotonic() + cfg.seconds
    base = f"{url}/v1/collections/{COLLECTION}"

    def client(cid: int) -> None:
        rng = random.Random(cfg.seed * 1000 + cid)
        n = 0
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < deadline:
                route = rng.choices(ROUTES, weights=cfg.mix)[0]
                q = rng.choice(queries)
                if route == "search":
                    req = ("/search", {"query": q, "k": 10, "mode": "hybrid"})
                elif route == "answer":
                    req = ("/answer", {"question": q, "k": 4, "budget": 384})
                else:
                    docs = list(synthetic_documents(2, seed=cfg.seed + cid * 7919 + n, start=0))
                    for j, d in enumerate(docs):
                        d["id"] = f"ingest-{run}-{cid}-{n}-{j}"
                    req = ("/documents", {"documents": docs})
                n += 1
                t = time.perf_counter()
                try:
                    r = http.post(base + req[0], json=req[1])
                    ok, why = r.status_code < 400, f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                ms = (time.perf_counter() - t) * 1e3
                with lock:
                    s = stats[route]
                    if ok:
                        s.latencies_ms.append(ms)
                        if route == "ingest":
                            ingested.extend(d["id"] for d in req[1]["documents"])
                    else:
                        s.errors += 1
                        if len(s.error_samples) < 5:
                            s.error_samples.append(why)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(cfg.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats, time.perf_counter() - t0, ingested


def remove_documents(url: str, ids: list[str]) -> int:
    """Delete what the load added, so a reused collection keeps its size; returns failures."""
    import httpx

    failed = 0
    with httpx.Client(base_url=f"{url}/v1/collections/{COLLECTION}", timeout=60) as http:
        for doc_id in ids:
            try:
                failed += http.delete(f"/documents/{doc_id}").status_code != 200
            except httpx.HTTPError:
                failed += 1
    return failed


def run_api_bench(cfg: ApiBenchConfig) -> dict[str, Any]:
    """Build or reuse the collection, start a server, drive it, stop it. Returns the figures."""
    tmp = None
    if cfg.data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="attend-bench-api-"))
    data_dir = Path(cfg.data_dir or tmp)  # type: ignore[arg-type]
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        collection = build_collection(cfg, data_dir)
        generator, generator_note = resolve_generator(cfg, data_dir)
        queries = (beir_queries(cfg.data) if cfg.data else []) or synthetic_queries(500, cfg.seed + 1)
        port = cfg.port or free_port()
        server = ServerProcess(data_dir, port, generator, data_dir / "bench-server.log")
        try:
            t = time.perf_counter()
            server.wait_ready(cfg.startup_timeout)
            startup = time.perf_counter() - t
            stats, wall, ingested = drive(server.url, cfg, queries)
            cleanup_failures = remove_documents(server.url, ingested)
        finally:
            server.stop()
        out: dict[str, Any] = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "collection": collection,
            "generator": generator_note,
            "server_startup_seconds": startup,
            "wall_seconds": wall,
            "errors": sum(s.errors for s in stats.values()),
            "cleanup_failures": cleanup_failures,
            "requests": sum(len(s.latencies_ms) + s.errors for s in stats.values()),
        }
        out["throughput_rps"] = out["requests"] / wall if wall else 0.0
        for route, s in stats.items():
            out[route] = {"count": len(s.latencies_ms), "errors": s.errors, **percentiles(s.latencies_ms),
                          "error_samples": s.error_samples}
        return out
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"route": r, "requests": result[r]["count"], "errors": result[r]["errors"],
         "p50_ms": result[r]["p50_ms"], "p95_ms": result[r]["p95_ms"], "p99_ms": result[r]["p99_ms"]}
        for r in ROUTES
    ]
