"""Fixtures of the API tests: a tiny random grounded-QA model (answers are random but must be
structurally right), settings over a temporary data dir, and a TestClient running the lifespan."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from toydata import make_settings

from api.main import create_app
from common.settings import Settings


@pytest.fixture
def settings(tmp_path, tiny_qa_dir) -> Settings:
    return make_settings(tmp_path / "data", generator=str(tiny_qa_dir), index_save_delay_s=0.2)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def db_client(db_url, tmp_path, tiny_qa_dir):
    """A client over SQLite and, where the server answers, PostgreSQL."""
    s = make_settings(tmp_path / "data", database_url=db_url, generator=str(tiny_qa_dir), index_save_delay_s=0.2)
    with TestClient(create_app(s)) as c:
        yield c
