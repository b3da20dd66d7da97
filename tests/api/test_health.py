from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from common.settings import Settings


def test_health_and_ready(tmp_path):
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        r = client.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert client.get("/readyz").json() == {"ready": True}
    # after shutdown the app reports not ready
    assert app.state.ready is False
