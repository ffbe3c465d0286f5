"""Answers from memory. A snapshot generation never changes (core.store), so a response is a function of
(generation, path, query): each 200 is kept in a byte-bounded LRU and sent with an ETag naming that generation and
query, and a request whose If-None-Match names it gets 304 without a body.

- The token is checked first: `lookup` is a dependency that app.py puts after the guard, so a kept answer reaches
  only a caller who may read it; a redirect or anything that sets a cookie is never kept.
- A new generation is seen as soon as the store's reader sees it (StoreReader: on a disk before every request, in a
  bucket at most every REMOTE_CHECK_S): the key changes, and the answers of the older generation are dropped.
- One request reads one generation (queries.Store.pinned), so what is kept under a generation came from it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from .routes.common import StoreDep

CACHE_BYTES = 64 * 2**20  # of bodies; the service's pod may use 2 GiB (k8s/results-api.yaml)
ENTRY_OVERHEAD = 512  # bytes counted per entry beyond its body: the key, the headers, the bookkeeping


@dataclass(frozen=True)
class Entry:
    body: bytes
    media_type: str
    etag: str

    @property
    def size(self) -> int:
        return len(self.body) + ENTRY_OVERHEAD


class ResponseCache:
    """Response bodies by (generation, path, query), least recently used out first once `max_bytes` is passed; only
    the newest generation's are kept. Hand-written: cachetools is not installed here, and functools.lru_cache bounds
    entries, not bytes."""

    def __init__(self, max_bytes: int = CACHE_BYTES, private: bool = False):
        self.max_bytes, self.bytes = max_bytes, 0
        # Nothing here is public or fresh for long: a proxy may keep a token-guarded answer for no one else, and
        # every client asks again (304 when nothing changed) since a new generation may come at any moment.
        self.cache_control = "private, no-cache" if private else "no-cache"
        self._items: OrderedDict[tuple, Entry] = OrderedDict()
        self._version: tuple | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple) -> Entry | None:
        with self._lock:
            if key[0] != self._version:  # a new generation: nobody asks for the old answers again
                self._items.clear()
                self._version, self.bytes = key[0], 0
                return None
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: Entry) -> None:
        with self._lock:
            if key[0] != self._version or entry.size > self.max_bytes or key in self._items:
                return  # a generation superseded while this answer was computed, or too big to keep
            self._items[key] = entry
            self.bytes += entry.size
            while self.bytes > self.max_bytes:
                _, gone = self._items.popitem(last=False)
                self.bytes -= gone.size

    def answer(self, request: Request, entry: Entry) -> Response:
        """`entry` as a 200, or a 304 when the request's If-None-Match names it."""
        headers = {"ETag": entry.etag, "Cache-Control": self.cache_control}
        if matches(request.headers.get("if-none-match"), entry.etag):
            return Response(status_code=304, headers=headers)
        return Response(entry.body, media_type=entry.media_type, headers=headers)


def request_key(version: tuple, request: Request) -> tuple:
    """(generation, path, query). Parameters are sorted by name only: the order of repeated ones is kept (a
    parameter given twice takes its last value)."""
    query = tuple(sorted(request.query_params.multi_items(), key=lambda kv: kv[0]))
    return version, request.url.path, query


def etag(key: tuple) -> str:
    (generation, published), path, query = key
    digest = hashlib.blake2b(repr((path, query)).encode(), digest_size=8).hexdigest()
    return f'"g{generation}.{published:x}.{digest}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 §13.1.2: a weak comparison against a list of tags, or `*`."""
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or tag in tags


class Answered(Exception):
    """Raised by `lookup` to answer from the cache; CachedRoute sends its response."""

    def __init__(self, response: Response):
        self.response = response


def get_cache(request: Request) -> ResponseCache:
    return request.app.state.responses


async def lookup(request: Request, db: StoreDep) -> None:
    """A dependency, after the token check: answer a request already answered at this generation (304 when the
    client holds it too), else note the key under which CachedRoute keeps the new answer."""
    cache = get_cache(request)
    request.state.cache_key = key = request_key(db.version, request)
    entry = cache.get(key)
    if entry is not None:
        raise Answered(cache.answer(request, entry))


class CachedRoute(APIRoute):
    """A route whose 200s are kept (under the key `lookup` noted) and sent with their ETag."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except Answered as hit:
                return hit.response
            key = getattr(request.state, "cache_key", None)
            if key is None or response.status_code != 200 or "set-cookie" in response.headers:
                return response
            cache = get_cache(request)
            entry = Entry(bytes(response.body), response.headers["content-type"], etag(key))
            cache.put(key, entry)
            return cache.answer(request, entry)

        return route
