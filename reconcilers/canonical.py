"""Canonical values: one form per meaning, so a representation difference is never a change.

SQLite stores a boolean as 0/1 and JSON as text; an API sends `true` and objects; one
side writes `2026-01-02T03:04:05Z`, the other `2026-01-02 03:04:05+00:00`. Every
value is reduced to a canonical JSON-compatible form before the merge compares it.
"""

from __future__ import annotations

import enum
import json
import json.encoder as json_encoder
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

Canon = Any
"""A canonical value: None, bool, int, float, str, list or dict (JSON-compatible)."""


class FieldType(enum.StrEnum):
    AUTO = "auto"
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    JSON = "json"
    DATETIME = "datetime"


class CoercionError(ValueError):
    """A value cannot be read as its field's declared type."""


_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0", ""})


def canonical(value: Any, kind: FieldType) -> Canon:
    """The canonical form of `value` read as `kind`; None stays None."""
    return None if value is None else COERCIONS[kind](value)


def _auto(value: Any) -> Canon:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict | list):
        return _as_json(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise CoercionError(f"unsupported value of type {type(value).__name__}")


def _number(value: float) -> int | float:
    if not math.isfinite(value):
        raise CoercionError(f"not a finite number: {value!r}")
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(_number(float(value)) if isinstance(value, float) else value)
    if isinstance(value, dict | list):
        return canonical_json(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise CoercionError(f"cannot read {type(value).__name__} as str")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if math.isfinite(number) and number.is_integer():
                return int(number)
    raise CoercionError(f"not an integer: {value!r:.80}")


def _as_float(value: Any) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return _number(float(value)) if isinstance(value, float) else value
    if isinstance(value, str):
        try:
            return _number(float(value.strip()))
        except ValueError:
            pass
    raise CoercionError(f"not a number: {value!r:.80}")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise CoercionError(f"not a boolean: {value!r:.80}")


def _as_json(value: Any) -> Canon:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise CoercionError(f"not JSON: {value!r:.80}") from exc
    try:
        # A round trip sorts keys and turns tuples into lists; floats stay floats.
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CoercionError(f"not JSON-serialisable: {type(value).__name__}") from exc


def _as_datetime(value: Any) -> str:
    if isinstance(value, bool):
        raise CoercionError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        try:
            moment = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise CoercionError(f"not a timestamp: {value!r}") from exc
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise CoercionError(f"not an ISO 8601 timestamp: {value!r:.80}") from exc
    elif isinstance(value, datetime):
        moment = value
    else:
        raise CoercionError(f"not a timestamp: {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive timestamps are read as UTC
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


COERCIONS: dict[FieldType, Callable[[Any], Canon]] = {
    FieldType.AUTO: _auto,
    FieldType.STR: _as_str,
    FieldType.INT: _as_int,
    FieldType.FLOAT: _as_float,
    FieldType.BOOL: _as_bool,
    FieldType.JSON: _as_json,
    FieldType.DATETIME: _as_datetime,
}
"""Each type's reading of a value that is not None."""

_SETTINGS = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}
_encoder = json.JSONEncoder(**_SETTINGS)  # type: ignore[arg-type]
# `json.dumps` builds an encoder, and its C scanner, on every call: a third of the cost
# of a short value. The same C encoder, built once with the same settings, writes the
# same text. No circular check: canonical values are trees.
_make_encoder: Callable[..., Callable[[Any, int], Iterable[str]]] | None = getattr(json_encoder, "c_make_encoder", None)
_encode_c = (
    _make_encoder(None, _encoder.default, json_encoder.encode_basestring, None, ":", ",", True, False, True)
    if _make_encoder is not None
    else None
)


def canonical_json(value: Canon) -> str:
    """`value` as JSON text with sorted keys, no spaces and no escaping of non-ASCII
    characters: `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`."""
    if _encode_c is None:
        return _encoder.encode(value)
    return "".join(_encode_c(value, 0))


def fingerprint(values: dict[str, Canon]) -> str:
    """A stable text form of a set of canonical values (for storage and hashing)."""
    return canonical_json(values)
