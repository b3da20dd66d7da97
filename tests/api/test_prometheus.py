from __future__ import annotations

from toydata import TOY_DOCS, add_toy


def test_metrics_count_route_templates_and_index_sizes(client):
    add_toy(client)
    for _ in range(2):
        client.post("/v1/collections/toy/search", json={"query": "volcano", "mode": "bm25"})
    client.get("/v1/collections/missing")
    text = client.get("/metrics").text
    assert 'attend_http_requests_total{method="POST",route="/v1/collections/{name}/search",status="200"} 2.0' in text
    assert 'route="/v1/collections/{name}",status="404"' in text
    assert "/v1/collections/toy/search" not in text  # templates, not raw paths
    assert 'attend_http_request_duration_seconds_count{method="POST",route="/v1/collections/{name}/search"} 2.0' in text
    assert f'attend_collection_documents{{collection="toy"}} {float(len(TOY_DOCS))}' in text
    assert 'attend_index_bm25_chunks{collection="toy"}' in text and 'attend_index_dense_vectors{collection="toy"}' in text
