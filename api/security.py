"""API keys: `Authorization: Bearer KEY`, compared in constant time against every configured key."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vlsearch.api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="An API key from the server's settings (VLSEARCH_API_KEYS).")


def key_matches(given: str, keys: list[str]) -> bool:
    """True when `given` is one of `keys`. Every key is compared, in constant time, so the timing says nothing."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode("utf-8", "surrogatepass"), key.encode("utf-8", "surrogatepass"))
    return found


def _check(request: Request, credentials: HTTPAuthorizationCredentials | None, what: str) -> None:
    keys = [k.get_secret_value() for k in request.app.state.settings.api_keys]
    if not keys:
        raise ApiError(403, f"{what} needs an API key, and this server has none configured: set VLSEARCH_API_KEYS "
                       "(or api_keys in the config file) and restart it", code="no_keys_configured")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, f"{what} needs an API key: send the header `Authorization: Bearer KEY`",
                       headers={"WWW-Authenticate": "Bearer"})
    if not key_matches(credentials.credentials, keys):
        raise ApiError(401, "the API key is not one this server accepts", code="invalid_key",
                       headers={"WWW-Authenticate": "Bearer"})


def require_read(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """Reads are open unless the operator set auth_reads."""
    if request.app.state.settings.auth_reads:
        _check(request, credentials, "this server")


def require_write(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """Indexing and deleting always need a key."""
    _check(request, credentials, "changing the library")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
