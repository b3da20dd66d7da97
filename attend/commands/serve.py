"""``attend serve``: run the API with uvicorn (optionally indexing the built-in sample first)."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

from attend.commands.args import positive_int

logger = logging.getLogger(__name__)


def register(parsers) -> None:
    p = parsers.top.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default=None, help="bind address (default from ATTEND_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default from ATTEND_PORT, 8000)")
    p.add_argument("--with-sample", action="store_true", help="index the built-in sample collection first")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    p.add_argument("--torch-threads", type=positive_int, default=None,
                   help="intra-op threads per model call (default ATTEND_TORCH_THREADS, else 1: concurrent "
                   "requests then share the cores instead of each contending for all of them)")
    p.set_defaults(func=run)


def try_command(host: str, port: int, auth: bool) -> str:
    """A curl request that asks the sample collection a question."""
    from engine.sample import SAMPLE_COLLECTION, SAMPLE_QUESTION

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    body = json.dumps({"question": SAMPLE_QUESTION, "k": 4})
    parts = [
        "curl -s", shlex.quote(f"http://{shown}:{port}/v1/collections/{SAMPLE_COLLECTION}/answer"),
        "-H 'Content-Type: application/json'",
    ]
    if auth:
        parts.append('-H "Authorization: Bearer $ATTEND_KEY"')
    parts += ["-d", shlex.quote(body)]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from common.settings import get_settings
    from engine import engine_session

    settings = get_settings()
    update = {k: v for k, v in (("host", args.host), ("port", args.port), ("torch_threads", args.torch_threads)) if v is not None}
    if settings.torch_threads is None and args.torch_threads is None:
        update["torch_threads"] = 1  # measured: search p50 54 -> 29 ms under `attend bench api` on 2 cores
    if update:
        settings = settings.model_copy(update=update)
    if args.with_sample:
        from engine.sample import ensure_sample

        with engine_session(settings) as engine:
            counts = ensure_sample(engine).counts()
        print(f"sample collection ready ({counts})", flush=True)
        print("try:\n  " + try_command(settings.host, settings.port, settings.auth_required), flush=True)
        if settings.auth_required:
            print("  (with ATTEND_KEY set to a key whose hash is in ATTEND_API_KEYS)", flush=True)
    print(f"Attend API on http://{settings.host}:{settings.port}  (docs at /docs)", flush=True)
    # A short GIL switch interval keeps searches from waiting behind a generation's Python loop
    # (measured: search p99 184 -> 146 ms under `attend bench api` on 2 cores).
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level)
    return 0
