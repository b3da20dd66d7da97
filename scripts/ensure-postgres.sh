#!/usr/bin/env bash
# Start the local PostgreSQL cluster if nothing answers on 127.0.0.1:5432. Prints only; the store
# tests skip PostgreSQL (or fail under CI=true) when it cannot be reached.
set -u
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
command -v pg_isready >/dev/null 2>&1 || { echo "pg_isready not found; PostgreSQL tests will skip"; exit 0; }
ready && exit 0
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for v in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
  done
fi
for _ in $(seq 1 30); do ready && { echo "PostgreSQL is up"; exit 0; }; sleep 1; done
echo "PostgreSQL did not come up on 127.0.0.1:5432"
exit 0
