"""Who may read: an optional bearer token, compared in constant time.

- The token is `$RESNET_STUDY_API_TOKEN`, or the content of a file (`--token-file` / `$RESNET_STUDY_API_TOKEN_FILE`:
  a Kubernetes Secret mounted as a file); one of the two, never both. Without one, the service is open, and `serve`
  listens only on a loopback address unless `--insecure-no-auth` says otherwise.
- With a token, every route but `/healthz` (probes), `/docs` and `/openapi.json` (the schema holds no results) needs
  it: `Authorization: Bearer TOKEN`, or the cookie `resnet_study_token`. A browser opens `/?token=TOKEN` once: the
  dashboard sets the cookie (HttpOnly, SameSite=Strict, Secure over https, 30 days) and redirects to `/`, so its
  figures and links carry it. Anything else is 401 with one line of reason and `WWW-Authenticate: Bearer`.
- The same token (variable or file) is what `resnet-study results table|compare --url` sends.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Mapping, Optional

from fastapi import Depends, HTTPException, Query
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from ..core import StudyError, settings

TOKEN_ENV = settings.API_TOKEN.name
TOKEN_FILE_ENV = settings.API_TOKEN_FILE.name
COOKIE = "resnet_study_token"
COOKIE_MAX_AGE = 30 * 24 * 3600
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750's b64token: safe in a header and in a cookie
MAKE_ONE = "make one with `openssl rand -hex 32`"

BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description=f"`Authorization: Bearer TOKEN`, the token the server was given (${TOKEN_ENV} or "
                                f"${TOKEN_FILE_ENV})")
COOKIE_SCHEME = APIKeyCookie(name=COOKIE, auto_error=False, scheme_name="cookie",
                             description="set by opening `/?token=TOKEN` once in a browser (the dashboard)")
UNAUTHORIZED = {401: {"description": "no token, or a wrong one"}}


def load_token(token_file: Optional[Path] = None, environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The configured token: the content of `token_file` (default `$RESNET_STUDY_API_TOKEN_FILE`), else
    `$RESNET_STUDY_API_TOKEN`; None when neither is set (an empty variable is not set)."""
    token_file = token_file or environ.get(TOKEN_FILE_ENV) or None
    value = environ.get(TOKEN_ENV, "").strip()
    where = TOKEN_ENV
    if token_file:
        if value:
            raise StudyError(f"both {TOKEN_ENV} and a token file ({token_file}) are set; keep one of them")
        where = f"the token file {token_file}"
        try:
            value = Path(token_file).read_text().strip()
        except FileNotFoundError:
            raise StudyError(f"{where} does not exist; create it ({MAKE_ONE}; on Kubernetes: the Secret "
                             f"resnet-study-api-token, see the README) or unset {TOKEN_FILE_ENV}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise StudyError(f"cannot read {where} ({getattr(e, 'strerror', None) or e}); make it readable") from None
        if not value:
            raise StudyError(f"{where} is empty; write a token into it ({MAKE_ONE})")
    if not value:
        return None
    if not TOKEN_CHARS.fullmatch(value):
        raise StudyError(f"{where}: a token holds only letters, digits and -._~+/ (and = at the end); {MAKE_ONE}")
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches only this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def unauthorized(reason: str, invalid: bool = False) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return HTTPException(401, reason, headers={"WWW-Authenticate": challenge})


class Guard:
    """The token check as FastAPI dependencies: `api` for the API routes, `page` for the dashboard (which also takes
    the token once as `?token=`)."""

    def __init__(self, token: str):
        self._token = token.encode()

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def api(self, bearer: Optional[HTTPAuthorizationCredentials] = Depends(BEARER),
            cookie: Optional[str] = Depends(COOKIE_SCHEME)) -> None:
        if bearer is not None:
            if not self.matches(bearer.credentials):
                raise unauthorized("wrong token in the Authorization header", invalid=True)
        elif cookie is not None:
            if not self.matches(cookie):
                raise unauthorized("the token cookie is out of date: open /?token=TOKEN again", invalid=True)
        else:
            raise unauthorized("this service needs a token: send `Authorization: Bearer TOKEN` (a browser: open "
                               "/?token=TOKEN once)")

    def page(self, bearer: Optional[HTTPAuthorizationCredentials] = Depends(BEARER),
             cookie: Optional[str] = Depends(COOKIE_SCHEME),
             token: Optional[str] = Query(None, max_length=1000, description="the token, once: sets the cookie and "
                                                                              "redirects to the dashboard")) -> None:
        if token is None:
            self.api(bearer, cookie)
        elif not self.matches(token):
            raise unauthorized("wrong token in ?token=", invalid=True)
