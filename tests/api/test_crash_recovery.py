"""A real server process is SIGKILLed in the middle of an ingestion; after a restart every
acknowledged document is found by BM25 and by dense search (the indexes are reconciled with the
store at start)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _codeword(i: int) -> str:
    return "qx" + "".join("bcdfghjklm"[int(c)] for c in str(i)) + "vo"


class Server:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attend", "serve", "--port", str(port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}; log: {self.log.name}"
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s; log: {self.log.name}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.mark.slow
def test_sigkill_mid_ingestion_loses_no_acknowledged_document(tmp_path, tiny_qa_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEND_")}
    env.update({
        "ATTEND_DATA_DIR": str(tmp_path / "data"), "ATTEND_GENERATOR": str(tiny_qa_dir),
        "ATTEND_HOST": "127.0.0.1", "ATTEND_INDEX_SAVE_DELAY_S": "0.2",  # saves race the kill too
    })
    port = _free_port()
    server = Server(env, port, tmp_path / "server.log")
    acked: dict[str, str] = {}
    try:
        server.wait_ready()
        assert httpx.post(server.url + "/v1/collections", json={"name": "crash"}).status_code == 201
        stop = threading.Event()

        def ingest() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                i = 0
                while not stop.is_set():
                    docs = [{"id": f"k{i + j}", "text": f"Record {i + j} holds the codeword {_codeword(i + j)} for the archive."}
                            for j in range(4)]
                    i += 4
                    try:
                        r = http.post("/v1/collections/crash/documents", json={"documents": docs})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if r.status_code == 200:
                        for o in r.json()["outcomes"]:
                            if o["status"] == "inserted":
                                acked[o["id"]] = next(d["text"] for d in docs if d["id"] == o["id"])

        t = threading.Thread(target=ingest)
        t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 20 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGKILL)  # mid-ingestion: the client is still sending
        server.proc.wait()
        stop.set()
        t.join()
    finally:
        server.stop(signal.SIGKILL)
    assert len(acked) >= 20

    server = Server(env, port, tmp_path / "server.log")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stats = http.get("/v1/collections/crash").json()["stats"]
            assert stats["documents"] >= len(acked)
            assert stats["chunks"] == stats["bm25_chunks"] == stats["dense_chunks"]
            missing = []
            for doc_id in acked:  # BM25: each document by its own codeword
                code = _codeword(int(doc_id[1:]))
                hits = http.post("/v1/collections/crash/search", json={"query": code, "k": 1, "mode": "bm25"}).json()["hits"]
                if not hits or hits[0]["doc_id"] != doc_id:
                    missing.append(("bm25", doc_id))
            # Dense: one query whose k covers the collection returns every vector in the index...
            everything = http.post("/v1/collections/crash/search", json={
                "query": "Record holds the codeword for the archive.", "k": stats["chunks"], "mode": "dense"}).json()["hits"]
            found = {h["doc_id"] for h in everything}
            missing += [("dense", d) for d in acked if d not in found]
            # ...and the last acknowledged ones (the likeliest to be missing from saved files) by their text.
            for doc_id in sorted(acked, key=lambda d: int(d[1:]))[-4:]:
                hits = http.post("/v1/collections/crash/search", json={"query": acked[doc_id], "k": 3, "mode": "dense"}).json()["hits"]
                if doc_id not in {h["doc_id"] for h in hits}:
                    missing.append(("dense-text", doc_id))
            assert not missing, f"acknowledged but not found after restart: {missing}"
    finally:
        server.stop()
