"""Durability under SIGKILL: a real server process on loopback takes concurrent ingestions and
deletions, is killed at a random moment, restarted, and checked against what it acknowledged.

Each round: ``clients`` threads loop, each request either a small batch of new documents (POST,
every document carrying a unique codeword so BM25 finds exactly it) or the deletion of a document
acknowledged earlier (DELETE). After a seeded random delay (``kill_after`` seconds) the server is
SIGKILLed, the clients stop, and the server is started again on the same store and data directory.
Once ``/readyz`` answers, the round is checked:

- ``lost``: acknowledged as inserted (and not acknowledged as deleted) but absent;
- ``resurrected``: acknowledged as deleted but present (in the store, or as a BM25 hit);
- ``unsearchable``: present but not found by BM25 (its codeword as the query) or by dense search
  (its exact text as the query, within the top ``dense_k``).

Requests in flight at the kill get no answer and count for nothing: their documents are not
tracked. Presence is checked for every tracked document each round (GET for the round's own,
one paged listing for all); search for the round's new documents each round and for every live
document once more after the last restart. The three counts are of distinct documents.

The collection has a fresh name per run and is deleted at the end, so runs against one
PostgreSQL database do not collide. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InvalidInput
from eval.bench_api import ServerProcess, free_port, synthetic_documents

logger = logging.getLogger(__name__)

_CODE_LETTERS = "bcdfghjklm"
MAX_CLIENT_ERRORS = 20  # a client that gets this many error answers in a round stops


@dataclass
class DurabilityConfig:
    rounds: int = 20
    database_url: str | None = None  # default: SQLite in the temporary data directory
    seed: int = 0
    clients: int = 4
    port: int | None = None
    encoder: str = "attend-small"  # the shipped 3-layer encoder: restarts and ingestion are quicker
    kill_after: tuple[float, float] = (0.5, 3.0)  # seconds of load before the SIGKILL, drawn uniformly
    docs_per_request: int = 2
    delete_share: float = 0.3  # share of requests that delete an acknowledged document
    bm25_k: int = 3
    dense_k: int = 10
    index_save_delay_s: float = 0.2  # short, so index saves race the kill too
    startup_timeout: float = 180.0
    request_timeout: float = 60.0

    def validate(self) -> None:
        if self.rounds < 1:
            raise InvalidInput(f"rounds must be at least 1, got {self.rounds}")
        if self.clients < 1:
            raise InvalidInput(f"clients must be at least 1, got {self.clients}")
        if self.docs_per_request < 1:
            raise InvalidInput(f"docs_per_request must be at least 1, got {self.docs_per_request}")
        lo, hi = self.kill_after
        if not 0 < lo <= hi:
            raise InvalidInput(f"kill_after must be 0 < low <= high seconds, got {self.kill_after}")
        if not 0 <= self.delete_share < 1:
            raise InvalidInput(f"delete_share must be in [0, 1), got {self.delete_share}")
        if self.port is not None and not 0 < self.port < 65536:
            raise InvalidInput(f"port must be in 1..65535, got {self.port}")


def codeword(i: int) -> str:
    """A made-up word unique to ``i`` (letters only, so every analyzer keeps it whole)."""
    return "qx" + "".join(_CODE_LETTERS[int(c)] for c in str(i)) + "vo"


def database_label(url: str | None) -> str:
    """What the store is, for the report, without a password."""
    if not url:
        return "sqlite (temporary data dir)"
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- what the server acknowledged ---------------------------------------------------------------


@dataclass
class Ledger:
    """Documents by what the server acknowledged, shared by the client threads (under ``lock``)."""

    live: dict[str, str] = field(default_factory=dict)  # doc id -> text: inserted, not deleted
    codes: dict[str, str] = field(default_factory=dict)  # doc id -> codeword
    deleted: set[str] = field(default_factory=set)  # acknowledged deletions
    untracked: set[str] = field(default_factory=set)  # a deletion without an answer: either state is right
    deleting: set[str] = field(default_factory=set)
    acknowledged: int = 0
    acknowledged_deletes: int = 0
    in_flight: int = 0  # requests cut by the kill
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    serial: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # this round's acknowledgements
    round_inserted: list[str] = field(default_factory=list)
    round_deleted: list[str] = field(default_factory=list)

    def new_documents(self, n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            start, self.serial = self.serial, self.serial + n
        docs = []
        for i in range(start, start + n):
            body = next(synthetic_documents(1, seed=seed * 1_000_003 + i, start=i))
            docs.append({"id": f"{prefix}-{i}", "text": f"The codeword {codeword(i)} marks this note. {body['text']}",
                         "metadata": {"codeword": codeword(i)}})
        return docs

    def claim_victim(self, rng: random.Random) -> str | None:
        with self.lock:
            candidates = [d for d in self.live if d not in self.deleting]
            if not candidates:
                return None
            victim = rng.choice(candidates)
            self.deleting.add(victim)
            return victim

    def inserted(self, docs: list[dict[str, Any]], outcomes: list[dict[str, Any]]) -> None:
        by_id = {d["id"]: d for d in docs}
        with self.lock:
            for o in outcomes:
                if o.get("status") == "inserted" and o.get("id") in by_id:
                    d = by_id[o["id"]]
                    self.live[d["id"]] = d["text"]
                    self.codes[d["id"]] = d["metadata"]["codeword"]
                    self.round_inserted.append(d["id"])
                    self.acknowledged += 1
                elif o.get("status") != "inserted":
                    self._error(f"insert {o.get('id')}: {o.get('status')} {o.get('error')}")

    def delete_done(self, doc_id: str, acknowledged: bool) -> None:
        with self.lock:
            self.deleting.discard(doc_id)
            self.live.pop(doc_id, None)
            if acknowledged:
                self.deleted.add(doc_id)
                self.round_deleted.append(doc_id)
                self.acknowledged_deletes += 1
            else:
                self.untracked.add(doc_id)

    def error(self, why: str) -> None:
        with self.lock:
            self._error(why)

    def _error(self, why: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(why)


# --- server -------------------------------------------------------------------------------------


class DurabilityServer(ServerProcess):
    """``ServerProcess`` with the whole environment given (the database URL among it), run from
    the data directory so no ``.env`` of the caller is read, its log appended across restarts."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, cwd: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "ab")
        cmd = [sys.executable, "-m", "attend", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()


def server_env(cfg: DurabilityConfig, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEND_")}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    env.update({
        "ATTEND_DATA_DIR": str(data_dir), "ATTEND_DATABASE_URL": cfg.database_url or "",
        "ATTEND_ENCODER": cfg.encoder, "ATTEND_HOST": "127.0.0.1", "ATTEND_API_KEYS": "[]",
        "ATTEND_INDEX_SAVE_DELAY_S": str(cfg.index_save_delay_s),
    })
    return env


# --- one round ----------------------------------------------------------------------------------


def load_until_kill(server: DurabilityServer, collection: str, cfg: DurabilityConfig, ledger: Ledger,
                    round_no: int, kill_after: float) -> None:
    """``cfg.clients`` threads insert and delete until the server is SIGKILLed ``kill_after``
    seconds in; returns once they have all stopped."""
    import httpx

    killed = threading.Event()

    def client(cid: int) -> None:
        rng = random.Random(cfg.seed * 1_000_003 + round_no * 1009 + cid)
        base = f"/v1/collections/{collection}/documents"
        failures = 0
        with httpx.Client(base_url=server.url, timeout=cfg.request_timeout) as http:
            while not killed.is_set() and failures < MAX_CLIENT_ERRORS:
                victim = ledger.claim_victim(rng) if rng.random() < cfg.delete_share else None
                if victim is not None:
                    try:
                        r = http.delete(f"{base}/{victim}")
                    except httpx.HTTPError as exc:
                        ledger.delete_done(victim, acknowledged=False)
                        _cut(ledger, killed, f"delete {victim}: {type(exc).__name__}: {exc}")
                        return
                    ledger.delete_done(victim, acknowledged=r.status_code == 200)
                    if r.status_code != 200:
                        failures += 1
                        ledger.error(f"delete {victim}: {r.status_code} {r.text[:200]}")
                    continue
                docs = ledger.new_documents(cfg.docs_per_request, cfg.seed, f"r{round_no}c{cid}")
                try:
                    r = http.post(base, json={"documents": docs})
                except httpx.HTTPError as exc:
                    _cut(ledger, killed, f"insert: {type(exc).__name__}: {exc}")
                    return
                if r.status_code == 200:
                    ledger.inserted(docs, r.json()["outcomes"])
                else:
                    failures += 1
                    ledger.error(f"insert: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(cfg.clients)]
    for t in threads:
        t.start()
    time.sleep(kill_after)
    killed.set()  # before the signal: an error after this point is the kill's
    server.kill()
    for t in threads:
        t.join(timeout=cfg.request_timeout + 5)


def _cut(ledger: Ledger, killed: threading.Event, why: str) -> None:
    with ledger.lock:
        ledger.in_flight += 1
    if not killed.is_set():
        ledger.error(f"before the kill: {why}")


def listed_ids(http, collection: str) -> set[str]:
    """Every document id in the collection, by the paged listing."""
    out: set[str] = set()
    offset = 0
    while True:
        r = http.get(f"/v1/collections/{collection}/documents", params={"offset": offset, "limit": 1000})
        r.raise_for_status()
        page = r.json()
        out.update(d["id"] for d in page)
        if len(page) < 1000:
            return out
        offset += len(page)


def searchable(http, collection: str, ledger: Ledger, doc_id: str, cfg: DurabilityConfig) -> list[str]:
    """The search modes that do not find ``doc_id`` (empty when both do)."""
    url = f"/v1/collections/{collection}/search"
    failed = []
    hits = http.post(url, json={"query": ledger.codes[doc_id], "k": cfg.bm25_k, "mode": "bm25"}).json()["hits"]
    if doc_id not in {h["doc_id"] for h in hits}:
        failed.append("bm25")
    hits = http.post(url, json={"query": ledger.live[doc_id], "k": cfg.dense_k, "mode": "dense"}).json()["hits"]
    if doc_id not in {h["doc_id"] for h in hits}:
        failed.append("dense")
    return failed


def check(http, collection: str, ledger: Ledger, cfg: DurabilityConfig, search_ids: list[str],
          found: dict[str, dict[str, str]]) -> dict[str, int]:
    """Presence of every tracked document, absence of every deleted one, search for ``search_ids``.
    New findings are added to ``found`` (kind -> doc id -> why); returns this check's counts."""
    new = {"lost": 0, "resurrected": 0, "unsearchable": 0}

    def note(kind: str, doc_id: str, why: str) -> None:
        if doc_id not in found[kind]:
            found[kind][doc_id] = why
            new[kind] += 1

    base = f"/v1/collections/{collection}/documents"
    for doc_id in ledger.round_inserted:
        if doc_id in ledger.live and http.get(f"{base}/{doc_id}").status_code != 200:
            note("lost", doc_id, "GET is not 200")
    for doc_id in ledger.round_deleted:
        if http.get(f"{base}/{doc_id}").status_code != 404:
            note("resurrected", doc_id, "GET is not 404")
        hits = http.post(f"/v1/collections/{collection}/search",
                         json={"query": ledger.codes[doc_id], "k": cfg.bm25_k, "mode": "bm25"}).json()["hits"]
        if doc_id in {h["doc_id"] for h in hits}:
            note("resurrected", doc_id, "a BM25 hit")
    listed = listed_ids(http, collection)
    for doc_id in ledger.live.keys() - listed:
        note("lost", doc_id, "not listed")
    for doc_id in ledger.deleted & listed:
        note("resurrected", doc_id, "listed")
    for doc_id in search_ids:
        if doc_id in ledger.live and doc_id in listed and (modes := searchable(http, collection, ledger, doc_id, cfg)):
            note("unsearchable", doc_id, "not found by " + "+".join(modes))
    return new


# --- the run ------------------------------------------------------------------------------------


def run_durability_bench(cfg: DurabilityConfig) -> dict[str, Any]:
    """Run ``cfg.rounds`` kill-and-restart rounds against a fresh collection; returns the figures
    (``rounds``, ``acknowledged``, ``lost``, ``resurrected``, ``unsearchable``, per-round rows...)."""
    import httpx
    from tqdm.auto import tqdm

    cfg.validate()
    t_start = time.perf_counter()
    rng = random.Random(cfg.seed)
    tmp = Path(tempfile.mkdtemp(prefix="attend-bench-durability-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    env = server_env(cfg, data_dir)
    port = cfg.port or free_port()
    log_path = tmp / "server.log"
    collection = f"durability-{uuid.uuid4().hex[:12]}"
    ledger = Ledger()
    found: dict[str, dict[str, str]] = {"lost": {}, "resurrected": {}, "unsearchable": {}}
    per_round: list[dict[str, Any]] = []
    server = DurabilityServer(env, port, log_path, data_dir)
    keep_log = False
    try:
        server.wait_ready(cfg.startup_timeout)
        with httpx.Client(base_url=server.url, timeout=cfg.request_timeout) as http:
            r = http.post("/v1/collections", json={"name": collection})
            if r.status_code != 201:
                raise RuntimeError(f"could not create collection {collection}: {r.status_code} {r.text[:200]}")
        for round_no in tqdm(range(1, cfg.rounds + 1), desc="durability rounds", unit="round"):
            kill_after = rng.uniform(*cfg.kill_after)
            ledger.round_inserted, ledger.round_deleted = [], []
            before = (ledger.acknowledged, ledger.acknowledged_deletes, ledger.in_flight, ledger.errors)
            load_until_kill(server, collection, cfg, ledger, round_no, kill_after)
            t = time.perf_counter()
            server = DurabilityServer(env, port, log_path, data_dir)
            server.wait_ready(cfg.startup_timeout)
            restart = time.perf_counter() - t
            with httpx.Client(base_url=server.url, timeout=cfg.request_timeout) as http:
                new = check(http, collection, ledger, cfg, ledger.round_inserted, found)
            per_round.append({
                "round": round_no, "kill_after_s": round(kill_after, 3),
                "acknowledged": ledger.acknowledged - before[0],
                "acknowledged_deletes": ledger.acknowledged_deletes - before[1],
                "in_flight": ledger.in_flight - before[2], "errors": ledger.errors - before[3],
                **new, "live": len(ledger.live), "restart_s": round(restart, 2),
            })
            logger.info("round %d: %s", round_no, per_round[-1])
        ledger.round_inserted, ledger.round_deleted = [], []
        with httpx.Client(base_url=server.url, timeout=cfg.request_timeout) as http:
            final = check(http, collection, ledger, cfg, sorted(ledger.live), found)
            r = http.delete(f"/v1/collections/{collection}")
            if r.status_code != 204:
                ledger.error(f"delete collection {collection}: {r.status_code} {r.text[:200]}")
    except BaseException:
        keep_log = True
        raise
    finally:
        server.stop()
        if keep_log or any(found.values()):
            kept = Path(tempfile.gettempdir()) / f"{collection}-server.log"
            shutil.copyfile(log_path, kept)
            logger.warning("server log kept at %s", kept)
        shutil.rmtree(tmp, ignore_errors=True)
    cfg_out = {k: v for k, v in asdict(cfg).items() if k != "database_url"}
    return {
        "rounds": cfg.rounds,
        "acknowledged": ledger.acknowledged,
        "acknowledged_deletes": ledger.acknowledged_deletes,
        "lost": len(found["lost"]),
        "resurrected": len(found["resurrected"]),
        "unsearchable": len(found["unsearchable"]),
        "in_flight": ledger.in_flight,
        "untracked_deletes": len(ledger.untracked),
        "live_at_end": len(ledger.live),
        "final_check": final,
        "errors": ledger.errors,
        "error_samples": ledger.error_samples,
        "database": database_label(cfg.database_url),
        "collection": collection,
        "seconds": time.perf_counter() - t_start,
        "config": cfg_out,
        "findings": {k: dict(sorted(v.items())[:50]) for k, v in found.items()},
        "per_round": per_round,
    }


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per round and a total row."""
    cols = ("acknowledged", "acknowledged_deletes", "in_flight", "lost", "resurrected", "unsearchable")
    rows = [{"round": r["round"], "kill_after_s": r["kill_after_s"], **{c: r[c] for c in cols},
             "live": r["live"], "restart_s": r["restart_s"]} for r in result["per_round"]]
    rows.append({"round": "all", **{c: result[c] for c in cols}, "live": result["live_at_end"]})
    return rows
