"""Test hooks loaded into the real Kinto server (`kinto.includes`), never into tandem.

Two things a client cannot do to Kinto over its API, and the tests need:
- `POST /__test__/purge?parent=/buckets/b/collections/c` purges that collection's
  tombstones, as an operator's `kinto purge_deleted` does;
- `GET /__test__/requests` lists every API request served so far (method, path and
  query parameter names), so tests can count what tandem asked for.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.security import NO_PERMISSION_REQUIRED

SEEN: list[dict[str, Any]] = []


def _counting_tween(handler: Any, registry: Any) -> Any:
    def tween(request: Request) -> Any:
        if "__test__" not in request.path:
            SEEN.append({"method": request.method, "path": request.path, "params": sorted(request.GET.keys())})
        return handler(request)

    return tween


def purge(request: Request) -> dict[str, int]:
    parent = request.GET["parent"]
    removed = request.registry.storage.purge_deleted(resource_name="record", parent_id=parent)
    return {"purged": removed}


def requests(request: Request) -> list[dict[str, Any]]:
    return SEEN


def includeme(config: Configurator) -> None:
    config.add_tween("kinto_test_hooks._counting_tween")
    config.add_route("test_purge", "/__test__/purge")
    config.add_view(
        purge, route_name="test_purge", request_method="POST", renderer="json", permission=NO_PERMISSION_REQUIRED
    )
    config.add_route("test_requests", "/__test__/requests")
    config.add_view(
        requests, route_name="test_requests", request_method="GET", renderer="json", permission=NO_PERMISSION_REQUIRED
    )
