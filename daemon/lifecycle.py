"""`tandem run`: one root task group that owns every task of the process.

Start-up opens the state, the connections and the change logs, binds the HTTP port,
then starts each binding. The first SIGTERM or SIGINT stops intake, lets in-flight
reconciles finish within TANDEM_SHUTDOWN_TIMEOUT, stops the HTTP server and closes
the state; a second signal cancels at once.
"""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack

import anyio
import structlog
import uvicorn

from daemon.apiauth import Access, AccessGuard
from daemon.config import BindingsFile
from daemon.heap import tune_collector
from daemon.http import build_app, serve
from daemon.listen import bind
from daemon.logs import Redactor
from daemon.metrics import Metrics
from daemon.notify import Notifier
from daemon.runspecs import notify_specs, timing_for, webhook_specs
from daemon.settings import Settings
from daemon.statelock import state_lock
from daemon.systemd import announce_ready, notify
from daemon.webhooks import WebhookIntake
from daemon.wiring import wire
from reconcilers.controller import Controller
from reconcilers.state import open_state

log = structlog.get_logger(__name__)

STATE_LOCK_WAIT = 10.0
"""How long start-up waits for the state lock: a previous instance may still be stopping."""


async def _watch_signals(stopping: anyio.Event, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for received in signals:
            if received == signal.SIGHUP:
                # No reload: a changed binding changes what the links mean, so the bindings
                # file is read at start only. SIGHUP must not kill the daemon either.
                log.warning("daemon.sighup_ignored", hint="restart tandem to apply a changed bindings file")
                continue
            if stopping.is_set():
                log.warning("daemon.forced_stop", signal=received.name)
                scope.cancel()
                return
            log.info("daemon.stopping", signal=received.name)
            notify("STOPPING=1")
            stopping.set()


async def run_daemon(settings: Settings, config: BindingsFile, *, redactor: Redactor, api_token: str) -> None:
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(state_lock(settings.state, wait=STATE_LOCK_WAIT))
        store = await stack.enter_async_context(open_state(settings.state))
        wired = await stack.enter_async_context(
            wire(config, observer=metrics.observe_request, concurrency=settings.workers)
        )
        for binding in wired.bindings:
            table = wired.app_tables[binding.name]
            await table.check()
            await table.install_changelog()
        notifiers = {
            name: Notifier(name, spec, store, delivered=metrics.notifications, depth=metrics.outbox_depth)
            for name, spec in notify_specs(config).items()
        }
        controllers = {
            binding.name: Controller(
                binding,
                store,
                metrics.sync,
                timing=timing_for(settings, config, binding.name),
                outbox=notifiers[binding.name].wake if binding.name in notifiers else None,
            )
            for binding in wired.bindings
        }
        sock = bind(settings.http_addr, settings.host, settings.port)
        stack.callback(sock.close)
        intake = WebhookIntake(controllers, webhook_specs(config), metrics.registry)
        routes = build_app(controllers=controllers, store=store, metrics=metrics, redactor=redactor, webhooks=intake)
        app = AccessGuard(routes, Access.for_settings(settings, api_token))
        stopping = anyio.Event()
        signals, watchdog = anyio.CancelScope(), anyio.CancelScope()
        async with anyio.create_task_group() as root:

            async def watch_signals() -> None:
                with signals:
                    await _watch_signals(stopping, root.cancel_scope)

            root.start_soon(watch_signals)
            server: uvicorn.Server = await root.start(serve, app, sock)
            log.info(
                "daemon.started", http_addr=settings.http_addr, bindings=list(controllers),
                state=str(settings.state),
            )  # fmt: skip
            tune_collector()

            async def tell_systemd() -> None:
                with watchdog:
                    await announce_ready(lambda: all(c.started for c in controllers.values()))

            root.start_soon(tell_systemd)
            async with anyio.create_task_group() as bindings:
                for controller in controllers.values():
                    bindings.start_soon(
                        _run_binding, controller, notifiers.get(controller.name), stopping,
                        settings.shutdown_timeout,
                        name=f"binding:{controller.name}",
                    )  # fmt: skip
            server.should_exit = True  # the HTTP server drains and returns
            signals.cancel()
            watchdog.cancel()
    log.info("daemon.stopped")


async def _run_binding(
    controller: Controller, notifier: Notifier | None, stopping: anyio.Event, timeout: float
) -> None:
    """A binding's controller and its outbox delivery; what is undelivered at shutdown
    stays in the outbox for the next start."""
    async with anyio.create_task_group() as tg:
        if notifier is not None:
            tg.start_soon(notifier.run, name=f"notify:{controller.name}")
        await controller.run(stopping=stopping, shutdown_timeout=timeout)
        tg.cancel_scope.cancel()
