"""Process settings, read once from TANDEM_* environment variables into a frozen object.

Nothing reads the environment at import time; `load_settings()` is called by the CLI
and the result passed down. A bad value is reported with the variable's name. pydantic
validates; the variables are gathered here (names case-insensitive, as environments
from other tools may spell them), which spares every short command the import of a
settings framework it would use for that alone.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 365 * 86400.0
"""A year: anything longer is a typo for "never", which no timer, timeout or window means."""


class SettingsError(ValueError):
    """An environment variable holds a value tandem cannot use."""


def parse_duration(value: object) -> float:
    """Seconds from `2.5`, `250ms`, `30s`, `5m` or `1h`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if not found:
            raise ValueError(f"not a duration: {value!r} (seconds, or a number with ms, s, m or h)")
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if math.isnan(seconds):
        raise ValueError("not a duration: NaN")
    if seconds <= 0:
        raise ValueError("must be more than zero")
    if seconds > MAX_DURATION:
        raise ValueError("must be at most a year (365 days); tandem has no duration meaning never")
    return seconds


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


def _lower(value: object) -> object:
    return value.strip().lower() or None if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]


PREFIX = "TANDEM_"


class Settings(BaseModel):
    """The daemon's settings; each field is the TANDEM_ variable of the same name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: Path = Path("tandem.toml")
    """The bindings file (TOML)."""
    state: Path = Path("tandem-state.db")
    """The state database (SQLite): links, cursors, conflicts, write intents."""
    http_addr: Annotated[str, AfterValidator(_host_port)] = "127.0.0.1:8787"
    """host:port the HTTP server (metrics, health, admin API) listens on."""
    http_hosts: str = ""
    """More host names requests may name in `Host` (comma-separated), beyond the address's own."""
    api_token: SecretStr | None = None
    """The admin API's bearer token; unset: read from (or made in) `api_token_file`."""
    api_token_file: Path | None = None
    """Where the admin API token is kept; unset: beside the state database (`<state>.api-token`)."""
    workers: Annotated[int, Field(ge=1, le=256)] = 8
    """Concurrent reconciles per binding."""
    poll_interval: Duration = 5.0
    """Seconds between polls of external change feeds (each poll costs API requests)."""
    app_poll_interval: Duration = 0.2
    """Seconds between reads of the app's change log (cheap: an indexed read)."""
    resync_interval: Duration = 300.0
    """Seconds between full resyncs."""
    shutdown_timeout: Duration = 20.0
    """Seconds to finish in-flight reconciles after SIGTERM."""
    reconcile_timeout: Duration = 60.0
    """Seconds one reconcile may take before it is abandoned and retried."""
    listing_timeout: Duration = 3600.0
    """Seconds one side's listing may take in a resync; past it the listing is incomplete."""
    listing_max_records: Annotated[int, Field(ge=1)] = 10_000_000
    """Records one side's listing may hold; past it the listing is incomplete (a runaway)."""
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    log_format: Annotated[Literal["json", "console"] | None, BeforeValidator(_lower)] = None
    """`json` or `console`; unset means console on a terminal and JSON elsewhere."""

    @property
    def host(self) -> str:
        return self.http_addr.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.http_addr.rpartition(":")[2])


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and explicit overrides, e.g. --config)."""
    given: dict[str, object] = {}
    for key, value in os.environ.items():
        name = key.upper().removeprefix(PREFIX).lower()
        if key.upper().startswith(PREFIX) and name in Settings.model_fields:
            given[name] = value
    try:
        return Settings.model_validate({**given, **overrides})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = PREFIX + str(error["loc"][0]).upper() if error["loc"] else PREFIX + "*"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("; ".join(problems)) from None
