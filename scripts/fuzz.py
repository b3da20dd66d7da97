"""Fuzz the live API with schemathesis: start `attend serve` on a free loopback port over a fresh
data directory, run every operation through every check (examples, coverage, fuzzing and the
stateful phase; exceptions in schemathesis.toml), stop the server, exit with schemathesis' code.

    python scripts/fuzz.py                      # the bounded CI run (seed 1, 20 examples/operation)
    python scripts/fuzz.py --max-examples 200   # `make fuzz`: a longer run for people
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-examples", type=int, default=20, help="test cases per operation and phase")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--encoder", default="attend-small", help="the server's encoder (the small one is faster)")
    ap.add_argument("--log", type=Path, default=None, help="server log file (default: in the temp dir)")
    args = ap.parse_args(argv)
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if st is None:
        print("schemathesis is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="attend-fuzz-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ATTEND_DATA_DIR": str(tmp / "data"), "ATTEND_ENCODER": args.encoder,
           "ATTEND_TORCH_THREADS": "1"}
    env.pop("ATTEND_DATABASE_URL", None)
    env.pop("ATTEND_API_KEYS", None)
    log = open(args.log or tmp / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "attend", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(url, proc, timeout=180)
        cmd = [st, "run", f"{url}/openapi.json", "--checks", "all", "--seed", str(args.seed),
               "--max-examples", str(args.max_examples), "--workers", "1", "--no-color",
               "--request-timeout", "30",
               # A batch's outcomes list refused documents too (one bad document never sinks the
               # batch), so a link the stateful phase infers from an outcome id can name a document
               # that was refused, not stored. (Checked: the one case seed 1 finds is exactly that.)
               "--exclude-checks", "ensure_resource_availability"]
        rc = subprocess.call(cmd, cwd=REPO)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    server_errors = (tmp / "server.log").read_text(errors="replace").count("Traceback") if args.log is None else 0
    if server_errors:
        print(f"the server log holds {server_errors} tracebacks: {tmp / 'server.log'}", file=sys.stderr)
        return rc or 1
    shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
