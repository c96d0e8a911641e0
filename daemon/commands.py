"""What each `tandem` command does, importing only what that command needs.

`run`, `plan`, `check` and `changelog` load and validate the whole bindings file;
`status` reads the binding names and the state database only, so it works without the
environment the connections need; `resync` needs the admin API token alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from daemon.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from daemon.configfile import ConfigError
from daemon.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from daemon.config import BindingsFile
    from reconcilers.dryrun import DryRun
    from reconcilers.state import StateStore


class Failure(Exception):
    """A runtime failure with a message for the operator (exit 1)."""


def run_command(args: argparse.Namespace) -> int:
    as_json: bool = getattr(args, "json", False)
    overrides: dict[str, Any] = {"config": args.config} if args.config else {}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"tandem: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from daemon.logs import configure_logging

    stream = sys.stdout if args.command == "run" else sys.stderr
    configure_logging(level=settings.log_level, fmt=settings.log_format, stream=stream)
    config: BindingsFile | None = None
    api_token: str | None = None
    names: list[str] = []
    try:
        if args.command == "status":
            from daemon.configfile import binding_names

            names, secrets = binding_names(settings.config, environ=os.environ)
        elif args.command == "resync":
            secrets = set()
        else:
            from daemon.config import load_config

            config, secrets = load_config(settings.config)
        if args.command in ("run", "resync"):
            from daemon.apitoken import resolve_token

            api_token = resolve_token(settings, create=args.command == "run")
    except ConfigError as exc:
        print(f"tandem: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if api_token is not None:
        secrets = {*secrets, api_token}
    configure_logging(level=settings.log_level, fmt=settings.log_format, stream=stream, secrets=secrets)
    handlers: dict[str, Callable[[], Awaitable[int]]] = {
        "run": lambda: _run(settings, _need(config), secrets, api_token),
        "plan": lambda: _plan(settings, _need(config), binding=args.binding, as_json=as_json),
        "status": lambda: _status(settings, names, secrets, as_json=as_json),
        "check": lambda: _check(_need(config)),
        "resync": lambda: _resync(settings, api_token, binding=args.binding, allow=args.allow_deletes),
        "changelog": lambda: _changelog(_need(config), action=args.action, binding=args.binding),
    }
    try:
        return anyio.run(handlers[args.command])
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        _report(exc, as_json=as_json, command=args.command)
        return code


def _exit_code(exc: BaseException) -> int | None:
    """2 for a configuration fault, 1 for a failure the operator can act on, None: a bug."""
    from connectors.base import ConfigurationError, ConnectorError
    from daemon.listen import AddressInUse
    from reconcilers.migrations import StateError

    if isinstance(exc, ConfigError | ConfigurationError):
        return EXIT_CONFIG
    if isinstance(exc, StateError | ConnectorError | Failure | AddressInUse | OSError):
        return EXIT_FAILURE
    return None


def _report(exc: BaseException, *, as_json: bool, command: str) -> None:
    if command == "run":
        import structlog

        structlog.get_logger(__name__).error("daemon.failed", error=str(exc))
    if as_json:
        print(json.dumps({"error": str(exc)}))
    print(f"tandem: {exc}", file=sys.stderr)


def _need(config: BindingsFile | None) -> BindingsFile:
    assert config is not None
    return config


async def _run(settings: Settings, config: BindingsFile, secrets: set[str], api_token: str | None) -> int:
    from daemon.lifecycle import run_daemon
    from daemon.logs import Redactor

    assert api_token is not None
    await run_daemon(settings, config, redactor=Redactor(secrets), api_token=api_token)
    return EXIT_OK


async def _open_state_for_reading(stack: AsyncExitStack, path: Path) -> StateStore:
    """The state read-only; an absent state reads as empty (in memory, nothing written)."""
    from reconcilers.state import open_state

    if await anyio.Path(path).exists():
        return await stack.enter_async_context(open_state(path, read_only=True))
    return await stack.enter_async_context(open_state(":memory:"))


async def _plan(settings: Settings, config: BindingsFile, *, binding: str | None, as_json: bool) -> int:
    from daemon.planview import render_plan
    from daemon.wiring import wire
    from reconcilers.dryrun import dry_run
    from reconcilers.resync import ListingLimits

    if binding is not None:
        config.binding(binding)  # names an unknown binding with a clear error
    results: list[DryRun] = []
    async with AsyncExitStack() as stack:
        store = await _open_state_for_reading(stack, settings.state)
        wired = await stack.enter_async_context(wire(config, only=binding))
        for item in wired.bindings:
            await wired.app_tables[item.name].check()
            limits = ListingLimits(seconds=settings.listing_timeout, records=settings.listing_max_records)
            results.append(await dry_run(item, store, limits=limits))
    if as_json:
        print(json.dumps({"bindings": [r.as_json() for r in results]}, default=str))
    else:
        print(render_plan(results))
    return EXIT_OK


async def _status(settings: Settings, names: list[str], secrets: set[str], *, as_json: bool) -> int:
    from daemon.logs import Redactor
    from daemon.status import binding_status, render_text

    redactor = Redactor(secrets)
    async with AsyncExitStack() as stack:
        store = await _open_state_for_reading(stack, settings.state)
        # Stored errors quote what an API answered, which could echo a credential.
        statuses = [redactor.clean(await binding_status(store, name)) for name in names]
    if as_json:
        print(json.dumps({"bindings": statuses}, default=str))
    else:
        print(render_text(statuses))
    return EXIT_OK


async def _check(config: BindingsFile) -> int:
    """Every connection and every binding's two sides, each said ok or what is wrong
    (the binding, the side and the server's own reason); one failure does not hide the rest."""
    from connectors.base import ConfigurationError, ConnectorError
    from daemon.wiring import wire

    worst = EXIT_OK

    async def attempt(what: str, check: Callable[[], Awaitable[None]]) -> bool:
        nonlocal worst
        try:
            await check()
        except ConnectorError as exc:
            code = EXIT_CONFIG if isinstance(exc, ConfigurationError) else EXIT_FAILURE
            worst = max(worst, code)
            print(f"tandem: {what}: {exc}", file=sys.stderr)
            return False
        return True

    async with wire(config) as wired:
        for name, connection in wired.connections.items():
            if await attempt(f"connection {name}", connection.check):
                print(f"connection {name}: ok")
        for binding in wired.bindings:
            app = await attempt(f"binding {binding.name}: app side {binding.app.label}", binding.app.check)
            ext = await attempt(
                f"binding {binding.name}: external side {binding.external.label}", binding.external.check
            )
            if app and ext:
                print(f"binding {binding.name}: ok")
    return worst


async def _resync(settings: Settings, api_token: str | None, *, binding: str | None, allow: bool) -> int:
    import httpx

    from daemon.apitoken import token_file

    base = f"http://{settings.http_addr}"
    if api_token is None:
        raise Failure(
            f"no admin API token: set TANDEM_API_TOKEN, or run where {token_file(settings)} (written by"
            " `tandem run`) can be read"
        )
    headers = {"Authorization": f"Bearer {api_token}"}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as client:
            if binding is None:
                listing = await client.get("/api/bindings")
                _refused_token(listing, settings)
                names = [b["name"] for b in listing.json()["bindings"]]
            else:
                names = [binding]
            for name in names:
                params = {"allow_deletes": "true"} if allow else {}
                response = await client.post(f"/api/bindings/{name}/resync", params=params)
                if response.status_code == 404:
                    raise ConfigError(f"no binding named {name!r} in the running daemon")
                _refused_token(response, settings)
                response.raise_for_status()
                print(f"resync requested: {name}" + (" (deletes allowed)" if allow else ""))
    except httpx.HTTPError as exc:
        raise Failure(f"cannot reach tandem at {settings.http_addr}: {type(exc).__name__}") from exc
    return EXIT_OK


def _refused_token(response: Any, settings: Settings) -> None:
    if response.status_code == 401:
        raise Failure(f"tandem at {settings.http_addr} refused the admin API token (TANDEM_API_TOKEN)")


async def _changelog(config: BindingsFile, *, action: str, binding: str | None) -> int:
    from daemon.wiring import wire

    if binding is not None:
        config.binding(binding)
    async with wire(config, only=binding) as wired:
        for item in wired.bindings:
            table = wired.app_tables[item.name]
            if action == "install":
                await table.check()
                await table.install_changelog()
            else:
                await table.remove_changelog()
            print(f"change log {'installed' if action == 'install' else 'removed'}: {table.label}")
    return EXIT_OK
