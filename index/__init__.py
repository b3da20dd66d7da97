"""The index layer: the document store (the source of truth) and the search indexes kept in step
with it. It imports only ``common``.

- ``records``: the values the store takes in and hands out, and their validation;
  ``rows``: the store's tables (SQLAlchemy ORM, private to the store);
- ``store``: :class:`~index.store.Store` (collections, documents, chunks, filters, jobs);
- ``extract``, ``chunking``: text from files, and token-bounded chunks of it;
- ``analyzer``, ``bm25``: terms of a text, and the BM25 index over them;
- ``exact``, ``faiss_runtime``, ``dense``: exact numpy search, FAISS loading and devices, and
  the FAISS index;
- ``topk``: the one brute-force top-k;
- ``collection``: one collection's BM25 and dense indexes, reconciled with the store.
"""
