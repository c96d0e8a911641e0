"""`${NAME}` in the bindings file: a value taken from the environment, usually a secret.

`$$` is a literal `$`, and a `$` before anything else is left as it is. A `${` that does
not make a reference (`${ 1X }`, `${NAME` unclosed) is an error, never kept as text: a
header sent as `Bearer ${ TOKEN}` would fail at every request with no clue why. So is a
variable set to the empty string, which would send an empty credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\$|\$\{([^{}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnfilledReference(ValueError):
    """A `${...}` that cannot be filled; the message names the key, never a value."""


def substitute(value: Any, *, path: str, environ: Mapping[str, str], secrets: set[str], lenient: bool = False) -> Any:
    """Replace `${NAME}` in every string with the environment's value; each value used is
    added to `secrets`, so that it can be masked wherever text is shown. `lenient` leaves
    what cannot be filled as it is, for a reader that only wants the secrets it can know."""
    if isinstance(value, dict):
        return {
            k: substitute(v, path=f"{path}.{k}" if path else k, environ=environ, secrets=secrets, lenient=lenient)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            substitute(v, path=f"{path}[{i}]", environ=environ, secrets=secrets, lenient=lenient)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def replace(found: re.Match[str]) -> str:
        text, name = found.group(0), found.group(1)
        if text == "$$":
            return "$"
        if lenient and not environ.get(name or ""):
            return text
        if name is None or not _NAME.fullmatch(name):
            shown = text if name is not None and len(text) <= 40 else "${"
            raise UnfilledReference(
                f"{path}: {shown!r} is not a reference: write ${{NAME}} (letters, digits and _,"
                " not starting with a digit), or $$ for a literal $"
            )
        if name not in environ:
            raise UnfilledReference(f"{path}: environment variable {name} is not set")
        if not environ[name]:
            raise UnfilledReference(f"{path}: environment variable {name} is set but empty")
        secrets.add(environ[name])
        return environ[name]

    return _REFERENCE.sub(replace, value)
