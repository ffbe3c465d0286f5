"""The read side answers from its cache (results_api/cache.py): an ETag per (generation, path, query), 304 for a
matching If-None-Match, the token checked before a kept answer goes out, a new generation seen at once with new
content and a new tag; and the byte bound evicts. Over a real `resnet-study serve` on 127.0.0.1 and the store
written by 0.1.0 (tests/fixtures/); about 4 s in all, most of it the server's start."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from resnet_study.core import store
from resnet_study.core.records import RunRecord
from resnet_study.results_api import cache, figures
from resnet_study.results_api.app import create_app
from tests.helpers import Server

TOKEN = "cache-test-token-5b1e07"


def test_an_etag_is_answered_304_and_a_new_generation_gives_new_content(old_store):
    srv = Server(old_store, token=TOKEN)
    try:
        first = srv.get("/tables/comparison", params={"format": "markdown", "dataset": "fashion-mnist"})
        tag = first.headers["etag"]
        assert first.status_code == 200 and first.headers["cache-control"] == "private, no-cache"
        again = srv.get("/tables/comparison?dataset=fashion-mnist&format=markdown",  # the parameters' order: same
                        headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
        assert srv.get("/tables/comparison", headers={"If-None-Match": f'W/{tag}, "other"'}).status_code == 200
        assert srv.get("/tables/comparison?format=csv").headers["etag"] != tag  # another query, another tag

        anonymous = httpx.get(f"{srv.base}/tables/comparison?format=markdown&dataset=fashion-mnist",
                              headers={"If-None-Match": tag})
        assert anonymous.status_code == 401 and "etag" not in anonymous.headers  # the token before the cache
        assert httpx.get(f"{srv.base}/figures/accuracy.svg").status_code == 401

        runs = srv.get("/runs?format=csv")
        assert srv.get("/runs?format=csv", headers={"If-None-Match": runs.headers["etag"]}).status_code == 304
        store.write_shard(store.results_location(old_store), RunRecord(run_id="zz-new-run", status="running", n=4, layers=26), [], [])
        # On a disk the reader looks at CURRENT before every request: the new generation is seen at once.
        fresh = srv.get("/runs?format=csv", headers={"If-None-Match": runs.headers["etag"]})
        assert fresh.status_code == 200 and fresh.headers["etag"] != runs.headers["etag"]
        assert "zz-new-run" in fresh.text and "zz-new-run" not in runs.text
        assert srv.get("/tables/comparison?format=markdown&dataset=fashion-mnist",
                       headers={"If-None-Match": tag}).headers["etag"] != tag
    finally:
        srv.stop()


def entry(size: int, tag: str = '"t"') -> cache.Entry:
    return cache.Entry(b"x" * (size - cache.ENTRY_OVERHEAD), "text/plain", tag)


def test_the_byte_bound_evicts_the_least_recently_used():
    kept = cache.ResponseCache(max_bytes=3000)
    g1, g2 = (1, 100), (2, 200)
    assert kept.get((g1, "/a", ())) is None  # the first generation seen
    for name in "abc":
        kept.put((g1, f"/{name}", ()), entry(1000))
    assert len(kept) == 3 and kept.bytes == 3000
    assert kept.get((g1, "/a", ())) is not None  # /a used: /b is now the least recently used
    kept.put((g1, "/d", ()), entry(1000))
    assert kept.get((g1, "/b", ())) is None and kept.get((g1, "/a", ())) is not None and kept.bytes == 3000
    kept.put((g1, "/huge", ()), entry(3001))  # larger than the bound: not kept, nothing evicted for it
    assert kept.get((g1, "/huge", ())) is None and len(kept) == 3
    assert kept.get((g2, "/a", ())) is None and len(kept) == 0 and kept.bytes == 0  # a new generation
    kept.put((g1, "/late", ()), entry(1000))  # computed at g1 but finished after g2 was seen: not kept
    assert len(kept) == 0


def test_an_app_with_a_small_cache_draws_again_what_it_evicted(old_store, monkeypatch):
    drawn = []
    real = figures.render
    monkeypatch.setattr(figures, "render", lambda *a, **k: drawn.append(a[0]) or real(*a, **k))
    bound = 80_000  # one SVG of the old store fits (about 50 kB each), not two
    with TestClient(create_app(store.results_location(old_store), cache_bytes=bound)) as client:
        first = client.get("/figures/accuracy.svg")
        assert client.get("/figures/accuracy.svg").content == first.content and drawn == ["accuracy"]
        second = client.get("/figures/error-curves.svg")  # evicts accuracy
        assert max(len(first.content), len(second.content)) + cache.ENTRY_OVERHEAD <= bound
        assert len(first.content) + len(second.content) + 2 * cache.ENTRY_OVERHEAD > bound
        client.get("/figures/accuracy.svg")
        assert drawn == ["accuracy", "error-curves", "accuracy"]
