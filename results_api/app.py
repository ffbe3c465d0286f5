"""The read-only results service: JSON / CSV / Markdown / HTML tables, figures and a dashboard over the store.

    resnet-study serve --results-dir results --host 127.0.0.1 --port 8000
    RESNET_STUDY_RESULTS=results python -m uvicorn --factory resnet_study.results_api.app:create_app_from_env
    curl -s localhost:8000/tables/comparison?format=markdown

Read-only by construction: only GET routes exist (anything else is 405), the store is opened read-only through
core.store.StoreReader and never synced from here, request values reach SQL only as bound parameters, column names
come from the store's schema, figure names from a fixed set (anything else is 404). Bad parameters are 422 with a
message. Every answer is kept per (generation, path, query) and carries an ETag; If-None-Match gets 304
(results_api/cache.py): a repeated request costs a dict lookup, and a new snapshot from a running job makes a new key.

The routes are in results_api/routes/ (one APIRouter per concern over one store dependency), the optional bearer
token in results_api/auth.py. Every answer carries an X-Request-ID; an unexpected exception is logged with its
traceback and that id and answered 500 with it; only a store that cannot be read is 503.
"""

from __future__ import annotations

import copy
import logging
import re
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from ..core import StudyError, store
from ..core.store import require_results, results_location
from ..core.storage import Storage
from . import auth, cache, queries
from .routes import dashboard, figures, health, runs, tables

LOG = logging.getLogger("resnet_study.results_api")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a caller's X-Request-ID (a proxy's) is kept when it is this


def create_app(results: Storage, token: Optional[str] = None,
               cache_bytes: int = cache.CACHE_BYTES) -> FastAPI:
    """The service over the store `results` (resolved by the caller: store.results_location); with `token`, every route but /healthz needs it (results_api/auth.py). Answers
    are kept per generation, `cache_bytes` of them at most (results_api/cache.py)."""
    app = FastAPI(title="resnet-study results", version="1", description=__doc__.split("\n\n")[0])
    app.state.store = queries.Store(results)
    app.state.responses = cache.ResponseCache(cache_bytes, private=token is not None)
    app.state.token_required = token is not None
    guard = auth.Guard(token) if token is not None else None
    answer_from_cache = Depends(cache.lookup)  # after the guard: the token is checked before a kept answer goes out
    api = {"dependencies": [Depends(guard.api), answer_from_cache], "responses": auth.UNAUTHORIZED} if guard else \
        {"dependencies": [answer_from_cache]}
    page = {"dependencies": [Depends(guard.page), answer_from_cache],
            "responses": {303: {"description": "`?token=` was right: the cookie is set, on to the dashboard"},
                          **auth.UNAUTHORIZED}} if guard else {"dependencies": [answer_from_cache]}
    app.include_router(health.router, dependencies=[answer_from_cache])
    for router in (runs.router, tables.router, figures.router):
        app.include_router(router, **api)
    app.include_router(dashboard.router, **page)
    _answer_every_error(app)
    return app


def _answer_every_error(app: FastAPI) -> None:
    """Every request gets an id (X-Request-ID) and one log line (a passing probe's at DEBUG); an exception nobody
    expected is logged with its traceback and answered 500 with that id; a store that cannot be read is 503."""

    @app.exception_handler(queries.StoreUnavailable)
    async def unavailable(request: Request, exc: queries.StoreUnavailable) -> JSONResponse:
        rid = request.state.request_id
        LOG.warning("request %s: %s %s: results store unavailable: %s", rid, request.method, _loggable(request), exc)
        return JSONResponse({"detail": f"results store unavailable; the server's log has the reason (request id "
                                       f"{rid})", "request_id": rid}, status_code=503)

    @app.middleware("http")
    async def request_id_and_errors(request: Request, call_next):
        rid = request.headers.get("x-request-id", "")
        request.state.request_id = rid = rid if REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            LOG.exception("request %s: %s %s failed", rid, request.method, _loggable(request))
            response = JSONResponse({"detail": f"internal error; the server's log has its traceback (request id "
                                               f"{rid})", "request_id": rid}, status_code=500)
        response.headers["X-Request-ID"] = rid
        probe = request.url.path == "/healthz" and response.status_code == 200  # every 10 s from each probe
        LOG.log(logging.DEBUG if probe else logging.INFO, "%s %s %d %.0f ms request_id=%s", request.method,
                _loggable(request), response.status_code, 1000 * (time.perf_counter() - start), rid)
        return response


TOKEN_PARAM = re.compile(r"(^|&)token=[^&]*")


def _loggable(request: Request) -> str:
    """The path and query as sent (still percent-encoded: a request cannot write a line of its own into the log),
    the token of `?token=` masked."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = TOKEN_PARAM.sub(r"\1token=***", request.scope.get("query_string", b"").decode("latin-1"))
    text = path.decode("latin-1") + (f"?{query}" if query else "")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def create_app_from_env() -> FastAPI:
    """The app over $RESNET_STUDY_RESULTS (default ./results), with the token of $RESNET_STUDY_API_TOKEN or
    $RESNET_STUDY_API_TOKEN_FILE if set: for `uvicorn --factory`."""
    return create_app(results_location(), auth.load_token())


def _check_port_free(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise StudyError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port or --host") from None


def log_config() -> dict:
    """uvicorn's logging setup, plus this package's logger (one line per request, errors with their traceback) on
    uvicorn's handler and format."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][LOG.name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(results_dir: "Path | str | None", host: str, port: int, token_file: Optional[Path] = None,
          insecure_no_auth: bool = False) -> None:
    """Check the dir, the token and the port (one-line errors), then serve until interrupted."""
    import uvicorn

    results_dir = require_results(results_dir)
    if not results_dir.is_local:
        store.has_snapshot(results_dir)  # a missing bucket or rejected credentials: one line now, not per request
    if not 0 < port < 65536:
        raise StudyError(f"--port: use 1-65535 (got {port})")
    token = auth.load_token(token_file)
    if token is None and not insecure_no_auth and not auth.is_loopback(host):
        raise StudyError(f"refusing to serve every run without a token on {host}, which other machines can reach: set "
                         f"{auth.TOKEN_ENV} (or --token-file), or pass --insecure-no-auth to serve it open")
    _check_port_free(host, port)
    who = "a bearer token is required" if token else "no token: open to anyone who can reach it"
    print(f"serving {results_dir} read-only at http://{host}:{port}/ (API docs at /docs; {who})", file=sys.stderr)
    uvicorn.run(create_app(results_dir, token), host=host, port=port, log_level="warning", access_log=False,
                log_config=log_config())
