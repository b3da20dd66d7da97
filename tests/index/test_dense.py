"""The FAISS dense index against its numpy brute-force twin: exact flat search, HNSW recall,
filters, removal and tombstones, replacement, persistence, and the GPU path where there is one."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InvalidInput, MissingDependency, NotFound
from index.dense import DenseIndex
from index.exact import BruteForceIndex, exact_search
from index.faiss_runtime import gpu_available

DIM = 48


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    # Small indexes build faster on one thread than with OpenMP threads fighting over busy cores.
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _unit(rng, n, dim=DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 2000)
    ids = rng.permutation(10**6)[:2000].astype(np.int64)  # sparse, unordered primary keys
    queries = _unit(rng, 40)
    return ids, vectors, queries


def _pair(kind, metric, ids, vectors, **kw):
    dense = DenseIndex(DIM, metric=metric, kind=kind, device="cpu", **kw)
    dense.add(ids, vectors)
    brute = BruteForceIndex(DIM, metric=metric)
    brute.add(ids, vectors)
    return dense, brute


def _assert_exact(got, want):
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def _recall(got_ids: np.ndarray, want_ids: np.ndarray) -> float:
    hits = sum(len(set(g[g >= 0]) & set(w[w >= 0])) for g, w in zip(got_ids, want_ids, strict=True))
    return hits / max(1, int((want_ids >= 0).sum()))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_equals_brute_force(data, metric):
    ids, vectors, queries = data
    dense, brute = _pair("flat", metric, ids, vectors)
    assert len(dense) == len(brute) == len(ids)
    got = dense.search(queries, 10)
    assert got[0].shape == got[1].shape == (len(queries), 10)
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    _assert_exact(got, brute.search(queries, 10))
    _assert_exact(
        dense.search(queries[0], 3), brute.search(queries[:1], 3)
    )  # a single (dim,) query


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_hnsw_recall(data, metric):
    ids, vectors, queries = data
    dense, brute = _pair("hnsw", metric, ids, vectors)
    got, want = dense.search(queries, 10), brute.search(queries, 10)
    assert _recall(got[1], want[1]) >= 0.95
    # whatever it returns carries the true score of that id
    lookup = dict(zip(ids.tolist(), vectors, strict=True))
    for r, (row_s, row_i) in enumerate(zip(*got, strict=True)):
        true = [
            float(queries[r] @ lookup[i])
            if metric == "ip"
            else float(((queries[r] - lookup[i]) ** 2).sum())
            for i in row_i
        ]
        np.testing.assert_allclose(row_s, true, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filters(data, kind):
    ids, vectors, queries = data
    dense, brute = _pair(kind, "ip", ids, vectors)
    rng = np.random.default_rng(1)
    small = set(rng.choice(ids, 25, replace=False).tolist()) | {123456789}  # plus an absent id
    _assert_exact(
        dense.search(queries, 10, allowed_ids=small), brute.search(queries, 10, allowed_ids=small)
    )
    # fewer allowed ids than k: padded with -1 and -inf
    few = ids[:3]
    s, i = dense.search(queries, 5, allowed_ids=few)
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    assert set(i[:, :3].ravel().tolist()) == set(few.tolist())
    assert (dense.search(queries, 5, allowed_ids=[])[1] == -1).all()
    # a large filter goes through FAISS's IDSelectorBatch
    large = rng.choice(ids, 1000, replace=False)
    dense.exact_filter_max = 100
    got, want = (
        dense.search(queries, 10, allowed_ids=large),
        brute.search(queries, 10, allowed_ids=large),
    )
    assert np.isin(got[1][got[1] >= 0], large).all()
    if kind == "flat":
        _assert_exact(got, want)
    elif kind == "hnsw":
        assert _recall(got[1], want[1]) >= 0.9


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_remove_and_readd(data, kind):
    ids, vectors, queries = data
    dense, brute = _pair(kind, "ip", ids, vectors, rebuild_ratio=0.5)
    victims = ids[:200]
    assert dense.remove(np.concatenate([victims, [987654321]])) == 200 == brute.remove(victims)
    assert len(dense) == len(ids) - 200
    np.testing.assert_array_equal(dense.ids(), brute.ids())
    got = dense.search(queries, 10)
    assert not np.isin(got[1], victims).any()
    # re-adding replaces the vector: each re-added id now answers its own new direction exactly
    rng = np.random.default_rng(2)
    readd, fresh = ids[300:310], _unit(rng, 10)
    dense.add(readd, fresh)
    brute.add(readd, fresh)
    assert len(dense) == len(ids) - 200
    s, i = dense.search(fresh, 1)
    np.testing.assert_array_equal(i[:, 0], readd)
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)
    if kind == "flat":
        _assert_exact(dense.search(queries, 10), brute.search(queries, 10))
    if kind == "hnsw":
        assert dense.tombstones == 210  # tombstones, not yet over the rebuild threshold
        dense.remove(ids[400:1400])  # crosses it (1210 > 0.5 * 2010): rebuilt from the live vectors
        brute.remove(ids[400:1400])
        assert dense.tombstones == 0 and len(dense) == len(brute)
        assert _recall(dense.search(queries, 10)[1], brute.search(queries, 10)[1]) >= 0.95


def test_auto_switches_to_hnsw_past_threshold(data):
    ids, vectors, queries = data
    dense = DenseIndex(DIM, kind="auto", device="cpu", auto_hnsw_threshold=1500)
    dense.add(ids[:1000], vectors[:1000])
    assert dense.active_kind == "flat"
    dense.add(ids[1000:], vectors[1000:])
    assert dense.active_kind == "hnsw" and len(dense) == len(ids)
    brute = BruteForceIndex(DIM)
    brute.add(ids, vectors)
    assert _recall(dense.search(queries, 10)[1], brute.search(queries, 10)[1]) >= 0.95


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(tmp_path, data, kind):
    ids, vectors, queries = data
    dense, _ = _pair(kind, "l2", ids, vectors, ef_search=77)
    dense.remove(ids[:10])
    path = dense.save(tmp_path / "sub" / "dense.faiss")
    assert [p.name for p in path.parent.iterdir()] == ["dense.faiss"]  # no temporary left behind
    loaded = DenseIndex.load(path, device="cpu", kind="auto" if kind != "ivf" else None)
    assert loaded.kind == ("auto" if kind != "ivf" else "ivf")
    assert (loaded.active_kind, loaded.metric, loaded.dim, len(loaded)) == (
        kind,
        "l2",
        DIM,
        len(dense),
    )
    if kind == "hnsw":
        assert loaded.ef_search == 77 and loaded.tombstones == 10
    for got, want in zip(loaded.search(queries, 10), dense.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    loaded.add(ids[:1], vectors[:1])
    assert len(loaded) == len(dense) + 1
    with pytest.raises(NotFound):
        DenseIndex.load(tmp_path / "missing.faiss")
    with pytest.raises(InvalidInput):
        DenseIndex.load(path, kind="ivf" if kind != "ivf" else "flat")


def test_empty_and_bad_input():
    dense = DenseIndex(4, kind="flat", device="cpu")
    s, i = dense.search(np.ones((2, 4), np.float32), 3)
    assert (i == -1).all() and np.isneginf(s).all()
    with pytest.raises(InvalidInput):
        dense.add([1, 2], np.ones((1, 4)))
    with pytest.raises(InvalidInput):
        dense.add([1, 1], np.ones((2, 4)))
    with pytest.raises(InvalidInput):
        dense.add([-1], np.ones((1, 4)))
    with pytest.raises(InvalidInput):
        dense.add([1], np.ones((1, 5)))
    with pytest.raises(InvalidInput):
        dense.add([1], np.full((1, 4), np.nan))
    with pytest.raises(InvalidInput):
        dense.search(np.ones(4), 0)
    with pytest.raises(ValueError):
        DenseIndex(4, metric="cosine")
    with pytest.raises(ValueError):
        DenseIndex(4, kind="lsh")
    assert dense.remove([5]) == 0
    brute = BruteForceIndex(4, metric="l2")
    s, i = brute.search(np.ones(4), 2)
    assert (i == -1).all() and np.isposinf(s).all()


def test_exact_search_breaks_ties_by_id():
    vectors = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
    s, i = exact_search(np.array([[1, 0]], np.float32), vectors, np.array([9, 4, 1, 6]), 2, "ip")
    assert i.tolist() == [[4, 6]] and s.tolist() == [[1.0, 1.0]]


@pytest.mark.skipif(gpu_available(), reason="a GPU is available")
def test_cuda_without_gpu_faiss_raises_missing_dependency():
    with pytest.raises(MissingDependency, match="faiss-gpu"):
        DenseIndex(DIM, device="cuda")
    assert DenseIndex(DIM, device="auto").device == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs faiss with GPU support and a GPU")
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_gpu_flat_equals_brute_force(tmp_path, data, metric):
    ids, vectors, queries = data
    dense = DenseIndex(DIM, metric=metric, kind="flat", device="cuda")
    dense.add(ids, vectors)
    brute = BruteForceIndex(DIM, metric=metric)
    brute.add(ids, vectors)
    _assert_exact(dense.search(queries, 10), brute.search(queries, 10))
    allowed = ids[::7]
    _assert_exact(
        dense.search(queries, 10, allowed_ids=allowed),
        brute.search(queries, 10, allowed_ids=allowed),
    )
    dense.remove(ids[:100])
    brute.remove(ids[:100])
    _assert_exact(dense.search(queries, 10), brute.search(queries, 10))
    loaded = DenseIndex.load(dense.save(tmp_path / "gpu.faiss"), device="cuda")
    _assert_exact(loaded.search(queries, 10), brute.search(queries, 10))
