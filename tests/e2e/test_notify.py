"""Notifications to the app: signed, retried while the receiver is down, kept across restarts."""

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.webhooks import sign
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import seed, serving

pytestmark = pytest.mark.anyio

NOTIFY_SECRET = "notify-secret-e2e-42"


class Receiver:
    """The app's notification endpoint: records what arrives, can be switched off."""

    def __init__(self) -> None:
        self.down = True
        self.attempts = 0
        self.events: list[dict[str, Any]] = []

    async def receive(self, request: Request) -> Response:
        self.attempts += 1
        if self.down:
            return JSONResponse({"error": "down for maintenance"}, status_code=503)
        body = await request.body()
        assert request.headers["X-Tandem-Signature"] == sign(NOTIFY_SECRET, body)
        event = json.loads(body)
        assert request.headers["X-Tandem-Event-Id"] == event["id"]
        self.events.append(event)
        return Response(status_code=204)


def outbox_depth(state: Path) -> int:
    with sqlite3.connect(state) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def test_events_survive_a_receiver_outage_and_a_restart(tmp_path, external, app_db: AppDb):
    receiver = Receiver()
    async with serving(Starlette(routes=[Route("/events", receiver.receive, methods=["POST"])])) as url:
        notify = f'notify = {{ url = "{url}/events", secret = "${{NOTIFY_SECRET}}" }}'
        config = bindings_toml(external).replace(
            'app = { connection = "app", table = "tasks", id = "id" }',
            f'app = {{ connection = "app", table = "tasks", id = "id", {notify} }}',
        )
        (tmp_path / "tandem.toml").write_text(config)
        daemon = Daemon(tmp_path, env={"NOTIFY_SECRET": NOTIFY_SECRET})
        try:
            (record,) = await seed(external, "tasks", [{"title": "from outside", "completed": True}])
            await daemon.start()

            async def tried() -> bool:
                return receiver.attempts >= 1 and len(app_db.rows()) == 1

            await eventually(tried, what="a delivery attempt against the receiver that is down")
            assert daemon.stop() == 0
            assert outbox_depth(tmp_path / "state.db") == 1  # kept for the next start

            receiver.down = False
            await daemon.start()

            async def delivered() -> bool:
                return len(receiver.events) == 1

            await eventually(delivered, what="delivery after the restart")
            (event,) = receiver.events
            assert event["type"] == "record.created"
            assert event["binding"] == "tasks"
            assert event["external_id"] == str(record["id"])
            assert event["app_id"] == str(app_db.rows()[0]["id"])
            assert event["fields"]["title"] == "from outside"

            async def emptied() -> bool:  # the receiver's answer arrives after it recorded the event
                return outbox_depth(tmp_path / "state.db") == 0

            await eventually(emptied, what="the delivered event leaving the outbox")
            assert NOTIFY_SECRET not in daemon.log_text()
            assert daemon.stop() == 0
        finally:
            daemon.kill()
