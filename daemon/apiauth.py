"""Who may use the HTTP surface: a token for the admin API, the right Host, no cross-site.

The admin API (`/api/...`) reads links and errors and changes links and resyncs, so it
asks for `Authorization: Bearer <TANDEM_API_TOKEN>`, compared in constant time. Without a
configured token the daemon makes one at start and keeps it, readable by its own user
only, in the token file (`TANDEM_API_TOKEN_FILE`, beside the state database by default),
where `tandem resync` finds it. A non-loopback address needs a token set on purpose.

Two browser attacks reach a loopback daemon without any token: a page the operator
visits posting a cross-site "simple" request, and DNS rebinding (a page whose name now
resolves to 127.0.0.1, sending `Host: evil.example`). Every request, on every route, is
refused when its `Host` is not a name of the configured address, or its `Origin` or
`Sec-Fetch-Site` says it comes from another site. `/healthz`, `/readyz`, `/metrics` and
the HMAC-checked webhooks need no token.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from daemon.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class Access:
    token: str
    hosts: frozenset[str] | None
    """Host names a request may name; None: any (bound to every address, token required)."""

    @classmethod
    def for_settings(cls, settings: Settings, token: str) -> Access:
        host = settings.host.lower()
        extra = {name.strip().lower() for name in settings.http_hosts.split(",") if name.strip()}
        if _unspecified(host) and not extra:
            return cls(token, None)
        return cls(token, frozenset({host, *LOOPBACK_NAMES, *extra}))


def _unspecified(host: str) -> bool:
    """Whether `host` means every address of the machine (`0.0.0.0`, `::`)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """`example:8787` → `example`, `[::1]:8787` → `::1`."""
    return (urlsplit(f"//{value}").hostname or "").lower()


class AccessGuard:
    """ASGI middleware that applies `Access` before any route sees the request."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem, status = self._refusal(scope)
        if problem is not None:
            await JSONResponse({"error": problem}, status_code=status)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[str | None, int]:
        headers = Headers(scope=scope)
        hosts = self.access.hosts
        if hosts is not None and _host_name(headers.get("host", "")) not in hosts:
            return "Host is not an address of this tandem (set TANDEM_HTTP_HOSTS to allow more names)", 421
        origin = headers.get("origin")
        foreign_origin = origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
        if foreign_origin or headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "cross-site requests are refused", 403
        path: str = scope["path"]
        if path == "/api" or path.startswith("/api/"):
            given = headers.get("authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), self.access.token.encode()
            ):
                return "the admin API needs Authorization: Bearer <TANDEM_API_TOKEN>", 401
        return None, 200
