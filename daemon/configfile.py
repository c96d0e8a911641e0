"""Reading the bindings file as text and TOML, before any validation.

Light on purpose: `tandem status` needs no more than the binding names (and the values
to mask), so it reads them here without the models, the connectors or the environment
every `${VAR}` of the file would need.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.secrets import basic_header
from daemon.envrefs import substitute


class ConfigError(ValueError):
    """The bindings file is unusable; the message names the file and the key."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def binding_names(path: Path, *, environ: Mapping[str, str]) -> tuple[list[str], set[str]]:
    """The names of the file's bindings, and the values of the variables it names that are
    set (to mask); unset variables are no error here."""
    raw = read_toml(path)
    bindings = raw.get("bindings")
    names = (
        [b["name"] for b in bindings if isinstance(b, dict) and isinstance(b.get("name"), str)]
        if isinstance(bindings, list)
        else []
    )
    secrets: set[str] = set()
    filled = substitute(raw, path="", environ=environ, secrets=secrets, lenient=True)
    return names, secrets | literal_credentials(filled)


def literal_credentials(data: Mapping[str, Any]) -> set[str]:
    """The Basic auth passwords the file's connections hold, and the headers they are sent
    as: secrets too, though written in the file rather than taken from the environment."""
    found: set[str] = set()
    connections = data.get("connections")
    for connection in connections.values() if isinstance(connections, dict) else ():
        auth = connection.get("auth") if isinstance(connection, dict) else None
        if isinstance(auth, dict) and isinstance(auth.get("user"), str) and isinstance(auth.get("password"), str):
            found |= {auth["password"], basic_header(auth["user"], auth["password"])}
    return {secret for secret in found if secret}
