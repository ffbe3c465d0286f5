"""A client of a running results service (`resnet-study results table|compare --url URL`): it asks for the JSON
answers and parses them into the same typed rows (results_api/models.py) that a local store gives, so that every
format prints exactly as the local form. Every failure is one line (core.StudyError): a host that does not answer,
a missing or wrong token, a URL that is not a results service."""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

import httpx
import pydantic

from ..core import StudyError
from .auth import TOKEN_ENV, TOKEN_FILE_ENV
from .models import CompareRow, ComparisonTable

TIMEOUT_S = 60.0
COMPARE_ROWS = pydantic.TypeAdapter(list[CompareRow])


class Remote:
    """The service at `url` (e.g. http://localhost:8000, or behind a proxy's path prefix), with an optional token."""

    def __init__(self, url: str, token: Optional[str] = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StudyError(f"--url: give the service's address, e.g. http://localhost:8000 (got {url!r})")
        self.url, self.token = url.rstrip("/"), token

    def comparison(self, dataset: Optional[str], metric: Optional[str], all_columns: bool) -> ComparisonTable:
        return self._get("/tables/comparison", {"dataset": dataset, "metric": metric, "all": all_columns},
                         ComparisonTable.model_validate)

    def comparisons(self, dataset: Optional[str], metric: str) -> list[CompareRow]:
        return self._get("/tables/comparisons", {"dataset": dataset, "metric": metric}, COMPARE_ROWS.validate_python)

    def _get(self, path: str, params: dict, parse):
        where = self.url + path
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.get(where, params={k: v for k, v in params.items() if v not in (None, False)}, headers=headers,
                          timeout=TIMEOUT_S)
        except httpx.HTTPError as e:
            raise StudyError(f"cannot reach {self.url} ({type(e).__name__}: {e or 'no answer'}); is `resnet-study "
                             f"serve` running there?") from None
        if r.status_code == 401:
            if not self.token:
                raise StudyError(f"{self.url} needs a token: put it in {TOKEN_ENV}, or in a file named by "
                                 f"--token-file / {TOKEN_FILE_ENV}")
            raise StudyError(f"{self.url} refused the token ({_detail(r)}): give the service's own token "
                             f"({TOKEN_ENV} or --token-file)")
        if r.status_code in (500, 503) and _detail(r):
            raise StudyError(f"the service at {self.url} answered {r.status_code}: {_detail(r)}")
        if r.status_code != 200:
            raise StudyError(f"{where} answered HTTP {r.status_code}: is {self.url} a resnet-study results service?")
        try:
            return parse(r.json())
        except (ValueError, pydantic.ValidationError):
            raise StudyError(f"{where} did not answer with a resnet-study table: is {self.url} a resnet-study results "
                             f"service (of this version)?") from None


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return detail if isinstance(detail, str) else ""
