"""``attend bench durability``: SIGKILL a real server mid-ingestion and mid-deletion, restart it,
and count acknowledged documents lost, resurrected or unsearchable."""

from __future__ import annotations

import argparse
import json


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "durability", help="kill the server under concurrent writes, restart, check every acknowledged write"
    )
    p.add_argument("--rounds", type=int, default=20, help="kill-and-restart rounds (default 20)")
    p.add_argument("--database-url", default=None,
                   help="store URL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test "
                   "(default: SQLite in a temporary data dir); a fresh collection is made and deleted")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times and the requests (default 0)")
    p.add_argument("--clients", type=int, default=4, help="concurrent writing clients (default 4)")
    p.add_argument("--encoder", default="attend-small", help="the server's encoder (default attend-small)")
    p.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eval.bench_durability import DurabilityConfig, run_durability_bench, summary_rows
    from eval.report import console_table, write_json

    cfg = DurabilityConfig(rounds=args.rounds, database_url=args.database_url, seed=args.seed,
                           clients=args.clients, encoder=args.encoder, port=args.port)
    cfg.validate()
    result = run_durability_bench(cfg)
    print(console_table(summary_rows(result), floatfmt=".2f"))
    summary = {k: result[k] for k in ("rounds", "acknowledged", "acknowledged_deletes", "lost", "resurrected",
                                      "unsearchable", "in_flight", "errors", "database", "seconds")}
    print(json.dumps(summary, indent=2))
    for kind, docs in result["findings"].items():
        for doc_id, why in list(docs.items())[:10]:
            print(f"  {kind}: {doc_id} ({why})")
    for sample in result["error_samples"]:
        print(f"  error: {sample}")
    if args.json:
        write_json(result, args.json)
    bad = result["lost"] + result["resurrected"] + result["unsearchable"] + result["errors"]
    return 0 if bad == 0 else 1
