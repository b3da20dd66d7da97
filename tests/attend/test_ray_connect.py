"""``engine.distributed.cluster.connect``: joining a cluster by address sends the token where one
is at hand, and an address that cannot be joined is a clear error. Ray itself is faked: these
checks need no cluster."""

from __future__ import annotations

import types

import pytest

from engine.distributed import cluster


class FakeRay(types.SimpleNamespace):
    def __init__(self, fail: bool = False) -> None:
        super().__init__(calls=[], fail=fail)

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if self.fail:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    enabled: list[bool] = []
    monkeypatch.setattr(cluster, "_enable_token_auth", lambda: enabled.append(True))

    def make(fail: bool = False) -> FakeRay:
        ray = FakeRay(fail)
        monkeypatch.setattr(cluster, "import_ray", lambda: ray)
        return ray

    return make, enabled, tmp_path


def test_joining_by_address_sends_the_token_when_one_is_at_hand(fake, monkeypatch):
    make, enabled, home = fake
    ray = make()
    cluster.connect("10.0.0.9:6379")
    assert ray.calls[0]["address"] == "10.0.0.9:6379" and enabled == []  # no token anywhere: left to Ray
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("x" * 64)
    for address, switched in ((None, False), ("auto", False), ("10.0.0.9:6379", True)):
        enabled.clear()
        cluster.connect(address)
        assert enabled == ([True] if switched else []), address
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice wins
    enabled.clear()
    cluster.connect("10.0.0.9:6379")
    assert enabled == []


def test_an_address_that_cannot_be_joined_is_a_clear_error(fake):
    make, _, _ = fake
    make(fail=True)
    with pytest.raises(cluster.ClusterUnreachable, match=r"cannot join the Ray cluster at '10\.0\.0\.9:6379'.*token"):
        cluster.connect("10.0.0.9:6379")
