"""The HTTP surface: health, readiness, metrics, binding status, resync and the link API."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import uvicorn
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from connectors.base import RecordId
from daemon.jsonbody import load_json
from daemon.logs import Redactor
from daemon.metrics import Metrics
from daemon.status import binding_status, link_json
from daemon.webhooks import WebhookIntake
from reconcilers.controller import Controller
from reconcilers.model import Link, LinkState, Side
from reconcilers.state import LinkTaken, StateStore

TRUE = {"1", "true", "yes", "on"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(
    *,
    controllers: Mapping[str, Controller],
    store: StateStore,
    metrics: Metrics,
    redactor: Redactor,
    webhooks: WebhookIntake,
) -> Starlette:
    """The routes. Link and status answers pass through `redactor`: a stored error quotes
    what an API answered, which could echo a credential."""

    def controller_of(request: Request) -> Controller | None:
        return controllers.get(request.path_params["name"])

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        waiting = [name for name, c in controllers.items() if not c.started]
        if waiting:
            return JSONResponse({"status": "starting", "waiting": waiting}, status_code=503)
        stalled = {name: c.listing_fault for name, c in controllers.items() if c.listing_fault}
        if stalled:  # every resync meets it until the API or the bindings file changes
            return JSONResponse(redactor.clean({"status": "listing stalled", "bindings": stalled}), status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def bindings(request: Request) -> Response:
        result = []
        for name, controller in controllers.items():
            status = await binding_status(store, name)
            status["queue_depth"] = len(controller.queue)
            result.append(status)
        return JSONResponse(redactor.clean({"bindings": result}))

    async def resync(request: Request) -> Response:
        controller = controller_of(request)
        if controller is None:
            return _error(404, "no such binding")
        allow = request.query_params.get("allow_deletes", "").lower() in TRUE
        controller.request_resync(allow_deletes=allow)
        return JSONResponse({"binding": controller.name, "allow_deletes": allow}, status_code=202)

    async def find_link(request: Request) -> tuple[Controller, Link] | Response:
        controller = controller_of(request)
        if controller is None:
            return _error(404, "no such binding")
        side, record_id = _id_param(request.query_params)
        if side is None or record_id is None:
            return _error(400, "give app_id or external_id")
        link = await store.link_for(controller.name, side, record_id)
        if link is None:
            return _error(404, "no link")
        return controller, link

    async def get_link(request: Request) -> Response:
        found = await find_link(request)
        if isinstance(found, Response):
            return found
        return JSONResponse(redactor.clean(link_json(found[1])))

    async def put_link(request: Request) -> Response:
        controller = controller_of(request)
        if controller is None:
            return _error(404, "no such binding")
        try:
            body: Any = load_json(await request.body())
        except ValueError as exc:
            return _error(400, f"body must be JSON: {exc}")
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str | int) and body.get(k) != "" for k in ("app_id", "external_id")
        ):
            return _error(400, 'body must be {"app_id": ..., "external_id": ...}')
        app_id, ext_id = RecordId(str(body["app_id"])), RecordId(str(body["external_id"]))
        for side, record_id in ((Side.APP, app_id), (Side.EXTERNAL, ext_id)):
            existing = await store.link_for(controller.name, side, record_id)
            if existing is None:
                continue
            half_parked = existing.state is LinkState.ERROR and (
                existing.app_id is None or existing.external_id is None
            )
            if not half_parked:
                return _error(409, f"{side.value} id {record_id} is already linked")
            await store.drop(existing.row)  # a parked record without a twin: pair it now
        try:
            await store.insert_link(
                controller.name, app_id=app_id, external_id=ext_id, state=LinkState.SYNCED,
                now=time.time(),
            )  # fmt: skip
        except LinkTaken:
            return _error(409, "already linked")
        controller.enqueue((Side.APP, app_id))
        link = await store.link_for(controller.name, Side.APP, app_id)
        assert link is not None
        return JSONResponse(link_json(link), status_code=201)

    async def delete_link(request: Request) -> Response:
        found = await find_link(request)
        if isinstance(found, Response):
            return found
        await store.drop(found[1].row)
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_page),
            Route("/api/bindings", bindings),
            Route("/webhooks/{name}", webhooks.external, methods=["POST"]),
            Route("/webhooks/{name}/app", webhooks.app, methods=["POST"]),
            Route("/api/bindings/{name}/resync", resync, methods=["POST"]),
            Route("/api/bindings/{name}/links", get_link, methods=["GET"]),
            Route("/api/bindings/{name}/links", put_link, methods=["PUT"]),
            Route("/api/bindings/{name}/links", delete_link, methods=["DELETE"]),
        ]
    )


def _id_param(params: Mapping[str, str]) -> tuple[Side | None, RecordId | None]:
    if params.get("app_id"):
        return Side.APP, RecordId(params["app_id"])
    if params.get("external_id"):
        return Side.EXTERNAL, RecordId(params["external_id"])
    return None, None


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    def capture_signals(self) -> Any:
        return nullcontext()


async def serve(app: ASGIApp, sock: socket.socket, *, task_status: TaskStatus[uvicorn.Server]) -> None:
    """Serve on an already bound socket; hands back the server (set should_exit to stop)."""
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5)
    server = _Server(config)
    task_status.started(server)
    await server.serve(sockets=[sock])
