"""The admin API token: from TANDEM_API_TOKEN, or kept in a file the daemon makes.

Apart from the HTTP guard (`daemon.apiauth`) so that `tandem resync` reads the token
without loading the HTTP server.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from daemon.configfile import ConfigError
from daemon.settings import Settings


class TokenError(ConfigError):
    """No usable admin API token; the message says what to set."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file(settings: Settings) -> Path:
    if settings.api_token_file is not None:
        return settings.api_token_file
    return settings.state.with_name(settings.state.name + ".api-token")


def resolve_token(settings: Settings, *, create: bool) -> str | None:
    """The admin API token: TANDEM_API_TOKEN, else the token file's first line. With
    `create`, a missing file is made with a new random token (mode 0600)."""
    if settings.api_token is not None:
        return _usable(settings.api_token.get_secret_value(), "TANDEM_API_TOKEN")
    path = token_file(settings)
    try:
        return _usable(path.read_text().strip(), str(path))
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        raise TokenError(f"admin API token file {path}: {exc.strerror}") from None
    if not is_loopback(settings.host) and settings.api_token_file is None:
        raise TokenError(
            f"TANDEM_HTTP_ADDR {settings.http_addr} is not a loopback address: set TANDEM_API_TOKEN"
            " or TANDEM_API_TOKEN_FILE, so that the admin API is never open to the network"
        )
    token = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return resolve_token(settings, create=False)
    except OSError as exc:
        raise TokenError(f"cannot write the admin API token file {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    return token


def _usable(token: str, source: str) -> str:
    if len(token) < 16:
        raise TokenError(f"{source}: the admin API token must be at least 16 characters")
    return token
