"""GET /: the dashboard, plain server-rendered HTML (table, findings, figures, the latest runs). With a token, a
browser opens `/?token=TOKEN` once: the answer sets the token cookie and redirects here (results_api/auth.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import figures, queries, tables
from ..auth import COOKIE, COOKIE_MAX_AGE
from ..cache import CachedRoute
from .common import TEMPLATES, StoreDep

DASHBOARD_RUNS = 50

router = APIRouter(route_class=CachedRoute)


@router.get("/", response_class=HTMLResponse, summary="the dashboard: table, figures, runs")
def dashboard(request: Request, db: StoreDep):
    token = request.query_params.get("token")
    if token is not None and request.app.state.token_required:  # the guard has checked it
        # Relative, so that it also holds behind a proxy that serves the app under a path prefix.
        answer = RedirectResponse("./", status_code=303)
        answer.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, path="/", httponly=True, samesite="strict",
                          secure=request.url.scheme == "https")
        return answer
    plain = queries.has_plain_runs(db)
    figs = [name for name in figures.FIGURES if name != "plain-vs-resnet" or plain]
    page = TEMPLATES.get_template("dashboard.html").render(
        title="resnet-study results", results_dir=str(db.results), total_runs=queries.count_runs(db),
        status_counts=queries.status_counts(db), table=tables.html_context(queries.comparison(db)),
        findings=queries.findings(db), runs=queries.recent_runs(db, DASHBOARD_RUNS),
        figures=[{"name": n, "alt": figures.FIGURES[n]} for n in figs])
    return HTMLResponse(page)
