"""The `tandem` command.

Exit codes: 0 success; 2 invalid configuration or usage (the message names the file,
the key and what is wrong); 1 a runtime failure. With --json a command prints one
JSON document on stdout and logs on stderr; `tandem run` logs to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from connectors.base import ConfigurationError, ConnectorError
from daemon.apiauth import resolve_token, token_file
from daemon.config import BindingsFile, ConfigError, load_config
from daemon.lifecycle import run_daemon
from daemon.logs import Redactor, configure_logging
from daemon.settings import Settings, SettingsError, load_settings
from daemon.status import binding_status, render_text
from daemon.wiring import wire
from reconcilers.dryrun import dry_run
from reconcilers.migrations import StateError
from reconcilers.resync import ListingLimits
from reconcilers.state import StateStore, open_state

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


class _Failure(Exception):
    """A runtime failure with a message for the operator (exit 1)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description="Two-way sync daemon.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", type=Path, help="bindings file (default: $TANDEM_CONFIG)")
        return p

    command("run", "run the daemon")
    plan = command("plan", "dry run: what `run` would write now; writes nothing")
    plan.add_argument("--binding")
    plan.add_argument("--json", action="store_true")
    status = command("status", "links by state, errors and conflicts per binding")
    status.add_argument("--json", action="store_true")
    command("check", "validate the configuration and reach each connection")
    resync = command("resync", "ask the running daemon for a full resync now")
    resync.add_argument("--binding")
    resync.add_argument("--allow-deletes", action="store_true")
    changelog = command("changelog", "install or remove the app-side change log")
    changelog.add_argument("action", choices=["install", "remove"])
    changelog.add_argument("--binding")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(argv))


def run_cli(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    overrides: dict[str, Any] = {"config": args.config} if args.config else {}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"tandem: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stream = sys.stdout if args.command == "run" else sys.stderr
    configure_logging(level=settings.log_level, fmt=settings.log_format, stream=stream)
    api_token: str | None = None
    try:
        config, secrets = (None, set()) if args.command == "resync" else load_config(settings.config)
        if args.command in ("run", "resync"):
            api_token = resolve_token(settings, create=args.command == "run")
    except ConfigError as exc:
        print(f"tandem: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if api_token is not None:
        secrets = {*secrets, api_token}
    configure_logging(level=settings.log_level, fmt=settings.log_format, stream=stream, secrets=secrets)
    handlers: dict[str, Callable[[], Awaitable[int]]] = {
        "run": lambda: _run(settings, config, secrets, api_token),
        "plan": lambda: _plan(settings, config, binding=args.binding, as_json=as_json),
        "status": lambda: _status(settings, config, as_json=as_json, redactor=Redactor(secrets)),
        "check": lambda: _check(config),
        "resync": lambda: _resync(settings, api_token, binding=args.binding, allow=args.allow_deletes),
        "changelog": lambda: _changelog(config, action=args.action, binding=args.binding),
    }
    try:
        return anyio.run(handlers[args.command])
    except (ConfigError, ConfigurationError) as exc:
        _report(exc, as_json=as_json, command=args.command)
        return EXIT_CONFIG
    except (StateError, ConnectorError, _Failure, OSError) as exc:
        _report(exc, as_json=as_json, command=args.command)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _report(exc: BaseException, *, as_json: bool, command: str) -> None:
    if command == "run":
        log.error("daemon.failed", error=str(exc))
    if as_json:
        print(json.dumps({"error": str(exc)}))
    print(f"tandem: {exc}", file=sys.stderr)


def _need(config: BindingsFile | None) -> BindingsFile:
    assert config is not None
    return config


async def _run(settings: Settings, config: BindingsFile | None, secrets: set[str], api_token: str | None) -> int:
    assert api_token is not None
    await run_daemon(settings, _need(config), redactor=Redactor(secrets), api_token=api_token)
    return EXIT_OK


async def _open_state_for_reading(stack: AsyncExitStack, path: Path) -> StateStore:
    """The state read-only; an absent state reads as empty (in memory, nothing written)."""
    if await anyio.Path(path).exists():
        return await stack.enter_async_context(open_state(path, read_only=True))
    return await stack.enter_async_context(open_state(":memory:"))


async def _plan(settings: Settings, config: BindingsFile | None, *, binding: str | None, as_json: bool) -> int:
    config = _need(config)
    if binding is not None:
        config.binding(binding)  # names an unknown binding with a clear error
    results = []
    async with AsyncExitStack() as stack:
        store = await _open_state_for_reading(stack, settings.state)
        wired = await stack.enter_async_context(wire(config, only=binding))
        for item in wired.bindings:
            await wired.app_tables[item.name].check()
            limits = ListingLimits(seconds=settings.listing_timeout, records=settings.listing_max_records)
            results.append(await dry_run(item, store, limits=limits))
    if as_json:
        print(json.dumps({"bindings": [r.as_json() for r in results]}, default=str))
        return EXIT_OK
    for result in results:
        print(f"{result.binding}: {len(result.writes)} writes planned")
        for write in result.writes:
            fields = json.dumps(write.get("fields", {}), default=str, ensure_ascii=False)
            print(
                f"  {write.get('op')} {write.get('side', '')} app={write.get('app_id')}"
                f" external={write.get('external_id')} {fields}"
            )
        for parked in result.parked:
            print(f"  would park app={parked['app_id']} external={parked['external_id']}: {parked['error']}")
        if result.deletes_blocked:
            print(f"  {result.deletes_blocked} deletions held back by the mass-delete guard")
        if not result.complete:
            print("  a listing was incomplete: no deletions inferred")
    return EXIT_OK


async def _status(settings: Settings, config: BindingsFile | None, *, as_json: bool, redactor: Redactor) -> int:
    config = _need(config)
    async with AsyncExitStack() as stack:
        store = await _open_state_for_reading(stack, settings.state)
        # Stored errors quote what an API answered, which could echo a credential.
        statuses = [redactor.clean(await binding_status(store, b.name)) for b in config.bindings]
    if as_json:
        print(json.dumps({"bindings": statuses}, default=str))
    else:
        print(render_text(statuses))
    return EXIT_OK


async def _check(config: BindingsFile | None) -> int:
    config = _need(config)
    async with wire(config) as wired:
        for name, connection in wired.connections.items():
            await connection.check()
            print(f"connection {name}: ok")
        for binding in wired.bindings:
            await binding.app.check()
            await binding.external.check()
            print(f"binding {binding.name}: ok")
    return EXIT_OK


async def _resync(settings: Settings, api_token: str | None, *, binding: str | None, allow: bool) -> int:
    base = f"http://{settings.http_addr}"
    if api_token is None:
        raise _Failure(
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
        raise _Failure(f"cannot reach tandem at {settings.http_addr}: {type(exc).__name__}") from exc
    return EXIT_OK


def _refused_token(response: httpx.Response, settings: Settings) -> None:
    if response.status_code == 401:
        raise _Failure(f"tandem at {settings.http_addr} refused the admin API token (TANDEM_API_TOKEN)")


async def _changelog(config: BindingsFile | None, *, action: str, binding: str | None) -> int:
    config = _need(config)
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


if __name__ == "__main__":
    main()
